"""Issue 18, finding 2: the Stripe-Signature header is parsed in one place, at bounded cost.

Over HTTP a server reads header bytes as Latin-1, so `t=\\xb2` arrives as "t=²": a digit to
str.isdigit() that int() refuses (a 500 before). The test client re-encodes such bytes as
UTF-8, so these cases are checked here, on the parser every delivery goes through.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from tollgate.stripe.signatures import (
    MAX_HEADER_LENGTH,
    InvalidWebhook,
    parse_signature_header,
    verify_signature,
)

HEX = "0" * 64


@pytest.mark.parametrize(
    "header",
    [
        f"t=\u00b2,v1={HEX}",
        f"t=\u00b9\u00b3,v1={HEX}",
        f"t=\u0661\u0662,v1={HEX}",
        f"t={'9' * 5000},v1={HEX}",
        f"t={'9' * 13},v1={HEX}",
        f"t=-1,v1={HEX}",
        "t=1,v1=" + "a" * 5000,
        "x" * (MAX_HEADER_LENGTH + 1),
    ],
)
def test_a_malformed_header_is_an_invalid_webhook_never_another_error(header: str) -> None:
    with pytest.raises(InvalidWebhook):
        verify_signature(
            payload=b"{}",
            header=header,
            secrets=["whsec_test"],
            tolerance_seconds=300,
            now=datetime.now(UTC),
        )


def test_a_well_formed_header_keeps_its_signatures_and_drops_malformed_ones() -> None:
    timestamp, signatures = parse_signature_header(f"t=1790000000,v1={HEX},v1=zz,v0={HEX}")
    assert (timestamp, signatures) == (1_790_000_000, [HEX])


def test_the_usual_header_reads_as_the_parts_loop_reads_it() -> None:
    signature = "0123456789abcdef" * 4
    for header in (f"t=1765090000,v1={signature}", f"t=0000000042,v1={signature}"):
        # The same header with a space added goes through the parts loop, not the one match.
        assert parse_signature_header(header) == parse_signature_header(header + " ")
        assert parse_signature_header(header) == (int(header[2:12]), [signature])
