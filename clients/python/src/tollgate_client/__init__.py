"""Tollgate's Python client: the API over HTTP, with nothing but `httpx` beside it.

    from tollgate_client import Tollgate
    billing = Tollgate("http://127.0.0.1:8000", "tg_write_…")
    billing.create_customer("acme", email="billing@acme.example")
    if billing.check("acme", "runs").allowed: ...

This package is also the API's vocabulary: the views it answers (`views`), entitlement decisions
(`decisions`) and errors (`errors`) are the classes Tollgate's server returns and raises itself,
so code written against this client runs unchanged against Tollgate imported in process
(`tollgate.client.LocalTollgate`).

Layout: `verbs` (the one client class, `Client`), `backend` (what a verb asks of a backend),
`http` (`HttpBackend`, `Tollgate`), `dependency` (`require_feature` for FastAPI apps; needs
FastAPI, the `fastapi` extra), `app_webhooks` (`verify_app_webhook`), `views`, `decisions`,
`errors`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from tollgate_client.app_webhooks import AppWebhookSignatureError, verify_app_webhook
from tollgate_client.backend import Backend
from tollgate_client.decisions import Code, Decision
from tollgate_client.errors import (
    ApiError,
    Conflict,
    FeatureDenied,
    InvalidRequest,
    NotFound,
    TollgateError,
)
from tollgate_client.http import HttpBackend, Tollgate
from tollgate_client.verbs import Client
from tollgate_client.views import (
    CheckoutSession,
    CreditEntryView,
    CreditsView,
    CustomerView,
    PendingChangeView,
    SubscriptionView,
)

if TYPE_CHECKING:
    from tollgate_client.dependency import consume_on_success as consume_on_success
    from tollgate_client.dependency import require_feature as require_feature

__version__ = "0.1.0"

# Short names for the views.
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
    "Code",
    "Conflict",
    "CreditEntry",
    "CreditEntryView",
    "Credits",
    "CreditsView",
    "Customer",
    "CustomerView",
    "Decision",
    "FeatureDenied",
    "HttpBackend",
    "InvalidRequest",
    "NotFound",
    "PendingChange",
    "PendingChangeView",
    "Subscription",
    "SubscriptionView",
    "Tollgate",
    "TollgateError",
    "verify_app_webhook",
]


def __getattr__(name: str) -> Any:
    # The dependencies import FastAPI: loaded on first use, so an app that only talks HTTP to
    # Tollgate needs no FastAPI installed to import the client.
    if name not in ("require_feature", "consume_on_success"):
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module("tollgate_client.dependency"), name)
    globals()[name] = value
    return value
