"""Stripe-Signature checks on the raw body, and parsing the body as an event."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest
import stripe

from tollgate.stripe.signatures import InvalidWebhook, parse_event, verify_signature

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
T = int(NOW.timestamp())
SECRET = "whsec_current0123456789"
OLD_SECRET = "whsec_previous0123456789"
BODY = orjson.dumps(
    {
        "id": "evt_1",
        "object": "event",
        "type": "customer.updated",
        "created": T,
        "data": {"object": {"id": "cus_1", "object": "customer"}},
    }
)


def _sign(body: bytes, secret: str = SECRET, timestamp: int = T) -> str:
    # Stripe's own SDK makes the header, so this checks Tollgate against Stripe's scheme.
    return stripe.WebhookSignature.generate_signature_header(body.decode(), secret, timestamp)


def _verify(header: str | None, body: bytes = BODY, secrets: tuple[str, ...] = (SECRET,)) -> int:
    return verify_signature(
        payload=body, header=header, secrets=secrets, tolerance_seconds=300, now=NOW
    )


def test_a_body_signed_with_the_secret_passes() -> None:
    assert _verify(_sign(BODY)) == T


def test_any_configured_secret_may_sign_during_rotation() -> None:
    assert _verify(_sign(BODY, OLD_SECRET), secrets=(SECRET, OLD_SECRET)) == T


def test_one_matching_signature_among_several_v1_passes() -> None:
    good = _sign(BODY).split("v1=")[1]
    assert _verify(f"t={T},v1={'0' * 64},v1={good},v0=abc") == T


def test_a_changed_body_fails() -> None:
    with pytest.raises(InvalidWebhook, match="does not match the body"):
        _verify(_sign(BODY), body=BODY.replace(b"cus_1", b"cus_2"))


def test_an_unknown_secret_fails_without_naming_any_secret() -> None:
    with pytest.raises(InvalidWebhook) as raised:
        _verify(_sign(BODY, "whsec_attacker000000"))
    assert "whsec_" not in raised.value.message


def test_an_old_timestamp_fails_as_a_replay() -> None:
    with pytest.raises(InvalidWebhook, match="301 s old; the tolerance is 300 s"):
        _verify(_sign(BODY, timestamp=T - 301))


def test_a_timestamp_far_in_the_future_fails() -> None:
    with pytest.raises(InvalidWebhook, match="in the future"):
        _verify(_sign(BODY, timestamp=T + 3600))


@pytest.mark.parametrize(
    ("header", "message"),
    [
        (None, "header is missing"),
        ("", "header is missing"),
        ("v1=abc", "no timestamp"),
        ("t=abc,v1=abc", "timestamp is not a number"),
        (f"t={T}", "no v1 signature"),
    ],
)
def test_a_malformed_header_fails_with_a_clear_message(header: str | None, message: str) -> None:
    with pytest.raises(InvalidWebhook, match=message):
        _verify(header)


def test_a_body_that_is_not_utf8_is_a_signature_failure_not_a_crash() -> None:
    with pytest.raises(InvalidWebhook, match="does not match"):
        _verify(_sign(BODY), body=b"\xff\xfe" + BODY)


def test_parse_event_returns_the_event() -> None:
    assert parse_event(BODY)["type"] == "customer.updated"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{not json", "not valid JSON"),
        (b"[1, 2]", "not a Stripe event"),
        (b'{"object": "customer", "id": "cus_1"}', "not a Stripe event"),
        (b'{"object": "event", "id": "cus_1", "type": "x", "created": 1}', "no valid id"),
        (b'{"object": "event", "id": "evt_1", "created": 1}', "no type"),
        (b'{"object": "event", "id": "evt_1", "type": "x", "created": "1"}', "no created"),
        (b'{"object": "event", "id": "evt_1", "type": "x", "created": 1}', "no data.object"),
    ],
)
def test_parse_event_refuses_what_is_not_an_event(body: bytes, message: str) -> None:
    with pytest.raises(InvalidWebhook, match=message):
        parse_event(body)
