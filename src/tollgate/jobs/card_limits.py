"""Keep renewals that usage takes past a card limit off cards (services/card_limits.py)."""

from __future__ import annotations

from tollgate.bootstrap import Container
from tollgate.services.card_limits import UsageMethodsReport, follow_usage_in_payment_methods


def follow_usage_past_card_limits(app: Container) -> UsageMethodsReport:
    """Offer each live subscription's coming invoice the methods that may pay it now."""
    return follow_usage_in_payment_methods(app)
