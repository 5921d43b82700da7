"""An account's objects of one kind, kept in list order with indexes on what lists filter by.

Stripe lists newest first (`created`, then creation order). A `Table` keeps its objects sorted
that way and, per indexed field, the objects holding each value, so a list call or a search finds
its page by bisection and walks only the candidates: at 100,000 objects a list costs about what
it costs at 1,000. Stored objects are `Record`s, dicts that tell their table when an indexed
field changes, so an index never goes stale however the simulator mutates an object.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Iterator
from typing import Any

Key = tuple[int, int]  # (time, sequence): the list order, oldest first

# The fields each kind's lists and searches filter by. `metadata` is indexed per (key, value).
INDEXES: dict[str, tuple[str, ...]] = {
    "balance_transaction": ("source", "type"),
    "billing.meter_event": ("_customer",),
    "charge": ("customer", "payment_intent", "metadata"),
    "checkout.session": ("customer", "subscription", "payment_intent", "status"),
    "credit_note": ("customer", "invoice"),
    "customer": ("email", "test_clock", "metadata"),
    "customer_balance_transaction": ("customer",),
    "dispute": ("charge", "payment_intent"),
    "event": ("type",),
    "invoice": ("customer", "_subscription", "status", "test_clock", "metadata"),
    "invoiceitem": ("customer", "invoice"),
    "payment_intent": ("customer", "metadata"),
    "payment_method": ("customer",),
    "price": ("product", "lookup_key", "metadata"),
    "product": ("metadata",),
    "promotion_code": ("code", "_coupon", "customer"),
    "refund": ("charge", "payment_intent"),
    "setup_intent": ("customer",),
    "subscription": ("customer", "status", "test_clock", "metadata"),
    "subscription_item": ("subscription",),
    "subscription_schedule": ("customer", "subscription", "test_clock"),
    "tax_id": ("customer",),
}


class Record(dict[str, Any]):
    """A stored object: a dict that reindexes itself when an indexed field is set."""

    __slots__ = ("_table",)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._table: Table | None = None

    def __setitem__(self, key: str, value: Any) -> None:
        super().__setitem__(key, value)
        table = self._table
        if table is not None and key in table.fields:
            table.reindex(self)

    def update(self, *args: Any, **kwargs: Any) -> None:
        for key, value in dict(*args, **kwargs).items():
            self[key] = value

    def pop(self, key: str, *default: Any) -> Any:
        value = super().pop(key, *default)
        table = self._table
        if table is not None and key in table.fields:
            table.reindex(self)
        return value

    def setdefault(self, key: str, default: Any = None) -> Any:
        if key not in self:
            self[key] = default
        return self[key]


def list_time(obj: dict[str, Any]) -> int:
    """Return the time an object sorts by in lists: `created`, else `date`, else 0."""
    return int(obj.get("created") or obj.get("date") or 0)


class _Sorted:
    """Ids sorted by key, with their keys alongside for bisection."""

    __slots__ = ("ids", "keys")

    def __init__(self) -> None:
        self.keys: list[Key] = []
        self.ids: list[str] = []

    def insert(self, key: Key, object_id: str) -> None:
        # Objects mostly arrive in time order, so this is usually an append.
        index = bisect.bisect_right(self.keys, key)
        self.keys.insert(index, key)
        self.ids.insert(index, object_id)

    def discard(self, key: Key) -> None:
        index = bisect.bisect_left(self.keys, key)
        if index < len(self.keys) and self.keys[index] == key:
            del self.keys[index]
            del self.ids[index]

    def __len__(self) -> int:
        return len(self.keys)


class Table:
    """One kind's objects: insertion order, list order, and the indexes of its fields."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.fields = frozenset(INDEXES.get(kind, ()))
        self.inserted: list[str] = []  # ids, oldest first (the order `Account.all` walks)
        self.listed = _Sorted()  # ids in list order
        self.keys: dict[str, Key] = {}
        self.indexes: dict[str, dict[Any, _Sorted]] = {field: {} for field in self.fields}
        self._indexed: dict[str, list[tuple[str, Any]]] = {}  # id -> the entries it is under
        self._sequence = 0

    def add(self, obj: dict[str, Any]) -> None:
        object_id = obj["id"]
        self._sequence += 1
        key = (list_time(obj), self._sequence)
        self.keys[object_id] = key
        self.inserted.append(object_id)
        self.listed.insert(key, object_id)
        if isinstance(obj, Record):
            obj._table = self
        self.reindex(obj)

    def remove(self, obj: dict[str, Any]) -> None:
        object_id = obj["id"]
        key = self.keys.pop(object_id)
        self.inserted.remove(object_id)
        self.listed.discard(key)
        for field, value in self._indexed.pop(object_id, []):
            self.indexes[field][value].discard(key)
        if isinstance(obj, Record):
            obj._table = None

    def reindex(self, obj: dict[str, Any]) -> None:
        """File the object under the current values of its indexed fields."""
        if not self.fields:
            return
        object_id = obj["id"]
        key = self.keys.get(object_id)
        if key is None:
            return
        entries = list(_entries(obj, self.fields))
        old = self._indexed.get(object_id, [])
        if entries == old:
            return
        for field, value in old:
            if (field, value) not in entries:
                self.indexes[field][value].discard(key)
        for field, value in entries:
            if (field, value) not in old:
                self.indexes[field].setdefault(value, _Sorted()).insert(key, object_id)
        self._indexed[object_id] = entries

    def candidates(self, filters: dict[str, Any]) -> tuple[_Sorted, dict[str, Any]]:
        """Return the smallest sorted list that holds every match, and the filters left over."""
        best: _Sorted = self.listed
        chosen = None
        for field, value in filters.items():
            if field not in self.fields or not _indexable(value):
                continue
            found = self.indexes[field].get(value) or _Sorted()
            if len(found) < len(best) or chosen is None:
                best, chosen = found, field
        rest = {field: value for field, value in filters.items() if field != chosen}
        return best, rest

    def metadata_candidates(self, key: str, value: str) -> _Sorted | None:
        """Return the objects whose metadata has `key: value`, when metadata is indexed."""
        if "metadata" not in self.fields:
            return None
        return self.indexes["metadata"].get((key, value)) or _Sorted()


def _indexable(value: Any) -> bool:
    return value is None or isinstance(value, str | int | bool)


def _entries(obj: dict[str, Any], fields: Iterable[str]) -> Iterator[tuple[str, Any]]:
    for field in sorted(fields):
        value = obj.get(field)
        if field == "metadata":
            # Searches match metadata values without regard to case.
            for key, text in sorted((value or {}).items()):
                yield field, (key, str(text).lower())
        elif _indexable(value):
            yield field, value
        elif isinstance(value, dict) and isinstance(value.get("id"), str):
            yield field, value["id"]  # an expanded reference files under its id
