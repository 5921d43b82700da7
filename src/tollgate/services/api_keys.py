"""API keys: create them, and tell who a presented key belongs to."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass

from sqlalchemy import select

from tollgate.clock import Clock
from tollgate.config import SCOPES, BootstrapKey
from tollgate.db.models import ApiKey
from tollgate.db.unit_of_work import Database
from tollgate.domain.errors import InvalidRequest

KEY_PREFIX = "tg_"
# A key found once is trusted for this long without a database read; revocation shows after it.
_CACHE_SECONDS = 10.0
_REMEMBERED_SECRETS = 10_000


@dataclass(frozen=True)
class Principal:
    """Who is calling: the key's name and its scope."""

    key_id: str
    name: str
    scope: str

    def allows(self, scope: str) -> bool:
        return self.scope == "write" or self.scope == scope


@dataclass(frozen=True)
class CreatedApiKey:
    """A new key; `secret` is shown once and never stored."""

    id: str
    name: str
    scope: str
    secret: str


def hash_secret(secret: str) -> str:
    # Keys are 256-bit random strings, so a fast hash is as strong as a slow one here.
    return hashlib.sha256(secret.encode()).hexdigest()


def create_api_key(*, db: Database, clock: Clock, name: str, scope: str) -> CreatedApiKey:
    """Make a key with `scope`; the secret is returned once and only its hash is kept."""
    name = name.strip()
    if not name or len(name) > 100:
        raise InvalidRequest("name must be 1 to 100 characters", param="name")
    if scope not in SCOPES:
        raise InvalidRequest(f"scope must be one of {', '.join(SCOPES)}", param="scope")
    secret = f"{KEY_PREFIX}{scope}_{secrets.token_urlsafe(32)}"
    key = ApiKey(
        id=secrets.token_hex(8),
        name=name,
        scope=scope,
        prefix=secret[: len(KEY_PREFIX) + len(scope) + 5],
        secret_hash=hash_secret(secret),
        created_at=clock.now(),
    )
    with db.transaction() as session:
        session.add(key)
    return CreatedApiKey(id=key.id, name=name, scope=scope, secret=secret)


class ApiKeyAuthenticator:
    """Match a presented secret against bootstrap keys and stored keys, in constant time."""

    def __init__(self, *, db: Database, bootstrap: list[BootstrapKey]) -> None:
        self._db = db
        self._bootstrap = [
            (
                hash_secret(key.secret.get_secret_value()),
                Principal(f"env:{key.name}", key.name, key.scope),
            )
            for key in bootstrap
        ]
        self._cache: dict[str, tuple[float, Principal]] = {}
        # The hash of each secret that was accepted, so a key's requests hash it once (every
        # check sends one). Who it is still comes from `_cache`, which expires and forgets.
        self._hashes: dict[str, str] = {}

    def authenticate(self, secret: str) -> Principal | None:
        presented = self._hashes.get(secret) or hash_secret(secret)
        cached = self._cache.get(presented)
        if cached and cached[0] > time.monotonic():
            return cached[1]
        found = None
        for stored_hash, principal in self._bootstrap:
            if hmac.compare_digest(stored_hash, presented):
                found = principal
        if found is None:
            found = self._lookup(presented)
        if found is not None:
            self._cache[presented] = (time.monotonic() + _CACHE_SECONDS, found)
            if len(self._hashes) >= _REMEMBERED_SECRETS:
                self._hashes = {}
            self._hashes[secret] = presented
        return found

    def forget(self, key_id: str) -> None:
        """Drop a stored key from this process's cache (it was revoked here); other processes
        drop it when their cached entry expires, within _CACHE_SECONDS."""
        self._cache = {h: entry for h, entry in self._cache.items() if entry[1].key_id != key_id}

    def _lookup(self, presented: str) -> Principal | None:
        with self._db.transaction() as session:
            key = session.scalars(
                select(ApiKey).where(ApiKey.secret_hash == presented, ApiKey.revoked_at.is_(None))
            ).first()
            if key is None or not hmac.compare_digest(key.secret_hash, presented):
                return None
            return Principal(key.id, key.name, key.scope)
