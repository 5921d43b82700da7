"""Forget console sessions that ended and sign-in tries older than a day."""

from __future__ import annotations

from tollgate.bootstrap import Container
from tollgate.services.operators import prune_sign_ins


def prune_console_sign_ins(app: Container) -> int:
    """Delete ended console sessions and old sign-in tries; return how many rows went."""
    return prune_sign_ins(db=app.db, clock=app.clock, settings=app.settings)
