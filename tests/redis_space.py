"""A key space of this test's own in the Redis at 127.0.0.1:6379, emptied afterwards."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager

import redis

REDIS_URL = os.environ.get("TOLLGATE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@contextmanager
def redis_space() -> Iterator[dict[str, str]]:
    """Yield the settings that put Tollgate's counters under a fresh key prefix."""
    prefix = f"tollgate-test-{secrets.token_hex(6)}:"
    try:
        yield {"TOLLGATE_REDIS_URL": REDIS_URL, "TOLLGATE_REDIS_PREFIX": prefix}
    finally:
        drop_keys(prefix)


def drop_keys(prefix: str) -> int:
    """Delete every key under `prefix` (as a restart or an eviction would); return how many."""
    client = redis.Redis.from_url(REDIS_URL)
    try:
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        return int(client.delete(*keys)) if keys else 0
    finally:
        client.close()
