"""Who may do what in the console: the one place roles are decided."""

from __future__ import annotations

import re
from collections.abc import Collection
from typing import Literal

Role = Literal["readonly", "support", "admin"]
ROLES: tuple[Role, ...] = ("readonly", "support", "admin")
# readonly sees everything; support also acts on customers (and replays webhooks, retries
# emails); admin also acts on the catalog, operators, API keys and reconciliation.
Action = Literal["view", "act_on_customers", "administer"]
_NEEDS: dict[Action, Role] = {
    "view": "readonly",
    "act_on_customers": "support",
    "administer": "admin",
}
OPERATOR_NAME = re.compile(r"^[a-z0-9][a-z0-9._@-]{0,63}$")
MIN_PASSWORD = 12


def may(role: str, action: Action) -> bool:
    """Return whether an operator with `role` may take `action`."""
    if role not in ROLES:
        return False
    return ROLES.index(role) >= ROLES.index(_NEEDS[action])


def admin_problem(admins: Collection[str], name: str, role: str | None) -> str | None:
    """Return why `name` may not become `role` (None: removed), or None: the console keeps at
    least one admin, or nobody could manage operators or API keys from it again."""
    if name in admins and role != "admin" and len(admins) == 1:
        return f"{name!r} is the last admin; make another operator admin first"
    return None


def role_problem(role: str) -> str | None:
    """Return what is wrong with `role`, or None."""
    return None if role in ROLES else f"role must be one of {', '.join(ROLES)}"


def name_problem(name: str) -> str | None:
    """Return what is wrong with an operator's name, or None."""
    if OPERATOR_NAME.fullmatch(name):
        return None
    return "name must be 1 to 64 of a-z, 0-9, '.', '_', '@', '-' (starting with a letter or digit)"


def password_problem(password: str) -> str | None:
    """Return what is wrong with a new password, or None."""
    if len(password) < MIN_PASSWORD:
        return f"the password must be at least {MIN_PASSWORD} characters"
    if len(password) > 1024:
        return "the password must be at most 1024 characters"
    return None
