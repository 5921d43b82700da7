"""Request dependencies: the container, and the caller's API key with its scope."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import Depends, Request

from tollgate.bootstrap import Container
from tollgate.domain.errors import TollgateError
from tollgate.services.api_keys import ApiKeyAuthenticator, Principal


class Unauthenticated(TollgateError):
    type = "authentication_error"


class Forbidden(TollgateError):
    type = "permission_error"


def container(request: Request) -> Container:
    return request.app.state.container


def authorize(authenticator: ApiKeyAuthenticator, header: str, scope: str) -> Principal:
    """Return the caller named by an `Authorization: Bearer <key>` header if its key has
    `scope` (a write key may do everything); raise Unauthenticated or Forbidden if not."""
    kind, _, secret = header.partition(" ")
    if kind.lower() != "bearer" or not secret.strip():
        raise Unauthenticated("send your API key as 'Authorization: Bearer <key>'")
    principal = authenticator.authenticate(secret.strip())
    if principal is None:
        raise Unauthenticated("the API key is not valid (unknown or revoked)")
    if not principal.allows(scope):
        raise Forbidden(f"this API key has scope '{principal.scope}'; this route needs '{scope}'")
    return principal


def require_scope(scope: str) -> Callable[[Request], Awaitable[Principal]]:
    """A dependency that admits keys with `scope` (see `authorize`)."""

    async def dependency(request: Request) -> Principal:
        # Async: run on the event loop, not a thread (the key lookup is cached in process).
        header = request.headers.get("authorization", "")
        return authorize(container(request).authenticator, header, scope)

    return dependency


read_scope = require_scope("read")
write_scope = require_scope("write")


async def write_actor(principal: Principal = Depends(write_scope)) -> str:
    """A dependency that admits write keys and names the caller for the audit: `api:<key>`."""
    return f"api:{principal.name}"
