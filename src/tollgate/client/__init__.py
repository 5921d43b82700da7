"""A small Python client for Tollgate's API.

Over HTTP, from the app's own process:

    from tollgate.client import Tollgate
    billing = Tollgate("http://127.0.0.1:8000", "tg_write_…")
    billing.create_customer("acme", email="billing@acme.example")

or in-process, over the API's use cases of a Tollgate imported as a library
(`LocalTollgate(container)`). Both answer the services' own views (`Customer` is
`tollgate.views.CustomerView`, and so on) and raise Tollgate's own errors
(`tollgate.domain.errors`: InvalidRequest, NotFound, Conflict, …; `ApiError` for the rest), so
code written against one runs against the other.

Layout: `verbs` (the one client class, `Client`), `backend` (what a verb asks of a backend),
`http` (`HttpBackend`, `Tollgate`), `local` (`LocalBackend`, `LocalTollgate`), `dependency`
(`require_feature` for FastAPI apps), `errors`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from tollgate.app_webhooks import AppWebhookSignatureError, verify_app_webhook
from tollgate.client.backend import Backend
from tollgate.client.errors import ApiError, FeatureDenied
from tollgate.client.http import HttpBackend, Tollgate
from tollgate.client.verbs import Client
from tollgate.domain.entitlements import Decision
from tollgate.domain.errors import Conflict, InvalidRequest, NotFound, TollgateError
from tollgate.views import (
    CheckoutSession,
    CreditEntryView,
    CreditsView,
    CustomerView,
    PendingChangeView,
    SubscriptionView,
)

if TYPE_CHECKING:
    from tollgate.client.dependency import require_feature
    from tollgate.client.local import LocalBackend, LocalTollgate

# The client's names for the services' views (what it answered before it shared them).
Customer = CustomerView
Subscription = SubscriptionView
PendingChange = PendingChangeView
CreditEntry = CreditEntryView
Credits = CreditsView

__all__ = [
    "ApiError",
    "AppWebhookSignatureError",
    "Backend",
    "CheckoutSession",
    "Client",
    "Conflict",
    "CreditEntry",
    "Credits",
    "Customer",
    "Decision",
    "FeatureDenied",
    "HttpBackend",
    "InvalidRequest",
    "LocalBackend",
    "LocalTollgate",
    "NotFound",
    "PendingChange",
    "Subscription",
    "Tollgate",
    "TollgateError",
    "require_feature",
    "verify_app_webhook",
]

# Loaded on first use: the in-process backend imports the whole server (SQLAlchemy, the
# services, the Stripe SDK) and `require_feature` imports FastAPI, which an app that only
# talks HTTP to Tollgate should not pay for when it imports the client.
_LAZY = {
    "LocalBackend": "tollgate.client.local",
    "LocalTollgate": "tollgate.client.local",
    "require_feature": "tollgate.client.dependency",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
