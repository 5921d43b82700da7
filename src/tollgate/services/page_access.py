"""Who may see a customer's pages: signed billing links and the page sessions they open.

A billing link (`POST /v1/customers/{id}/billing-session`) carries a token signed with
TOLLGATE_SECRET_KEY that names one customer and expires after TOLLGATE_BILLING_SESSION_TTL; it
is exchanged once per browser for a page session (a signed cookie naming the same customer).
Neither needs a table: a forged token fails its signature, an expired one its time, and a
session names exactly one customer, so a page never shows another customer's data.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from tollgate.clock import Clock
from tollgate.config import ConfigError, Settings
from tollgate.db.models import AuditLog
from tollgate.domain.errors import TollgateError
from tollgate.services.customers import load_customer
from tollgate.services.deps import Deps

# A page session lasts this long after the link or sign-in that opened it.
PAGE_SESSION = timedelta(hours=8)
# Used only when TOLLGATE_SECRET_KEY is unset outside production: links then work on this
# process only, which is what `tollgate dev` and the tests need.
_PROCESS_SECRET = secrets.token_bytes(32)


class AccessRefused(TollgateError):
    """A link or session that is forged, expired, or for another purpose."""

    type = "authentication_error"
    status = 401

    def __init__(self, message: str, *, expired: bool = False) -> None:
        super().__init__(message)
        self.expired = expired


def page_secret(settings: Settings) -> bytes:
    """Return the key that signs links, page sessions and CSRF tokens."""
    configured = settings.secret_key.get_secret_value()
    if configured:
        return hashlib.sha256(b"tollgate-pages\x00" + configured.encode()).digest()
    if settings.env == "production":
        raise ConfigError("TOLLGATE_SECRET_KEY: set it to sign billing links and page sessions")
    return _PROCESS_SECRET


@dataclass(frozen=True)
class PageSession:
    """A browser's right to see one customer's pages until `expires_at`."""

    customer_id: str
    expires_at: datetime
    nonce: str
    via: str  # "link" or "jwt"

    @property
    def actor(self) -> str:
        """How the audit log names what this session does."""
        return f"customer:{self.customer_id}"


@dataclass(frozen=True)
class BillingLink:
    customer_id: str
    url: str
    expires_at: datetime

    def to_json(self) -> dict[str, str]:
        return {
            "customer": self.customer_id,
            "url": self.url,
            "expires_at": self.expires_at.isoformat().replace("+00:00", "Z"),
        }


def sign(secret: bytes, purpose: str, claims: dict[str, object]) -> str:
    """Return `claims` as a token signed for `purpose` (a link and a cookie never swap)."""
    body = base64.urlsafe_b64encode(json.dumps(claims, separators=(",", ":")).encode())
    body = body.rstrip(b"=")
    mac = hmac.new(secret, purpose.encode() + b"\x00" + body, hashlib.sha256).digest()
    return f"{body.decode()}.{base64.urlsafe_b64encode(mac).rstrip(b'=').decode()}"


def unsign(secret: bytes, purpose: str, token: str) -> dict[str, object]:
    """Return the claims of a token signed for `purpose`; raise AccessRefused if forged."""
    body, _, mac = token.partition(".")
    expected = hmac.new(secret, purpose.encode() + b"\x00" + body.encode(), hashlib.sha256)
    given = mac.encode() + b"=" * (-len(mac) % 4)
    try:
        valid = hmac.compare_digest(base64.urlsafe_b64decode(given), expected.digest())
        claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    except ValueError:
        valid, claims = False, None
    if not valid or not isinstance(claims, dict):
        raise AccessRefused("this link is not valid: it was changed or not made by this server")
    return claims


def _expiry(claims: dict[str, object], now: datetime) -> datetime:
    expires = claims.get("exp")
    if not isinstance(expires, int | float) or not isinstance(claims.get("sub"), str):
        raise AccessRefused("this link is not valid")
    at = datetime.fromtimestamp(expires, tz=now.tzinfo)
    if at <= now:
        raise AccessRefused("this link has expired; ask for a new one", expired=True)
    return at


def open_billing_link(
    deps: Deps,
    *,
    customer_id: str,
    base_url: str,
) -> BillingLink:
    """Return a short-lived signed link to the customer's billing page (audited)."""
    db, settings, clock = deps.db, deps.settings, deps.clock
    now = clock.now()
    expires_at = now + timedelta(seconds=settings.billing_session_ttl)
    with db.transaction() as session:
        load_customer(session, customer_id)
        session.add(
            AuditLog(
                at=now,
                actor="api",
                object_type="customer",
                object_id=customer_id,
                action="billing_link",
                after={"expires_at": expires_at.isoformat()},
            )
        )
    claims = {"sub": customer_id, "exp": int(expires_at.timestamp()), "n": secrets.token_hex(8)}
    token = sign(page_secret(settings), "billing-link", claims)
    root = (settings.public_url or base_url).rstrip("/")
    return BillingLink(customer_id, f"{root}/billing/session/{token}", expires_at)


def redeem_billing_link(*, settings: Settings, clock: Clock, token: str) -> PageSession:
    """Return the page session a valid link opens; raise AccessRefused if forged or expired."""
    now = clock.now()
    claims = unsign(page_secret(settings), "billing-link", token)
    _expiry(claims, now)
    return new_page_session(clock=clock, customer_id=str(claims["sub"]), via="link")


def new_page_session(*, clock: Clock, customer_id: str, via: str) -> PageSession:
    return PageSession(customer_id, clock.now() + PAGE_SESSION, secrets.token_hex(16), via)


def session_cookie(settings: Settings, page_session: PageSession) -> str:
    """Return the signed cookie value that carries `page_session`."""
    claims = {
        "sub": page_session.customer_id,
        "exp": int(page_session.expires_at.timestamp()),
        "n": page_session.nonce,
        "via": page_session.via,
    }
    return sign(page_secret(settings), "page-session", claims)


def read_session_cookie(*, settings: Settings, clock: Clock, value: str) -> PageSession:
    """Return the session a cookie carries; raise AccessRefused if forged or expired."""
    claims = unsign(page_secret(settings), "page-session", value)
    expires_at = _expiry(claims, clock.now())
    return PageSession(str(claims["sub"]), expires_at, str(claims.get("n")), str(claims.get("via")))
