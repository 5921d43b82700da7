"""What a webhook handler works with: the event, its transaction, and a few verbs over them.

A handler reads with `read`/`rows`/`row`, queues writes with `write` (they go to the database
with its next read, in one round trip on PostgreSQL), records what it changed with `audit`, and
asks for an object the event does not carry with `fetch`. Handlers never call Stripe: the first
`fetch` of an object raises NeedsFetch, which rolls the transaction back; the caller fetches
outside any transaction and runs the handler again with the object at hand, so no row lock or
SQLite write lock is held while Stripe answers.

Events applied together in one transaction (group commit) share one `GroupWrites`: each event's
writes wait in its queue, and their audit rows, `state_version` bumps and change-feed rows are
written by one statement each after the last event. What the group read ahead for its events
(their subscriptions, see handlers.read_ahead) waits there too, for each event to take once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import ClauseElement, Connection, Table

from tollgate.db import execution
from tollgate.db.execution import Read, Rows, Statement, Write
from tollgate.db.queries import mirror
from tollgate.db.queries.changes import feed_rows
from tollgate.domain.dunning import DunningPolicy
from tollgate.domain.errors import TollgateError
from tollgate.domain.events import changed_fields, fetched_watermark

Row = Mapping[str, Any]


class UnknownStripeObject(TollgateError):
    """An event refers to an object Stripe does not have (in this account)."""

    type = "unknown_stripe_object"


@dataclass(frozen=True, slots=True)
class Fetched:
    """An object read from Stripe for an event (None when Stripe has no such object), and
    Stripe's clock when it answered (None when unknown)."""

    value: Any
    stripe_time: int | None = None
    # A copy Tollgate holds already (what Stripe answered its own write with) is known to be
    # newer only than the mirror row it was made over: that row's watermark event ("" for no
    # row). It stands in for a fetch only while the row is still that one (`fetch_current`).
    over: str | None = None


class NeedsFetch(Exception):
    """Raised inside a handler to have the caller fetch an object from Stripe, then rerun it."""

    def __init__(self, object_type: str, object_id: str, reason: str, account: str | None):
        super().__init__(f"{object_type} {object_id} needed from Stripe ({reason})")
        self.object_type = object_type
        self.object_id = object_id
        self.reason = reason
        self.account = account

    @property
    def key(self) -> tuple[str, str]:
        return (self.object_type, self.object_id)


@dataclass
class GroupWrites:
    """The writes of the events applied in one transaction, waiting to go to the database."""

    queued: list[Write] = field(default_factory=list)
    audit_rows: list[dict[str, Any]] = field(default_factory=list)
    bumps: list[dict[str, Any]] = field(default_factory=list)
    feed: list[dict[str, Any]] = field(default_factory=list)
    # Subscriptions read ahead for the group's events, by id: the Stripe customer id each was
    # read for, and what `mirror.lock_customer_and_subscription` would have answered then.
    subscriptions: dict[str, tuple[str, mirror.StoredSubscription]] = field(default_factory=dict)
    # Customer rows read ahead (locked) for the group's `customer.*` events, by Stripe id.
    customers: dict[str, Row] = field(default_factory=dict)

    def take_subscription(
        self, stripe_customer_id: str, subscription_id: str
    ) -> mirror.StoredSubscription | None:
        """Return the subscription read ahead for an event, or None to read it now.

        Each is taken once: a later event of the same subscription reads it after the writes
        of the one before (and so does an event naming another customer than it was read for).
        """
        found = self.subscriptions.pop(subscription_id, None)
        if found is None or found[0] != stripe_customer_id:
            return None
        return found[1]

    def take(self) -> list[Write]:
        """Return the queued writes, leaving the queue empty."""
        writes, self.queued = self.queued, []
        return writes

    def write(self, connection: Connection, *, commit: bool = False) -> None:
        """Run every write still waiting, with the group's audit, bumps and feed rows.

        With `commit`, the transaction commits with them (in their round trip on PostgreSQL,
        see `execution.run`): the caller runs nothing after it.
        """
        self.queued.extend(
            mirror.group_changes(connection.dialect, self.audit_rows, self.bumps, self.feed)
        )
        self.audit_rows, self.bumps, self.feed = [], [], []
        if self.queued or commit:
            execution.run(connection, self.take(), commit=commit)


class HandlerContext:
    """One event being applied: its transaction, the objects fetched for it, what it changed."""

    # Slots, and what every handler asks of the event (its id, second, account, actor) read
    # once here rather than by a property at each ask: one context is made per event.
    __slots__ = (
        "_own_from",
        "account",
        "actor",
        "audit_rows",
        "changes",
        "created",
        "dialect",
        "dunning",
        "event",
        "event_id",
        "fetched",
        "group",
        "now",
        "touched",
        "transaction",
        "undoable",
        "written_created",
    )

    def __init__(
        self,
        *,
        transaction: Connection,
        event: dict[str, Any],
        now: datetime,
        dunning: DunningPolicy,
        fetched: Mapping[tuple[str, str], Fetched],
        group: GroupWrites | None = None,
    ) -> None:
        self.transaction = transaction
        self.event = event
        self.now = now
        self.dunning = dunning
        self.fetched = fetched
        self.group = group = GroupWrites() if group is None else group
        self.touched: set[str] = set()
        self.audit_rows: list[dict[str, Any]] = []
        self.changes = 0
        # The `created` second of the rows written from Stripe's current copy (`fetch_current`).
        self.written_created: int | None = None
        # Whether nothing the event did has reached the database yet but reads (`drop_writes`).
        self.undoable = True
        self.event_id = event_id = str(event["id"])
        self.created = int(event["created"])
        account = event.get("account")
        self.account: str | None = account if isinstance(account, str) else None
        # Who made the change: the Stripe event, or Tollgate's own (reconciliation). Only
        # Tollgate sets `tollgate_actor`, on events it builds itself; a delivery is signed.
        actor = event.get("tollgate_actor")
        self.actor: str = actor if isinstance(actor, str) else f"stripe:{event_id}"
        self.dialect: str = transaction.dialect.name
        self._own_from = len(group.queued)  # where this event's queued writes start

    @property
    def connection(self) -> Connection:
        """The transaction, for a service that works on it directly (the event can no longer be
        dropped from its group without rolling the transaction back)."""
        self.undoable = False
        return self.transaction

    def fetch(self, object_type: str, object_id: str, reason: str) -> Any:
        """Return the object as Stripe has it now (None when Stripe has no such object)."""
        return self._fetched(object_type, object_id, reason).value

    def fetch_current(
        self, object_type: str, object_id: str, reason: str, row_event: str = ""
    ) -> Any:
        """`fetch` an object whose current copy replaces the event's snapshot: the rows this
        event writes from then on carry the second Stripe vouches for (`fetched_watermark`).

        `row_event` is the watermark event of the stored row the copy would replace: a copy
        held from before (`Fetched.over`) that was made over another row is fetched anew."""
        fetched = self._fetched(object_type, object_id, reason)
        if fetched.over is not None and fetched.over != row_event:
            raise NeedsFetch(object_type, object_id, reason, self.account)
        if fetched.value is not None:
            self.written_created = fetched_watermark(
                self.created, fetched.stripe_time, fetched.value
            )
        return fetched.value

    def _fetched(self, object_type: str, object_id: str, reason: str) -> Fetched:
        key = (object_type, object_id)
        if key in self.fetched:
            return self.fetched[key]
        raise NeedsFetch(object_type, object_id, reason, self.account)

    def watermark(self) -> dict[str, Any]:
        """Return the watermark of a mirror row this event writes: its own second and id, or
        the later second of Stripe's current copy when the row is written from one."""
        created = self.created if self.written_created is None else self.written_created
        return {"watermark_created": created, "watermark_event_id": self.event_id}

    def read(self, reads: Sequence[Read]) -> list[Rows]:
        """Run the writes still waiting, then these reads; return each one's rows.

        One round trip on PostgreSQL.
        """
        writes = self.group.take()
        if len(writes) > self._own_from or not all(_selects(read) for read, _ in reads):
            self.undoable = False  # its own writes go with these reads, or a read writes
        self._own_from = 0
        return execution.run(self.transaction, writes, reads)

    def rows(self, statement: ClauseElement, **parameters: Any) -> Rows:
        """Return the rows one statement reads (after the writes still waiting)."""
        return self.read([(statement, parameters)])[0]

    def row(self, table: Table, object_id: str, *, lock: bool = False) -> Row | None:
        """Return the mirror row with this id (locked with `lock` on PostgreSQL), or None."""
        found = self.rows(mirror.row_by_id(table, lock=lock), row_id=object_id)
        return found[0] if found else None

    def write(self, statement: Statement, parameters: Any = None) -> None:
        """Queue a statement that returns nothing; it runs before the next read, or at the end."""
        self.group.queued.append((statement, parameters))

    def flush(self) -> None:
        """Run the writes still waiting (before another service uses the connection)."""
        self.undoable = False
        if self.group.queued:
            execution.run(self.transaction, self.group.take())

    def drop_writes(self) -> None:
        """Forget the writes this event queued, when it is `undoable`: the event leaves its
        group as if it had never run (what it read and locked stays read and locked)."""
        if not self.undoable:
            raise RuntimeError("the event's writes reached the database; roll back instead")
        del self.group.queued[self._own_from :]

    def audit(
        self,
        object_type: str,
        object_id: str,
        action: str,
        before: dict[str, Any] | None,
        after: dict[str, Any],
        customer_id: str | None,
    ) -> None:
        """Record a change that was applied, and mark its customer's cached state stale."""
        old, new = changed_fields(before, after)
        self.audit_changes(
            object_type, object_id, action, None if before is None else old, new, customer_id
        )

    def audit_changes(
        self,
        object_type: str,
        object_id: str,
        action: str,
        old: dict[str, Any] | None,
        new: dict[str, Any],
        customer_id: str | None,
    ) -> None:
        """`audit` a change already compared: `new` holds the fields that changed and `old`
        their values before (None for an object created). Nothing changed, nothing recorded."""
        if not new:
            return
        if (old is None or _plain(old)) and _plain(new):
            before, after = old, new  # JSON has them as they are
        else:
            # Both through one JSON round trip (see `_jsonable`).
            jsonable = _jsonable({"before": old, "after": new})
            before, after = jsonable["before"], jsonable["after"]
        self.audit_rows.append(
            {
                "at": self.now,
                "actor": self.actor,
                "object_type": object_type,
                "object_id": object_id,
                "action": action,
                "before": before,
                "after": after,
                "event_id": self.event_id,
            }
        )
        self.changes += 1
        if customer_id is not None:
            self.touched.add(customer_id)

    def finish(self) -> None:
        """Hand the audit rows, one `state_version` bump per customer changed and their feed
        rows to the group, which writes them after its last event."""
        # In id order, so two events touching the same customers lock them in one order.
        touched = sorted(self.touched)
        self.group.audit_rows.extend(self.audit_rows)
        self.group.bumps.extend({"row_id": customer, "now": self.now} for customer in touched)
        self.group.feed.extend(feed_rows(touched, reason="subscription", now=self.now))


def _selects(statement: ClauseElement) -> bool:
    """Whether a statement only reads (an UPDATE … RETURNING read back writes; text may)."""
    return bool(getattr(statement, "is_select", False))


_JSON_SCALARS = frozenset({str, int, bool, type(None)})


def _plain(values: dict[str, Any], nested: bool = True) -> bool:
    """Whether JSON has the values as they are: text keys, text, integer, boolean or null values
    (most changes an event makes: a name, seats, a status), which need no round trip; with
    `nested`, also lists of such dicts (a subscription's items as its audit has them)."""
    scalars = _JSON_SCALARS
    for key, value in values.items():
        if type(key) is not str:
            return False
        kind = type(value)
        if kind in scalars:
            continue
        if not nested or kind is not list:
            return False
        for item in value:
            if type(item) is not dict or not _plain(item, nested=False):
                return False
    return True


def _jsonable(values: dict[str, Any]) -> dict[str, Any]:
    """Return the values as JSON has them: datetimes as ISO 8601 text, tuples as lists, keys as
    text. One orjson round trip (C) costs a fifth of walking the values in Python."""
    found: dict[str, Any] = orjson.loads(orjson.dumps(values, option=orjson.OPT_NON_STR_KEYS))
    return found
