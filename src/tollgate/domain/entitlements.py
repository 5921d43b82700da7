"""The entitlement decision: what a customer may do, from catalog, status, usage and credits.

Pure: the caller passes the customer's state and the time. Which plan's features apply:
- trialing, active and canceling (until the period ends): the subscribed plan;
- past_due: the subscribed plan for a grace period, then the plan's reduced access (the plan
  named by its `reduced_access`, else the default plan); the dunning policy, per failed
  attempt, may instead keep full access or downgrade to the default plan at once;
- incomplete while its first bank debit processes: the subscribed plan if
  TOLLGATE_PROCESSING_ACCESS is keep, else (wait) the default plan until the debit settles;
- unpaid, canceled, incomplete, incomplete_expired, paused and none: the default plan.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Protocol

from tollgate.domain.catalog import Aggregation, Catalog, FeatureType, Plan, PlanFeature
from tollgate.domain.deals import Deals, plan_with_deals
from tollgate.domain.metering import Period, capped_limit, overage_spend, percent_used
from tollgate.domain.wording import UnitName, count_text, overage_rate_text
from tollgate.money import format_minor
from tollgate_client.decisions import Code, Decision

FULL_ACCESS_STATUSES = frozenset({"trialing", "active", "canceling"})


class Access(StrEnum):
    """How much of the subscribed plan a customer gets."""

    FULL = "full"  # the subscribed plan
    REDUCED = "reduced"  # the plan's reduced access (payment overdue past the grace period)
    DEFAULT = "default"  # the default plan


@dataclass(frozen=True, slots=True)
class CustomerState:
    """What the decision depends on, read from the mirror and the counters."""

    customer_id: str
    plan: str | None  # the subscribed (or assigned, or default) plan
    status: str  # Tollgate's status: Stripe's, canceling, or none
    period: Period
    interval: str | None = None  # month | year; None for calendar months
    currency: str = "usd"
    usage: Mapping[str, int] = field(default_factory=dict)  # metered feature -> aggregate
    seats: int | None = None
    past_due_since: datetime | None = None
    dunning_access: str | None = None  # set by the dunning policy: full | reduced | default
    # While a bank debit processes: full (TOLLGATE_PROCESSING_ACCESS=keep) | default (wait);
    # `awaiting` while a first invoice paid by bank transfer waits for its money (with wait).
    processing_access: str | None = None
    credit_balance: int = 0
    credit_allowance: int = 0
    held: Mapping[str, int] = field(default_factory=dict)  # metered feature -> units reserved
    # The version of `plan` the subscription's price belongs to (issue 20; None: the newest).
    plan_version: int | None = None
    spend_cap: int | None = None  # the most overage may cost this period (minor units)
    # The customer's own overrides and this period's usage grants (issue 20).
    deals: Deals | None = None
    # `reduced` while a dispute of theirs is open or lost (TOLLGATE_DISPUTE_ACCESS=reduce).
    dispute_access: str | None = None


@dataclass(frozen=True, slots=True)
class FeatureEntitlement:
    """What the customer has of one feature now."""

    feature: str
    name: str
    type: FeatureType
    enabled: bool
    limit: int | None  # the most that may be used (None = no cap)
    used: int | None  # this period's usage (metered), the seat count (seats), else None
    remaining: int | None  # limit - used for capped features; included left for soft ones
    hard: bool
    included: int | None = None
    overage: bool = False  # usage past `included` is billed
    percent: float | None = None
    credits_per_unit: int | None = None
    held: int = 0  # units reservations hold (metered): not used yet, but not available either
    capped: bool = False  # a soft limit made hard by the customer's spend cap

    def to_json(self) -> dict[str, object]:
        return {
            "type": self.type.value,
            "enabled": self.enabled,
            "limit": self.limit,
            "used": self.used,
            "held": self.held,
            "remaining": self.remaining,
            "hard": self.hard,
            "included": self.included,
            "overage": self.overage,
            "percent": self.percent,
        }


@dataclass(frozen=True)
class Entitlements:
    """Every feature a customer has, and until when that holds if nothing else changes."""

    customer_id: str
    plan: str | None  # the subscribed plan
    access_plan: str | None  # the plan whose features apply
    status: str
    access: Access
    period: Period
    features: dict[str, FeatureEntitlement]
    valid_until: datetime
    state: CustomerState
    catalog: Catalog

    def decide(self, feature_id: str, quantity: int = 1, *, in_use: int | None = None) -> Decision:
        """Return whether `quantity` more of the feature may be used now (see `decide`)."""
        return decide(self, feature_id, quantity, in_use=in_use)

    def to_json(self) -> dict[str, object]:
        return {
            "customer": self.customer_id,
            "plan": self.plan,
            "plan_version": self.state.plan_version,  # issue 20: a grandfathered version
            "access_plan": self.access_plan,
            "status": self.status,
            "access": self.access.value,
            # Issue 20: the customer's own deal, if it has one (overrides, grants, add-ons).
            "overrides": sorted(
                o.feature for o in (self.state.deals.overrides if self.state.deals else ())
            ),
            "period_start": self.period.start.isoformat(),
            "period_end": self.period.end.isoformat(),
            "features": {key: value.to_json() for key, value in self.features.items()},
        }


def access_of(
    state: CustomerState, grace: timedelta, now: datetime
) -> tuple[Access, datetime | None]:
    """Return how much of its plan the customer gets, and when time alone changes that."""
    access, until = _status_access(state, grace, now)
    if access == Access.FULL and state.dispute_access == Access.REDUCED:
        return Access.REDUCED, None  # a dispute holds it back whatever the status
    return access, until


AWAITING_TRANSFER = "awaiting"
"""The hold of a subscription whose first invoice, paid by bank transfer, is not paid yet while
TOLLGATE_PROCESSING_ACCESS=wait: the default plan, though Stripe calls the subscription active
(a `send_invoice` subscription is active from the start)."""


def _status_access(
    state: CustomerState, grace: timedelta, now: datetime
) -> tuple[Access, datetime | None]:
    if state.processing_access == AWAITING_TRANSFER:
        return Access.DEFAULT, None
    if state.status in FULL_ACCESS_STATUSES:
        return Access.FULL, None
    if state.status == "incomplete" and state.processing_access == Access.FULL:
        return Access.FULL, None
    if state.status == "past_due":
        # The dunning policy's levels: keep (full), reduce after the grace period (reduced,
        # also the rule without a policy), downgrade to the default plan (default).
        if state.dunning_access in (Access.FULL, Access.DEFAULT):
            return Access(state.dunning_access), None
        if state.past_due_since is None:
            return Access.FULL, None
        grace_end = state.past_due_since + grace
        if now < grace_end:
            return Access.FULL, grace_end
        return Access.REDUCED, None
    return Access.DEFAULT, None


def access_plan(catalog: Catalog, state: CustomerState, access: Access) -> Plan | None:
    """Return the plan whose features the customer gets at this access."""
    subscribed = catalog.plans.get(state.plan) if state.plan else None
    if access is Access.FULL and subscribed is not None:
        return subscribed
    if access is Access.REDUCED and subscribed is not None and subscribed.reduced_access:
        return catalog.plans.get(subscribed.reduced_access)
    if catalog.default_plan is None:
        return None
    return catalog.plans.get(catalog.default_plan)


def entitlements(
    catalog: Catalog,
    state: CustomerState,
    *,
    now: datetime,
    grace: timedelta,
    credit_prices: Mapping[str, int] | None = None,
    only: str | None = None,
) -> Entitlements:
    """Return everything the customer may do now (`only`: just that feature, for one
    decision: a consume answers one feature and need not work out the others)."""
    # A grandfathered subscriber has its plan as it was at its version.
    catalog = catalog.with_plan_version(state.plan, state.plan_version)
    access, access_changes_at = access_of(state, grace, now)
    plan = access_plan(catalog, state, access)
    if plan is not None and state.deals:
        # The customer's deal, on top of the plan it has access to.
        plan = plan_with_deals(plan, state.deals, now, catalog.addons)
        catalog = replace(catalog, plans={**catalog.plans, plan.id: plan})
        deal_ends = state.deals.valid_until(now)
        if deal_ends is not None:
            access_changes_at = min(access_changes_at or deal_ends, deal_ends)
    caps = spend_cap_limits(catalog, plan, state)
    features = {
        feature_id: _feature(
            catalog,
            plan,
            feature_id,
            state,
            (credit_prices or {}).get(feature_id),
            caps.get(feature_id),
        )
        for feature_id in (catalog.features if only is None else (only,))
    }
    valid_until = state.period.end
    if access_changes_at is not None:
        valid_until = min(valid_until, access_changes_at)
    return Entitlements(
        customer_id=state.customer_id,
        plan=state.plan,
        access_plan=plan.id if plan else None,
        status=state.status,
        access=access,
        period=state.period,
        features=features,
        valid_until=valid_until,
        state=state,
        catalog=catalog,
    )


def spend_cap_limits(catalog: Catalog, plan: Plan | None, state: CustomerState) -> dict[str, int]:
    """Return the limit the customer's spend cap sets on each soft feature with priced overage:
    what the cap leaves after the other features' overage this period."""
    if state.spend_cap is None or plan is None:
        return {}
    grants = {
        feature_id: plan.features.get(feature_id) or PlanFeature.off(feature)
        for feature_id, feature in catalog.features.items()
    }
    spend = overage_spend(grants, state.usage, state.currency)
    total = sum(spend.values())
    limits: dict[str, int] = {}
    for feature_id, grant in grants.items():
        budget = state.spend_cap - (total - spend.get(feature_id, 0))
        limit = capped_limit(grant, state.currency, budget)
        if limit is not None:
            limits[feature_id] = limit
    return limits


def _feature(
    catalog: Catalog,
    plan: Plan | None,
    feature_id: str,
    state: CustomerState,
    credits_per_unit: int | None,
    cap_limit: int | None = None,
) -> FeatureEntitlement:
    feature = catalog.features[feature_id]
    grant = plan.features.get(feature_id) if plan else None
    if grant is None:
        grant = PlanFeature.off(feature)
    if cap_limit is not None:  # the spend cap turns the soft limit hard
        grant = dataclasses.replace(grant, limit=cap_limit)
    used: int | None = None
    held = 0
    if feature.type is FeatureType.METERED:
        used = state.usage.get(feature_id, 0)
        held = state.held.get(feature_id, 0)
    elif feature.type is FeatureType.SEATS:
        used = state.seats or 0
    remaining: int | None = None
    if grant.limit is not None and used is not None:
        remaining = max(0, grant.limit - used - held)
    elif grant.included is not None and used is not None:
        remaining = max(0, grant.included - used - held)
    return FeatureEntitlement(
        feature=feature_id,
        name=feature.name,
        type=feature.type,
        enabled=grant.enabled,
        limit=grant.limit,
        used=used,
        remaining=remaining,
        hard=(grant.hard or cap_limit is not None)
        if feature.type is FeatureType.METERED
        else grant.limit is not None,
        included=grant.included,
        overage=grant.overage is not None and not grant.hard,
        percent=percent_used(used or 0, grant.included) if used is not None else None,
        credits_per_unit=credits_per_unit,
        held=held,
        capped=cap_limit is not None,
    )


# -- one decision ----------------------------------------------------------------------------


def decide(
    granted: Entitlements, feature_id: str, quantity: int = 1, *, in_use: int | None = None
) -> Decision:
    """Return whether `quantity` more of a feature may be used now, with a reason for people.

    For a metered feature `quantity` is the usage about to be recorded (for `max` and `last`
    aggregations, the new reading); for a limit feature, how many more the app wants, given
    `in_use` (the app's own count; Tollgate does not count workflows); for seats, more seats.
    """
    entitlement = granted.features[feature_id]
    plan_name = _plan_name(granted)
    overdue = granted.status == "past_due" and granted.access is not Access.FULL
    denied_code = Code.PAYMENT_OVERDUE if overdue else Code.NOT_IN_PLAN
    prefix = _reason_prefix(granted)
    unit_name = _unit(granted, feature_id)

    def answer(allowed: bool, code: Code, reason: str, warning: str | None = None) -> Decision:
        return Decision(
            allowed=allowed,
            feature=feature_id,
            reason=prefix + reason,
            code=code,
            limit=entitlement.limit,
            used=entitlement.used,
            remaining=entitlement.remaining,
            warning=warning,
        )

    if not entitlement.enabled:
        upgrade = _upgrade_hint(granted, feature_id, quantity)
        return answer(
            False,
            denied_code,
            f"{plan_name} does not include {entitlement.name}{upgrade}.",
        )

    if entitlement.type is FeatureType.BOOLEAN:
        return answer(True, Code.ALLOWED, f"{plan_name} includes {entitlement.name}.")

    if entitlement.type in (FeatureType.LIMIT, FeatureType.SEATS):
        current = entitlement.used if entitlement.type is FeatureType.SEATS else in_use or 0
        current = current or 0
        if entitlement.limit is None:
            return answer(True, Code.ALLOWED, f"{plan_name}: unlimited {unit_name(2)}.")
        wanted = current + quantity
        text = f"{plan_name}: up to {count_text(entitlement.limit, unit_name)}, {current:,} in use"
        if wanted > entitlement.limit:
            upgrade = _upgrade_hint(granted, feature_id, wanted)
            return answer(False, Code.LIMIT_EXCEEDED, f"{text}{upgrade or ''}.")
        return answer(True, Code.ALLOWED, f"{text}.")

    return _decide_metered(granted, entitlement, quantity, plan_name, unit_name, answer)


def _reason_prefix(granted: Entitlements) -> str:
    """What every reason starts with: the lapsed subscription's state, if it lapsed."""
    lapsed = granted.access is not Access.FULL and granted.status != "none"
    return _access_prefix(granted) if lapsed else ""


def _decide_metered(
    granted: Entitlements,
    entitlement: FeatureEntitlement,
    quantity: int,
    plan_name: str,
    unit_name: UnitName,
    answer: _Answer,
) -> Decision:
    feature_id = entitlement.feature
    used = entitlement.used or 0
    aggregation = granted.catalog.features[feature_id].aggregation
    after = used + quantity if aggregation is Aggregation.SUM else max(used, quantity)
    # Units reservations hold are spoken for: they count against a hard limit like used ones.
    held = entitlement.held
    per = _per_period(granted)

    if entitlement.credits_per_unit:
        cost = quantity * entitlement.credits_per_unit
        state = granted.state
        if state.credit_balance - cost < -state.credit_allowance:
            return answer(
                False,
                Code.INSUFFICIENT_CREDITS,
                # The feature's name is often plural ("AI calls"): no verb to agree with it.
                f"{entitlement.name}: {entitlement.credits_per_unit:,} credits a "
                f"{unit_name(1)}; {cost:,} needed, balance {state.credit_balance:,}"
                + (
                    f" (overdraft allowed to -{state.credit_allowance:,})"
                    if state.credit_allowance
                    else ""
                )
                + "; buy credits to continue.",
            )

    if entitlement.hard:
        if entitlement.limit is None:
            return answer(True, Code.ALLOWED, f"{plan_name}: unlimited {unit_name(2)}.")
        cap = (
            format_minor(granted.state.spend_cap or 0, granted.state.currency)
            if entitlement.capped
            else None
        )
        text = _hard_text(_hard_lead(plan_name, entitlement.limit, unit_name, per, cap), used, held)
        if after + held > entitlement.limit:
            upgrade = (
                "; raise the spend cap for more"
                if entitlement.capped
                else _upgrade_hint(granted, feature_id, after + held)
            )
            return answer(False, Code.LIMIT_EXCEEDED, f"{text}{upgrade or ''}.")
        return answer(True, Code.ALLOWED, f"{text}.", _warning(entitlement, after, granted))

    included = entitlement.included
    if included is None:
        return answer(True, Code.ALLOWED, f"{plan_name}: unlimited {unit_name(2)}.")
    rate = _overage_rate(granted, feature_id, unit_name)
    return answer(
        True,
        Code.ALLOWED,
        _soft_reason(_soft_lead(plan_name, included, unit_name, per), used, included, rate),
        _warning(entitlement, after, granted),
    )


def _hard_lead(plan_name: str, limit: int, unit_name: UnitName, per: str, cap: str | None) -> str:
    """Say a hard limit (`cap`: the spend cap that set it)."""
    if cap is not None:
        return (
            f"{plan_name}: the spend cap of {cap} for overage allows "
            f"{count_text(limit, unit_name)} {per}"
        )
    return f"{plan_name}: {count_text(limit, unit_name)} {per}"


def _hard_text(lead: str, used: int, held: int) -> str:
    """Say a hard limit (`_hard_lead`) and its use so far."""
    text = f"{lead}, {used:,} used"
    if held:
        text += f", {held:,} reserved"
    return text


def _soft_lead(plan_name: str, included: int, unit_name: UnitName, per: str) -> str:
    """Say what a soft limit includes."""
    return f"{plan_name}: {count_text(included, unit_name)} {per} included"


def _soft_reason(lead: str, used: int, included: int, rate: str | None) -> str:
    """Say what a soft limit includes (`_soft_lead`), the use so far and what more costs."""
    text = f"{lead}, {used:,} used"
    percent = percent_used(used, included)
    if percent is not None:
        text += f" ({percent:g} %)"
    if rate:
        text += f"; beyond that {rate}"
    return f"{text}."


def _warning(entitlement: FeatureEntitlement, after: int, granted: Entitlements) -> str | None:
    included = entitlement.included
    if not included:
        return None
    warn_at = _grant(granted, entitlement.feature).warn_at
    return _warning_text(entitlement.name, included, entitlement.hard, warn_at, after)


def _warning_text(
    name: str, included: int, hard: bool, warn_at: Sequence[int], after: int
) -> str | None:
    reached = [percent for percent in warn_at if after * 100 >= percent * included]
    if not reached:
        return None
    top = max(reached)
    if top >= 100:
        if hard:
            return f"{name}: the limit of {included:,} is reached."
        return f"{name}: the {included:,} included are used up; more is billed."
    return f"{name}: {top} % of the {included:,} included is used."


def _warning_marks(
    entitlement: FeatureEntitlement, warn_at: Sequence[int]
) -> tuple[tuple[int, str], ...]:
    """Return `_warning_text`'s answer for each level, with the least usage that reaches it
    (`after * 100 >= percent * included`, usage being whole units), the highest level first."""
    included = entitlement.included
    if not included:
        return ()
    name, hard = entitlement.name, entitlement.hard
    marks = []
    for percent in sorted(set(warn_at), reverse=True):
        mark = -(-percent * included // 100)
        text = _warning_text(name, included, hard, (percent,), mark)
        assert text is not None
        marks.append((mark, text))
    return tuple(marks)


# -- many uses on one customer's terms ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class UseTerms:
    """A metered feature's terms for one customer: all `decide` answers a use of it by but the
    usage, worked out once (`use_terms`) for many uses (a consume writer decides every call of
    a group, and a customer's next calls come in the next groups). Hold them no later than
    `valid_until`, and for the same catalog, customer and grace only."""

    feature: str
    name: str
    aggregation: Aggregation
    hard: bool
    limit: int | None
    included: int | None
    # The answer's words that do not depend on the usage: every reason's start (the access
    # prefix, the plan and its limit or included quantity), or the whole of an unlimited one.
    lead: str
    unlimited: str | None
    rate: str | None  # the overage rate's words (a soft limit with an included quantity)
    # Each warning level's words and the usage that reaches it, the highest level first
    # (`_warning_text` worked out once: a use only compares its usage with the marks).
    warnings: tuple[tuple[int, str], ...]
    valid_until: datetime

    def allowed(self, used: int, quantity: int, held: int = 0) -> Decision | None:
        """Return what `decide` answers a use of `quantity` at `used` (and `held` reserved)
        when it is allowed; None when it is not (ask `decide` why)."""
        words = self.words(used, quantity, held)
        if words is None:
            return None
        reason, warning = words
        included, limit = self.included, self.limit
        if limit is not None:
            remaining: int | None = max(0, limit - used - held)
        elif included is not None:
            remaining = max(0, included - used - held)
        else:
            remaining = None
        return Decision(True, self.feature, reason, Code.ALLOWED, limit, used, remaining, warning)

    def words(self, used: int, quantity: int, held: int = 0) -> tuple[str, str | None] | None:
        """Return the reason and the warning of `allowed`'s answer; None when not allowed."""
        after = used + quantity if self.aggregation is Aggregation.SUM else max(used, quantity)
        if self.unlimited is not None:
            reason = self.unlimited
        elif self.hard:
            limit = self.limit
            assert limit is not None
            if after + held > limit:
                return None
            reason = f"{_hard_text(self.lead, used, held)}."
        else:
            included = self.included
            assert included is not None
            reason = _soft_reason(self.lead, used, included, self.rate)
        for mark, warning in self.warnings:
            if after >= mark:
                return reason, warning
        return reason, None


def use_terms(
    catalog: Catalog, state: CustomerState, feature_id: str, *, now: datetime, grace: timedelta
) -> UseTerms | None:
    """Return the customer's terms for uses of a metered feature (its usage in `state` aside);
    None where they depend on more than the usage says (a spend cap, a credit price) or the
    feature is not one the customer may use."""
    if state.spend_cap is not None:  # the cap's limit depends on every feature's overage
        return None
    granted = entitlements(catalog, state, now=now, grace=grace, only=feature_id)
    entitlement = granted.features[feature_id]
    if (
        not entitlement.enabled
        or entitlement.type is not FeatureType.METERED
        or entitlement.credits_per_unit
        or entitlement.capped
    ):
        return None
    unit_name = _unit(granted, feature_id)
    prefix, plan_name, per = _reason_prefix(granted), _plan_name(granted), _per_period(granted)
    limit, included = entitlement.limit, entitlement.included
    unlimited = lead = None
    if (entitlement.hard and limit is None) or (not entitlement.hard and included is None):
        unlimited = f"{prefix}{plan_name}: unlimited {unit_name(2)}."
    elif entitlement.hard:
        assert limit is not None
        lead = prefix + _hard_lead(plan_name, limit, unit_name, per, None)
    else:
        assert included is not None
        lead = prefix + _soft_lead(plan_name, included, unit_name, per)
    return UseTerms(
        feature=feature_id,
        name=entitlement.name,
        aggregation=granted.catalog.features[feature_id].aggregation,
        hard=entitlement.hard,
        limit=entitlement.limit,
        included=entitlement.included,
        lead=lead or "",
        unlimited=unlimited,
        rate=_overage_rate(granted, feature_id, unit_name)
        if lead and not entitlement.hard
        else None,
        warnings=_warning_marks(entitlement, _grant(granted, feature_id).warn_at)
        if unlimited is None
        else (),
        valid_until=granted.valid_until,
    )


# -- words -----------------------------------------------------------------------------------


class _Answer(Protocol):  # the shape of `answer` inside decide(), for type checkers
    def __call__(
        self, allowed: bool, code: Code, reason: str, warning: str | None = None
    ) -> Decision: ...


def _unit(granted: Entitlements, feature_id: str) -> UnitName:
    feature = granted.catalog.features[feature_id]
    return UnitName(feature.unit or feature.name.lower())


def _plan_name(granted: Entitlements) -> str:
    plan = granted.catalog.plans.get(granted.access_plan or "")
    return f"{plan.name} plan" if plan else "No plan"


def _access_prefix(granted: Entitlements) -> str:
    subscribed = granted.catalog.plans.get(granted.plan or "")
    name = f"{subscribed.name} " if subscribed else ""
    if granted.status == "past_due":
        return f"Payment overdue: the {name}subscription is limited to the {_plan_name(granted)}. "
    return f"The {name}subscription is {granted.status.replace('_', ' ')}. "


def _per_period(granted: Entitlements) -> str:
    return "a year" if granted.state.interval == "year" else "a month"


def _grant(granted: Entitlements, feature_id: str) -> PlanFeature:
    plan = granted.catalog.plans.get(granted.access_plan or "")
    feature = granted.catalog.features[feature_id]
    if plan is None:
        return PlanFeature.off(feature)
    return plan.features.get(feature_id) or PlanFeature.off(feature)


def _overage_rate(granted: Entitlements, feature_id: str, unit_name: UnitName) -> str | None:
    overage = _grant(granted, feature_id).overage
    return (
        None if overage is None else overage_rate_text(overage, granted.state.currency, unit_name)
    )


def _upgrade_hint(granted: Entitlements, feature_id: str, needed: int) -> str:
    """Return "; upgrade to Pro for more", naming the plan `upgrade_plan` finds."""
    if granted.status == "past_due" and granted.access is not Access.FULL:
        return "; pay the overdue invoice to restore it"
    plan = upgrade_plan(granted.catalog, granted.access_plan, feature_id, needed)
    if plan is None:
        return ""
    has_some = granted.access_plan in granted.catalog.plans and _grant(granted, feature_id).enabled
    return f"; upgrade to {plan.name} for {'more' if has_some else 'it'}"


def upgrade_plan(
    catalog: Catalog, current: str | None, feature_id: str, needed: int
) -> Plan | None:
    """Return the first self-serve plan (in catalog order, which lists plans from small to
    large) other than `current` that has room for `needed` of the feature, or None."""
    for plan in catalog.plans.values():
        if plan.custom or plan.is_free or plan.id == current:
            continue
        grant = plan.features.get(feature_id)
        if grant is None or not grant.enabled:
            continue
        if grant.limit is not None and grant.limit < needed:
            continue
        return plan
    return None
