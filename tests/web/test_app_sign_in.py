"""The app's own sign-in: JWTs verified against a JWKS the test serves, with its own keys."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization

from tests.web.jwks import AUDIENCE, ISSUER, Issuer, serve_issuer
from tollgate.config import ConfigError, load_settings
from tollgate.services.app_sign_in import AppSignIn, JwksKeys, SignInRefused


@pytest.fixture
def issuer() -> Iterator[Issuer]:
    with serve_issuer() as served:
        served.add_rsa("rsa-1")
        served.add_ec("ec-1")
        yield served


def _verifier(issuer: Issuer, refetch_after: float = 10.0) -> AppSignIn:
    settings = load_settings(TOLLGATE_ENV="test", **issuer.settings())
    return AppSignIn(settings, JwksKeys(issuer.url, refetch_after=refetch_after))


def test_rs256_and_es256_tokens_name_their_customer(issuer: Issuer) -> None:
    verifier = _verifier(issuer)
    assert verifier.customer_of(issuer.token("rsa-1", org="org_a")) == "org_a"
    assert verifier.customer_of(issuer.token("ec-1", org="org_b")) == "org_b"
    assert issuer.fetches == 1  # the keys are cached


@pytest.mark.parametrize(
    "make, words",
    [
        (lambda i: i.token("rsa-1", expires_in=-120), "expired"),
        (lambda i: i.token("rsa-1", iss="https://other.example/"), "another issuer"),
        (lambda i: i.token("rsa-1", aud="someone-else"), "another audience"),
        (lambda i: i.token("rsa-1", org_id=None), "no 'org_id' claim"),
    ],
)
def test_wrong_tokens_are_refused(
    issuer: Issuer, make: Callable[[Issuer], str], words: str
) -> None:
    with pytest.raises(SignInRefused, match=words):
        _verifier(issuer).customer_of(make(issuer))


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def test_alg_none_is_refused(issuer: Issuer) -> None:
    claims = {"iss": ISSUER, "aud": AUDIENCE, "org_id": "org_a", "exp": 4_000_000_000}
    token = f"{_b64({'alg': 'none', 'kid': 'rsa-1'})}.{_b64(claims)}."
    with pytest.raises(SignInRefused, match="'none'"):
        _verifier(issuer).customer_of(token)


def test_hs256_signed_with_the_public_key_is_refused(issuer: Issuer) -> None:
    # The classic confusion: HMAC keyed with the RSA public key (PEM) the app publishes.
    public_pem = (
        issuer.keys["rsa-1"]
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    claims = {"iss": ISSUER, "aud": AUDIENCE, "org_id": "org_a", "exp": 4_000_000_000}
    signing_input = f"{_b64({'alg': 'HS256', 'kid': 'rsa-1', 'typ': 'JWT'})}.{_b64(claims)}"
    mac = hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest()
    token = f"{signing_input}.{base64.urlsafe_b64encode(mac).rstrip(b'=').decode()}"
    with pytest.raises(SignInRefused, match="HS256"):
        _verifier(issuer).customer_of(token)


def test_an_es256_header_on_an_rsa_key_is_refused(issuer: Issuer) -> None:
    token = issuer.token("ec-1")
    header, body, signature = token.split(".")
    swapped = json.loads(base64.urlsafe_b64decode(header + "=="))
    swapped["kid"] = "rsa-1"
    with pytest.raises(SignInRefused, match="does not match its key"):
        _verifier(issuer).customer_of(f"{_b64(swapped)}.{body}.{signature}")


def test_an_unknown_kid_fetches_the_keys_again_once(issuer: Issuer) -> None:
    verifier = _verifier(issuer, refetch_after=0)
    assert verifier.customer_of(issuer.token("rsa-1")) == "org_a"
    issuer.add_rsa("rsa-2")  # the app rotated its keys
    assert verifier.customer_of(issuer.token("rsa-2", org="org_c")) == "org_c"
    assert issuer.fetches == 2
    slow = _verifier(issuer, refetch_after=3600)
    slow.customer_of(issuer.token("rsa-1"))
    before = issuer.fetches
    for _ in range(3):
        with pytest.raises(SignInRefused, match="does not publish"):
            slow.customer_of(_with_kid(issuer.token("rsa-1"), "unknown"))
    assert issuer.fetches == before  # forged kids do not hammer the issuer


def _with_kid(token: str, kid: str) -> str:
    header, body, signature = token.split(".")
    changed = json.loads(base64.urlsafe_b64decode(header + "=="))
    changed["kid"] = kid
    return f"{_b64(changed)}.{body}.{signature}"


def test_sign_in_needs_its_settings() -> None:
    with pytest.raises(ConfigError, match="TOLLGATE_JWT_JWKS_URL"):
        AppSignIn(load_settings(TOLLGATE_ENV="test"))
