"""Access while a bank debit is processing (issue 21, TOLLGATE_PROCESSING_ACCESS)."""

from __future__ import annotations

import pytest

from tests.unit.test_entitlement_rules import granted
from tollgate.config import Settings
from tollgate.domain.entitlements import Access


def test_keep_gives_an_incomplete_subscription_its_plan_while_the_debit_processes() -> None:
    held = granted("pro", "incomplete", processing_access="full")
    assert held.access is Access.FULL and held.access_plan == "pro"
    assert held.decide("marketplace").allowed


@pytest.mark.parametrize("processing_access", ["default", None])
def test_wait_or_no_debit_leaves_an_incomplete_subscription_on_the_default_plan(
    processing_access: str | None,
) -> None:
    waiting = granted("pro", "incomplete", processing_access=processing_access)
    assert waiting.access is Access.DEFAULT and waiting.access_plan == "free"


@pytest.mark.parametrize("status", ["unpaid", "canceled", "incomplete_expired", "paused"])
def test_a_processing_debit_gives_nothing_to_other_statuses(status: str) -> None:
    assert granted("pro", status, processing_access="full").access is Access.DEFAULT


def test_the_setting_reaches_the_policy_the_webhook_handlers_have() -> None:
    defaults = Settings(_env_file=None)  # type: ignore[call-arg]
    assert defaults.dunning_policy.processing_access == "keep"
    waiting = Settings(_env_file=None, TOLLGATE_PROCESSING_ACCESS="wait")  # type: ignore[call-arg]
    assert waiting.dunning_policy.processing_access == "wait"
    assert waiting.dunning_policy.steps == defaults.dunning_policy.steps
