"""The app's own sign-in: verify its end user's JWT against the app's JWKS, and name the
Tollgate customer it speaks for (TOLLGATE_JWT_CUSTOMER_CLAIM, an org or tenant id claim).

Only asymmetric algorithms are accepted (RS*, PS*, ES*, EdDSA), each only with a key of its own
kind, so `alg: none` and the HS256-signed-with-the-public-key confusion are refused before any
signature is computed. Keys are cached by `kid`; an unknown `kid` fetches the JWKS again (at
most once per `refetch_after` seconds, so forged kids cannot make Tollgate hammer the issuer).
"""

from __future__ import annotations

import threading
import time
from typing import Any

import httpx
import jwt
from jwt import PyJWK

from tollgate.config import ConfigError, Settings
from tollgate.domain.errors import TollgateError

ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)
# Which key type (JWK `kty`) each algorithm family may be verified with.
_KEY_TYPES = {"RS": "RSA", "PS": "RSA", "ES": "EC", "Ed": "OKP"}


class SignInRefused(TollgateError):
    """A JWT that is malformed, expired, for another issuer or audience, or signed wrongly."""

    type = "authentication_error"
    status = 401


class JwksKeys:
    """The app's signing keys, fetched from its JWKS URL and cached by `kid`."""

    def __init__(self, url: str, *, refetch_after: float = 10.0, timeout: float = 5.0) -> None:
        self.url = url
        self.refetch_after = refetch_after
        self.timeout = timeout
        self._keys: dict[str, PyJWK] = {}
        self._fetched_at: float | None = None
        self._lock = threading.Lock()

    def key(self, kid: str | None) -> PyJWK:
        """Return the key named `kid` (the only key when the token names none)."""
        with self._lock:
            found = self._find(kid)
            if found is None and self._may_fetch():
                self._fetch()
                found = self._find(kid)
        if found is None:
            raise SignInRefused("the token is signed with a key the app does not publish")
        return found

    def _find(self, kid: str | None) -> PyJWK | None:
        if kid is None:
            return next(iter(self._keys.values())) if len(self._keys) == 1 else None
        return self._keys.get(kid)

    def _may_fetch(self) -> bool:
        return self._fetched_at is None or (
            time.monotonic() - self._fetched_at >= self.refetch_after
        )

    def _fetch(self) -> None:
        self._fetched_at = time.monotonic()
        try:
            answer = httpx.get(self.url, timeout=self.timeout, follow_redirects=False)
            answer.raise_for_status()
            published = answer.json().get("keys", [])
        except (httpx.HTTPError, ValueError, AttributeError) as error:
            raise SignInRefused(
                f"the app's JWKS could not be read ({type(error).__name__})"
            ) from None
        keys: dict[str, PyJWK] = {}
        for index, entry in enumerate(published):
            if not isinstance(entry, dict) or entry.get("use", "sig") != "sig":
                continue
            try:
                key = PyJWK(entry)
            except jwt.PyJWTError:
                continue  # a key type or algorithm this server cannot use
            keys[str(entry.get("kid") or f"#{index}")] = key
        self._keys = keys


class AppSignIn:
    """Verify the app's JWTs with the settings' JWKS URL, issuer, audience and claim."""

    def __init__(self, settings: Settings, keys: JwksKeys | None = None) -> None:
        if not settings.jwt_jwks_url:
            raise ConfigError("TOLLGATE_JWT_JWKS_URL: set it to accept the app's sign-in tokens")
        if not settings.jwt_issuer or not settings.jwt_audience:
            raise ConfigError("TOLLGATE_JWT_ISSUER and TOLLGATE_JWT_AUDIENCE must both be set")
        self.issuer = settings.jwt_issuer
        self.audience = settings.jwt_audience
        self.claim = settings.jwt_customer_claim
        self.keys = keys or JwksKeys(settings.jwt_jwks_url)

    def customer_of(self, token: str) -> str:
        """Return the Tollgate customer id the token speaks for; raise SignInRefused if not."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise SignInRefused("the sign-in token is not a JWT") from None
        algorithm = header.get("alg")
        if algorithm not in ALGORITHMS:
            raise SignInRefused(f"tokens signed with {algorithm!r} are not accepted")
        key = self.keys.key(header.get("kid"))
        if key.key_type != _KEY_TYPES[str(algorithm)[:2]]:
            raise SignInRefused("the token's algorithm does not match its key")
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key.key,
                algorithms=[str(algorithm)],
                audience=self.audience,
                issuer=self.issuer,
                options={"require": ["exp", "iss", "aud"]},
                leeway=30,
            )
        except jwt.ExpiredSignatureError:
            raise SignInRefused("the sign-in token has expired; sign in again") from None
        except jwt.InvalidAudienceError:
            raise SignInRefused("the sign-in token is for another audience") from None
        except jwt.InvalidIssuerError:
            raise SignInRefused("the sign-in token is from another issuer") from None
        except jwt.PyJWTError as error:
            raise SignInRefused(
                f"the sign-in token is not valid ({type(error).__name__})"
            ) from None
        customer = claims.get(self.claim)
        if not isinstance(customer, str) or not customer:
            raise SignInRefused(f"the sign-in token has no {self.claim!r} claim")
        return customer
