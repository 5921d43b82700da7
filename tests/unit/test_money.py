"""Money: minor units, currency exponents, parsing and formatting."""

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tollgate.money import (
    CURRENCY_EXPONENTS,
    Money,
    format_minor,
    normalize_currency,
    parse_amount,
    to_minor_int,
)

STRIPE_ZERO_DECIMAL = [
    "bif",
    "clp",
    "djf",
    "gnf",
    "jpy",
    "kmf",
    "krw",
    "mga",
    "pyg",
    "rwf",
    "ugx",
    "vnd",
    "vuv",
    "xaf",
    "xof",
    "xpf",
]
STRIPE_THREE_DECIMAL = ["bhd", "jod", "kwd", "omr", "tnd"]


@pytest.mark.parametrize("code", STRIPE_ZERO_DECIMAL)
def test_stripe_zero_decimal_currencies_have_exponent_zero(code: str) -> None:
    assert CURRENCY_EXPONENTS[code] == 0


@pytest.mark.parametrize("code", STRIPE_THREE_DECIMAL)
def test_stripe_three_decimal_currencies_have_exponent_three(code: str) -> None:
    assert CURRENCY_EXPONENTS[code] == 3


def test_currency_codes_are_lowercase_three_letters() -> None:
    assert all(len(code) == 3 and code.islower() for code in CURRENCY_EXPONENTS)
    assert {"usd", "eur", "gbp", "chf", "cad", "aud", "inr", "brl"} <= set(CURRENCY_EXPONENTS)


def test_normalize_currency_lowercases_known_codes() -> None:
    assert normalize_currency("USD") == "usd"
    assert normalize_currency(" eur ") == "eur"


@pytest.mark.parametrize("code", ["xyz", "usdd", "", "us"])
def test_normalize_currency_rejects_unknown_codes(code: str) -> None:
    with pytest.raises(ValueError, match=f"^'{code}' is not an ISO 4217 currency code$"):
        normalize_currency(code)


@pytest.mark.parametrize(
    ("value", "currency", "expected"),
    [
        ("29.00", "usd", Decimal(2900)),
        ("0.50", "usd", Decimal(50)),
        ("0.005", "usd", Decimal("0.5")),
        ("12000", "usd", Decimal(1200000)),
        (29, "usd", Decimal(2900)),
        (29.0, "usd", Decimal(2900)),
        (0.1, "usd", Decimal(10)),
        (Decimal("1.23"), "eur", Decimal(123)),
        ("500", "jpy", Decimal(500)),
        (500, "jpy", Decimal(500)),
        ("0.5", "jpy", Decimal("0.5")),
        ("29", "kwd", Decimal(29000)),
        ("1.234", "kwd", Decimal(1234)),
        ("0", "usd", Decimal(0)),
    ],
)
def test_parse_amount_converts_major_units_to_minor_units(
    value: int | str | Decimal | float, currency: str, expected: Decimal
) -> None:
    assert parse_amount(value, currency) == expected


def test_parse_amount_returns_plain_digits_for_whole_minor_amounts() -> None:
    assert str(parse_amount("29.00", "usd")) == "2900"
    assert str(parse_amount("0.50", "usd")) == "50"
    assert str(parse_amount("0.005", "usd")) == "0.5"


def test_parse_amount_takes_floats_through_their_shortest_repr() -> None:
    # Decimal(0.29) is 0.289999...; repr gives "0.29", which is what the YAML author wrote.
    assert parse_amount(0.29, "usd") == Decimal(29)


@pytest.mark.parametrize("value", ["-1", -1, -0.5, Decimal("-29.00")])
def test_parse_amount_rejects_negative_amounts(value: int | str | Decimal | float) -> None:
    with pytest.raises(ValueError, match="must not be negative"):
        parse_amount(value, "usd")


@pytest.mark.parametrize("value", ["abc", "", "1e3", "1,000", "$5", True, float("nan"), None])
def test_parse_amount_rejects_text_that_is_not_a_decimal_amount(value: object) -> None:
    with pytest.raises(ValueError):
        parse_amount(value, "usd")  # type: ignore[arg-type]


def test_parse_amount_allows_twelve_decimal_places_of_the_minor_unit() -> None:
    assert parse_amount("0.00000000000001", "usd") == Decimal("1E-12")
    with pytest.raises(ValueError, match="at most 14 decimal places"):
        parse_amount("0.000000000000001", "usd")


def test_parse_amount_rejects_unknown_currency() -> None:
    with pytest.raises(ValueError, match="'usdd' is not an ISO 4217 currency code"):
        parse_amount("1", "usdd")


def test_to_minor_int_refuses_sub_minor_precision() -> None:
    assert to_minor_int("29.00", "usd") == 2900
    with pytest.raises(ValueError, match=r"finer than the smallest unit of usd \(0\.01\)"):
        to_minor_int("0.005", "usd")
    with pytest.raises(ValueError, match=r"finer than the smallest unit of jpy \(1\)"):
        to_minor_int("1.5", "jpy")


@pytest.mark.parametrize(
    ("money", "text"),
    [
        (Money(2900, "usd"), "$29.00"),
        (Money(1100, "eur"), "€11.00"),
        (Money(500, "jpy"), "¥500"),
        (Money(29000, "kwd"), "29.000 KWD"),
        (Money(1200000, "usd"), "$12,000.00"),
        (Money(5, "cad"), "0.05 CAD"),
        (Money(-250, "gbp"), "-£2.50"),
        (Money(0, "usd"), "$0.00"),
    ],
)
def test_money_formats_for_people(money: Money, text: str) -> None:
    assert money.format() == text


def test_format_minor_shows_sub_minor_unit_prices() -> None:
    assert format_minor(Decimal("0.5"), "usd") == "$0.005"
    assert format_minor(Decimal(50), "usd") == "$0.50"


def test_money_serialises_as_amount_and_currency() -> None:
    assert Money(2900, "USD").to_json() == {"amount": 2900, "currency": "usd"}


def test_money_adds_and_subtracts_within_one_currency() -> None:
    assert Money(2900, "usd") + Money(100, "usd") == Money(3000, "usd")
    assert Money(2900, "usd") - Money(3000, "usd") == Money(-100, "usd")
    assert -Money(5, "eur") == Money(-5, "eur")


def test_money_refuses_to_mix_currencies() -> None:
    with pytest.raises(ValueError, match="cannot add eur and usd"):
        Money(1, "usd") + Money(1, "eur")
    with pytest.raises(ValueError, match="cannot subtract"):
        Money(1, "usd") - Money(1, "eur")


def test_money_refuses_non_integer_amounts() -> None:
    with pytest.raises(TypeError):
        Money(29.0, "usd")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        Money(Decimal(1), "usd")  # type: ignore[arg-type]


def test_money_from_major_units() -> None:
    assert Money.from_major("29.00", "usd") == Money(2900, "usd")
    assert Money.from_major(500, "jpy") == Money(500, "jpy")
    assert Money.zero("kwd") == Money(0, "kwd")


@given(
    amount_minor=st.integers(min_value=0, max_value=10**15),
    currency=st.sampled_from(sorted(CURRENCY_EXPONENTS)),
)
def test_formatted_major_amount_parses_back_to_the_same_minor_amount(
    amount_minor: int, currency: str
) -> None:
    exponent = CURRENCY_EXPONENTS[currency]
    major = format(Decimal(amount_minor).scaleb(-exponent), f".{exponent}f")
    assert to_minor_int(major, currency) == amount_minor
    shown = Money(amount_minor, currency).format()
    digits = shown.replace(",", "").removesuffix(f" {currency.upper()}").lstrip("$€£¥₹₩")
    assert to_minor_int(digits, currency) == amount_minor
