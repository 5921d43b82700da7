"""The billing engine's account settings, and the context it acts in when no request asks."""

from __future__ import annotations

from stripesim.registry import Ctx
from stripesim.state import Account, BillingSettings, Simulator


def settings(sim: Simulator) -> BillingSettings:
    """Return the simulator's billing settings (retry schedule, final status, delays)."""
    found = getattr(sim, "billing", None)
    return found if isinstance(found, BillingSettings) else BillingSettings()


def engine_ctx(sim: Simulator, account: Account) -> Ctx:
    """Return a context for work Stripe does on its own (its events carry `request.id` null)."""
    return Ctx(sim, account, None, None, sim.base_url)  # type: ignore[arg-type]
