"""Tollgate's Python client, with the in-process backend of a Tollgate imported as a library.

The HTTP client is the `tollgate-client` distribution (`tollgate_client`, httpx only): every
name it exports is exported here too. This package adds `LocalTollgate(container)`, the same
verbs over the API's own use cases (`tollgate.api.operations`) without HTTP: the same views,
decisions and errors, so code written against one runs against the other.
"""

from __future__ import annotations

from typing import Any

from tollgate_client import *  # noqa: F403  (this package exports the client's names as its own)
from tollgate_client import __all__ as _client_names

__all__ = [*_client_names, "LocalBackend", "LocalTollgate", "require_feature"]  # noqa: F405


def __getattr__(name: str) -> Any:
    # Loaded on first use: the in-process backend imports the whole server (SQLAlchemy, the
    # services, the Stripe SDK), which an app that only talks HTTP should not pay for.
    if name in ("LocalBackend", "LocalTollgate"):
        from tollgate.client import local

        value = getattr(local, name)
    elif name == "require_feature":
        import tollgate_client

        value = tollgate_client.require_feature
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value
