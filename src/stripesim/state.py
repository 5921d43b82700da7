"""The simulator's state: accounts (the platform and Connect accounts), objects, clocks, events."""

from __future__ import annotations

import json
import secrets
import string
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from stripesim import objects
from stripesim.errors import StripeError, resource_missing
from stripesim.event_types import EVENT_TYPES
from stripesim.tables import Record, Table

API_VERSION = "2026-10-28.endive"
PLATFORM_ACCOUNT = "acct_1SimPlatform0000"
_ALPHABET = string.ascii_letters + string.digits


# Maps each random byte to an id character; one `token_bytes` call is far cheaper than a
# `secrets.choice` per character (ids were the costliest part of a create request).
_ID_TABLE = bytes(ord(_ALPHABET[byte % len(_ALPHABET)]) for byte in range(256))


def new_id(prefix: str, length: int = 24) -> str:
    """A Stripe-looking id such as `cus_Q8u3…`."""
    return f"{prefix}_" + secrets.token_bytes(length).translate(_ID_TABLE).decode()


def snapshot(obj: Any) -> Any:
    """A deep copy that shares nothing with the stored object (for events and responses)."""
    return orjson.loads(orjson.dumps(obj))


@dataclass
class Faults:
    """Share of requests that fail on purpose, and exact failures queued for the next requests."""

    rate_429: float = 0.0
    rate_500: float = 0.0
    rate_timeout: float = 0.0
    # A "timeout" runs the request and then hangs this long before answering, so the client
    # gives up after Stripe already acted: the case idempotency keys exist for.
    timeout_seconds: float = 35.0
    queued: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class WebhookSettings:
    """How events reach endpoints: duplicates, reordering and dropped deliveries on purpose."""

    duplicate_rate: float = 0.0
    shuffle: bool = False
    drop_rate: float = 0.0
    retry_base_seconds: float = 1.0
    max_attempts: int = 8
    dropped_objects: set[str] = field(default_factory=set)
    # Deliveries about objects that name one of these ids (their customer, subscription, invoice,
    # charge or payment intent) are dropped too: a way to lose objects not made yet.
    dropped_related: set[str] = field(default_factory=set)


@dataclass
class BillingSettings:
    """How the billing engine collects (stripesim's stand-in for the Dashboard's billing settings).

    Documented choices: renewal invoices stay draft one hour (Stripe's documented delay), then
    finalize and charge; failed payments retry 3, 5 and 7 days after the previous attempt (4
    attempts over about two weeks); `invoice.upcoming` goes out 7 days before a renewal.
    """

    retry_days: list[int] = field(default_factory=lambda: [3, 5, 7])
    subscription_status_after_final_attempt: str = "canceled"  # canceled | unpaid | past_due
    invoice_status_after_final_attempt: str = "open"  # open (past due) | uncollectible
    upcoming_days: int = 7
    trial_will_end_days: int = 3
    finalize_delay_seconds: int = 3600
    incomplete_expiry_seconds: int = 23 * 3600


class Account:
    """One Stripe account's space: the platform, or a connected account (`Stripe-Account`)."""

    def __init__(self, account_id: str) -> None:
        self.id = account_id
        self.objects: dict[str, dict[str, Any]] = {}
        self.tables: dict[str, Table] = {}
        self.idempotency: dict[str, tuple[str, int, bytes]] = {}
        self.sequence = 0

    def table(self, kind: str) -> Table:
        """Return the table of objects of `kind` (empty if there are none yet)."""
        found = self.tables.get(kind)
        if found is None:
            found = self.tables[kind] = Table(kind)
        return found

    @property
    def order(self) -> dict[str, list[str]]:
        """Return every kind's ids, oldest first (what a saved state keeps)."""
        return {kind: list(table.inserted) for kind, table in self.tables.items()}

    def add(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Store a new object and return the stored one (kept current in its table's indexes)."""
        table = self.table(obj["object"])
        if not isinstance(obj, Record):
            # Objects made outside `build` (tests seed Stripe's world) are stored as Records.
            obj = Record(obj)
        self.objects[obj["id"]] = obj
        table.add(obj)
        return obj

    def get(
        self, object_id: str, kind: str, *, param: str = "id", label: str | None = None
    ) -> dict[str, Any]:
        """Return the stored object `object_id` of type `kind`, or raise Stripe's 404."""
        obj = self.objects.get(object_id) if isinstance(object_id, str) else None
        if obj is None or obj.get("object") != kind or obj.get("_deleted"):
            raise resource_missing(
                label or kind.split(".")[-1].replace("_", " "), str(object_id), param
            )
        return obj

    def find(self, object_id: Any) -> dict[str, Any] | None:
        """Return the stored object `object_id` (deleted ones too), or None."""
        return self.objects.get(object_id) if isinstance(object_id, str) else None

    def all(self, kind: str) -> Iterable[dict[str, Any]]:
        """Yield every live object of type `kind`, oldest first."""
        table = self.tables.get(kind)
        for object_id in list(table.inserted) if table else []:
            obj = self.objects[object_id]
            if not obj.get("_deleted"):
                yield obj

    def where(self, kind: str, **filters: Any) -> list[dict[str, Any]]:
        """Return the live objects of `kind` whose fields equal `filters`, in list order."""
        table = self.tables.get(kind)
        if table is None:
            return []
        candidates, rest = table.candidates(filters)
        found = []
        for object_id in list(candidates.ids):
            obj = self.objects[object_id]
            if not obj.get("_deleted") and all(obj.get(k) == v for k, v in rest.items()):
                found.append(obj)
        return found

    def newest(self, kind: str, **filters: Any) -> dict[str, Any] | None:
        """Return the live object of `kind` matching `filters` that was stored last, if any."""
        found = self.where(kind, **filters)
        if not found:
            return None
        keys = self.tables[kind].keys
        return max(found, key=lambda obj: keys[obj["id"]][1])

    def count(self, kind: str) -> int:
        """Return how many objects of `kind` were ever stored (deleted ones too)."""
        table = self.tables.get(kind)
        return len(table.inserted) if table else 0

    def delete(self, obj: dict[str, Any]) -> None:
        """Mark an object deleted: gone from lists and lookups, kept for its last events."""
        obj["_deleted"] = True

    def remove(self, object_id: str) -> None:
        """Forget an object entirely (a create that failed part way, a removed endpoint)."""
        obj = self.objects.pop(object_id)
        self.tables[obj["object"]].remove(obj)


TimeHook = Callable[["Simulator", Account, "str | None", int], None]


class Simulator:
    """All state of one simulated Stripe, safe to share between the server thread and tests."""

    def __init__(
        self,
        *,
        webhook_url: str | None = None,
        webhook_secret: str | None = None,
        state_file: str | Path | None = None,
        deliver_webhooks: bool = True,
        business_name: str = "Test business",
    ) -> None:
        self.lock = threading.RLock()
        # The name hosted pages (Checkout, the Portal, invoices) show as the seller's.
        self.business_name = business_name
        self.accounts: dict[str, Account] = {}
        self.offset = 0  # seconds added to wall time by /_sim/clock/advance
        self.faults = Faults()
        self.webhooks = WebhookSettings()
        self.billing = BillingSettings()
        self.base_url = "http://127.0.0.1:12111"
        self.state_file = Path(state_file) if state_file else None
        self.time_hooks: list[TimeHook] = []
        self.event_listeners: list[Callable[[Account, dict[str, Any]], None]] = []
        # Called with (method, route path template, status, body) for each answered API call.
        self.exchange_listeners: list[Callable[[str, str, int, bytes], None]] = []
        self._webhook_boot = (webhook_url, webhook_secret)
        self.deliver_webhooks = deliver_webhooks
        self.reset()
        if self.state_file and self.state_file.exists():
            self.load(self.state_file)

    # -- accounts and time ---------------------------------------------------------------

    def reset(self) -> None:
        """Forget everything, as a brand-new Stripe test account."""
        with self.lock:
            self.accounts = {PLATFORM_ACCOUNT: Account(PLATFORM_ACCOUNT)}
            self.offset = 0
            self.faults = Faults()
            self.webhooks = WebhookSettings()
            self.billing = BillingSettings()
            url, secret = self._webhook_boot
            if url:
                # One endpoint for the platform's events and one for connected accounts' events.
                endpoint = self.add_webhook_endpoint(url, secret=secret)
                self.add_webhook_endpoint(url, secret=endpoint["secret"], connect=True)

    @property
    def platform(self) -> Account:
        return self.accounts[PLATFORM_ACCOUNT]

    def account(self, account_id: str | None) -> Account:
        if not account_id:
            return self.platform
        try:
            return self.accounts[account_id]
        except KeyError:
            raise StripeError(
                f"The provided key does not have access to account '{account_id}' "
                "(or that account does not exist). Application access may have been revoked.",
                status=403,
                code="account_invalid",
            ) from None

    def wall_time(self) -> int:
        return int(time.time()) + self.offset

    def now(self, account: Account, clock_id: str | None = None) -> int:
        """Current time for objects on test clock `clock_id`, or the simulator's clock."""
        if clock_id:
            clock = account.find(clock_id)
            if clock is not None:
                return int(clock["frozen_time"])
        return self.wall_time()

    def clock_of(self, account: Account, customer_id: Any) -> str | None:
        """The test clock a customer (by id) is attached to, if any."""
        customer = account.find(customer_id)
        return customer.get("test_clock") if customer else None

    def advance(self, seconds: int) -> None:
        """Move the simulator's clock (objects on no test clock) forward; run what falls due."""
        if seconds < 0:
            raise StripeError("Time only moves forward.", param="seconds")
        with self.lock:
            self.offset += seconds
            target = self.wall_time()
            for account in list(self.accounts.values()):
                for hook in self.time_hooks:
                    hook(self, account, None, target)

    # -- objects -------------------------------------------------------------------------

    def build(self, kind: str, prefix: str, account: Account, **fields: Any) -> dict[str, Any]:
        """Return a new object of `kind`: its template, our id, `created`, then `fields`."""
        obj = Record(objects.new(kind))
        unknown = [key for key in fields if key not in obj and not key.startswith("_")]
        if unknown:
            # A key Stripe does not send is a bug in the caller, not something to pass on.
            raise KeyError(f"{kind} has no key {', '.join(unknown)}")
        obj["id"] = fields.pop("id", None) or new_id(prefix)
        if "created" in obj:
            obj["created"] = fields.pop("created", None) or self.wall_time()
        obj.update(fields)
        return obj

    # -- events --------------------------------------------------------------------------

    def emit(
        self,
        account: Account,
        event_type: str,
        obj: dict[str, Any],
        *,
        previous: dict[str, Any] | None = None,
        created: int | None = None,
        request_id: str | None = None,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        """Record a Stripe event about `obj` and queue it for every subscribed endpoint."""
        if event_type not in EVENT_TYPES:
            raise ValueError(f"Stripe sends no {event_type!r} event")
        account.sequence += 1
        event = self.build(
            "event",
            "evt",
            account,
            created=created or self.wall_time(),
            api_version=API_VERSION,
            type=event_type,
            data={"object": snapshot(obj)}
            | ({"previous_attributes": snapshot(previous)} if previous else {}),
            request={"id": request_id, "idempotency_key": idempotency_key},
        )
        event.pop("context", None)
        if account.id != PLATFORM_ACCOUNT:
            event["account"] = account.id
        event["_sequence"] = account.sequence
        account.add(event)
        for listener in self.event_listeners:
            listener(account, event)
        return event

    def add_webhook_endpoint(
        self,
        url: str,
        *,
        secret: str | None = None,
        enabled_events: list[str] | None = None,
        connect: bool = False,
    ) -> dict[str, Any]:
        account = self.platform
        endpoint = self.build(
            "webhook_endpoint",
            "we",
            account,
            url=url,
            secret=secret or "whsec_" + secrets.token_hex(16),
            enabled_events=enabled_events or ["*"],
            api_version=API_VERSION,
            _connect=connect,
        )
        return account.add(endpoint)

    # -- persistence ---------------------------------------------------------------------

    def save(self, path: str | Path | None = None) -> None:
        target = Path(path or self.state_file or "stripesim-state.json")
        with self.lock:
            data = {
                "offset": self.offset,
                "accounts": {
                    account_id: {
                        "objects": account.objects,
                        "order": account.order,
                        "sequence": account.sequence,
                    }
                    for account_id, account in self.accounts.items()
                },
            }
            payload = orjson.dumps(data)
        tmp = target.with_suffix(".tmp")
        tmp.write_bytes(payload)
        tmp.replace(target)

    def load(self, path: str | Path) -> None:
        data = json.loads(Path(path).read_text())
        with self.lock:
            self.offset = data["offset"]
            self.accounts = {}
            for account_id, stored in data["accounts"].items():
                account = Account(account_id)
                for ids in stored["order"].values():
                    for object_id in ids:
                        obj = stored["objects"][object_id]
                        if obj.pop("deleted", None) is True:
                            obj["_deleted"] = True  # a state saved before deletions were private
                        account.add(Record(obj))
                account.sequence = stored["sequence"]
                self.accounts[account_id] = account
