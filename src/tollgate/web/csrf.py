"""CSRF tokens for every form a page posts: one token per browser session, checked on POST.

The token is an HMAC of the session's id under the server's secret, so it needs no storage and
cannot be computed by another site; a POST whose `csrf_token` field does not match its session
is refused, and so is one whose Origin header names another site. A page that has no session
yet (a sign-in form) uses any random per-browser value it keeps in a cookie as the session id.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

from starlette.datastructures import FormData
from starlette.requests import Request

FIELD = "csrf_token"


class CsrfRefused(Exception):
    """A form came without its session's token, or from another origin."""


def csrf_token(secret: bytes, session_id: str) -> str:
    """Return the CSRF token of the session `session_id`."""
    digest = hmac.new(secret, b"csrf\x00" + session_id.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def check_csrf(secret: bytes, session_id: str, submitted: str | None) -> None:
    """Raise CsrfRefused unless `submitted` is the token of `session_id`."""
    if not submitted or not hmac.compare_digest(csrf_token(secret, session_id), submitted):
        raise CsrfRefused("the form's security token is missing or stale; reload the page")


def check_origin(request: Request) -> None:
    """Raise CsrfRefused when the browser says the form came from another origin."""
    origin = request.headers.get("origin")
    if origin is None or origin == "null":
        return  # older browsers and some privacy settings send none; the token still decides
    own = f"{request.url.scheme}://{request.url.netloc}"
    forwarded = request.headers.get("x-forwarded-host")
    allowed = {own}
    if forwarded:
        allowed.add(f"{request.headers.get('x-forwarded-proto', 'https')}://{forwarded}")
    if origin not in allowed:
        raise CsrfRefused("the form was sent from another site")


async def checked_form(request: Request, secret: bytes, session_id: str) -> FormData:
    """Return the posted form after checking its origin and CSRF token."""
    check_origin(request)
    form = await request.form()
    submitted = form.get(FIELD)
    check_csrf(secret, session_id, submitted if isinstance(submitted, str) else None)
    return form
