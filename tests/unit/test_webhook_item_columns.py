"""A webhook's subscription items compare with the mirror's stored items column for column."""

from __future__ import annotations

from tests.stripe_reference import example
from tollgate.db.queries import mirror
from tollgate.services.webhooks.handlers import _item_values
from tollgate.stripe.translate import subscription_snapshot


def test_an_events_items_have_the_columns_the_mirror_reads_back() -> None:
    snapshot = subscription_snapshot(example("subscription"))
    (item,) = _item_values(snapshot)
    assert tuple(item) == mirror.ITEM_KEYS
    assert item == {key: getattr(snapshot.items[0], key) for key in mirror.ITEM_KEYS}
