"""Represent money as integer minor units plus an ISO 4217 currency, as Stripe does."""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal

# Exponent of each active ISO 4217 currency: how many minor units make one major unit is
# 10 ** exponent. Codes are lowercase because Stripe's API is. Where Stripe's API disagrees with
# ISO 4217 Stripe wins, since these amounts go to Stripe: MGA and UGX are zero-decimal at Stripe,
# and ISK is sent as a two-decimal amount for backwards compatibility (ISO says 0).
CURRENCY_EXPONENTS: dict[str, int] = {
    "aed": 2, "afn": 2, "all": 2, "amd": 2, "ang": 2, "aoa": 2, "ars": 2, "aud": 2, "awg": 2,
    "azn": 2, "bam": 2, "bbd": 2, "bdt": 2, "bgn": 2, "bhd": 3, "bif": 0, "bmd": 2, "bnd": 2,
    "bob": 2, "bov": 2, "brl": 2, "bsd": 2, "btn": 2, "bwp": 2, "byn": 2, "bzd": 2, "cad": 2,
    "cdf": 2, "che": 2, "chf": 2, "chw": 2, "clf": 4, "clp": 0, "cny": 2, "cop": 2, "cou": 2,
    "crc": 2, "cuc": 2, "cup": 2, "cve": 2, "czk": 2, "djf": 0, "dkk": 2, "dop": 2, "dzd": 2,
    "egp": 2, "ern": 2, "etb": 2, "eur": 2, "fjd": 2, "fkp": 2, "gbp": 2, "gel": 2, "ghs": 2,
    "gip": 2, "gmd": 2, "gnf": 0, "gtq": 2, "gyd": 2, "hkd": 2, "hnl": 2, "htg": 2, "huf": 2,
    "idr": 2, "ils": 2, "inr": 2, "iqd": 3, "irr": 2, "isk": 2, "jmd": 2, "jod": 3, "jpy": 0,
    "kes": 2, "kgs": 2, "khr": 2, "kmf": 0, "kpw": 2, "krw": 0, "kwd": 3, "kyd": 2, "kzt": 2,
    "lak": 2, "lbp": 2, "lkr": 2, "lrd": 2, "lsl": 2, "lyd": 3, "mad": 2, "mdl": 2, "mga": 0,
    "mkd": 2, "mmk": 2, "mnt": 2, "mop": 2, "mru": 2, "mur": 2, "mvr": 2, "mwk": 2, "mxn": 2,
    "mxv": 2, "myr": 2, "mzn": 2, "nad": 2, "ngn": 2, "nio": 2, "nok": 2, "npr": 2, "nzd": 2,
    "omr": 3, "pab": 2, "pen": 2, "pgk": 2, "php": 2, "pkr": 2, "pln": 2, "pyg": 0, "qar": 2,
    "ron": 2, "rsd": 2, "rub": 2, "rwf": 0, "sar": 2, "sbd": 2, "scr": 2, "sdg": 2, "sek": 2,
    "sgd": 2, "shp": 2, "sle": 2, "sll": 2, "sos": 2, "srd": 2, "ssp": 2, "stn": 2, "svc": 2,
    "syp": 2, "szl": 2, "thb": 2, "tjs": 2, "tmt": 2, "tnd": 3, "top": 2, "try": 2, "ttd": 2,
    "twd": 2, "tzs": 2, "uah": 2, "ugx": 0, "usd": 2, "usn": 2, "uyi": 0, "uyu": 2, "uyw": 4,
    "uzs": 2, "ved": 2, "ves": 2, "vnd": 0, "vuv": 0, "wst": 2, "xaf": 0, "xcd": 2, "xcg": 2,
    "xof": 0, "xpf": 0, "yer": 2, "zar": 2, "zmw": 2, "zwg": 2,
}  # fmt: skip

# Stripe's unit_amount_decimal takes at most 12 decimal places of the minor unit.
MAX_SUB_MINOR_PLACES = 12

# Only unambiguous symbols: "$" alone would be wrong for cad, aud and the other dollars.
_SYMBOLS = {"usd": "$", "eur": "€", "gbp": "£", "jpy": "¥", "inr": "₹", "krw": "₩"}

_DECIMAL_TEXT = re.compile(r"-?\d+(\.\d+)?")


def normalize_currency(code: str) -> str:
    """Return the lowercase ISO 4217 code, or raise ValueError if it is not one."""
    if not isinstance(code, str):
        raise ValueError(f"{code!r} is not an ISO 4217 currency code")
    lowered = code.strip().lower()
    if lowered not in CURRENCY_EXPONENTS:
        raise ValueError(f"{code!r} is not an ISO 4217 currency code")
    return lowered


def currency_exponent(currency: str) -> int:
    """Return how many decimal places the currency's minor unit has."""
    return CURRENCY_EXPONENTS[normalize_currency(currency)]


def parse_amount(value: int | str | Decimal | float, currency: str) -> Decimal:
    """Convert an amount in major units ("29.00") to minor units (2900), sub-minor allowed."""
    exponent = currency_exponent(currency)
    major = _to_decimal(value)
    if major.is_signed() and major != 0:
        raise ValueError(f"amount {_show(value)} must not be negative")
    minor = _shift(abs(major), exponent)
    if minor == minor.to_integral_value():
        return Decimal(int(minor))
    minor = _strip_trailing_zeros(minor)
    places = -int(minor.as_tuple().exponent)
    if places > MAX_SUB_MINOR_PLACES:
        raise ValueError(
            f"amount {_show(value)} is too precise for {currency.lower()}: at most "
            f"{exponent + MAX_SUB_MINOR_PLACES} decimal places"
        )
    return minor


def to_minor_int(value: int | str | Decimal | float, currency: str) -> int:
    """Convert an amount in major units to a whole number of minor units."""
    minor = parse_amount(value, currency)
    if minor != minor.to_integral_value():
        exponent = currency_exponent(currency)
        smallest = format(Decimal(1).scaleb(-exponent), "f")
        raise ValueError(
            f"amount {_show(value)} is finer than the smallest unit of "
            f"{currency.lower()} ({smallest})"
        )
    return int(minor)


def format_minor(amount_minor: int | Decimal, currency: str) -> str:
    """Format minor units for people: "$29.00", "¥500", "29.000 KWD", "$0.005"."""
    code = normalize_currency(currency)
    exponent = CURRENCY_EXPONENTS[code]
    amount = Decimal(amount_minor)
    major = _shift(abs(amount), -exponent)
    # Show at least the currency's decimals, and more only for a sub-minor unit price.
    places = max(exponent, -int(_strip_trailing_zeros(major).as_tuple().exponent))
    text = f"{major:,.{places}f}"
    minus = "-" if amount < 0 else ""
    symbol = _SYMBOLS.get(code)
    if symbol is None:
        return f"{minus}{text} {code.upper()}"
    return f"{minus}{symbol}{text}"


@dataclass(frozen=True, slots=True)
class Money:
    """An amount of one currency in integer minor units (cents, yen, fils)."""

    amount_minor: int
    currency: str

    def __post_init__(self) -> None:
        if isinstance(self.amount_minor, bool) or not isinstance(self.amount_minor, int):
            raise TypeError(f"amount_minor must be an int, not {self.amount_minor!r}")
        object.__setattr__(self, "currency", normalize_currency(self.currency))

    @classmethod
    def zero(cls, currency: str) -> Money:
        """Return no money in the currency."""
        return cls(0, currency)

    @classmethod
    def from_major(cls, value: int | str | Decimal | float, currency: str) -> Money:
        """Build from an amount in major units, e.g. Money.from_major("29.00", "usd")."""
        return cls(to_minor_int(value, currency), currency)

    def __add__(self, other: object) -> Money:
        if not isinstance(other, Money):
            return NotImplemented
        self._check_same_currency(other, "add")
        return Money(self.amount_minor + other.amount_minor, self.currency)

    def __sub__(self, other: object) -> Money:
        if not isinstance(other, Money):
            return NotImplemented
        self._check_same_currency(other, "subtract")
        return Money(self.amount_minor - other.amount_minor, self.currency)

    def __neg__(self) -> Money:
        return Money(-self.amount_minor, self.currency)

    @property
    def major(self) -> Decimal:
        """Return the amount in major units, exactly ("29.00" for 2900 cents)."""
        return _shift(Decimal(self.amount_minor), -CURRENCY_EXPONENTS[self.currency])

    def to_json(self) -> dict[str, int | str]:
        """Return the API shape {"amount": minor units, "currency": code}."""
        return {"amount": self.amount_minor, "currency": self.currency}

    def format(self) -> str:
        """Return the amount for people, e.g. "$29.00", "¥500" or "29.000 KWD"."""
        return format_minor(self.amount_minor, self.currency)

    def _check_same_currency(self, other: Money, verb: str) -> None:
        if other.currency != self.currency:
            raise ValueError(f"cannot {verb} {other.currency} and {self.currency} amounts")


def _to_decimal(value: int | str | Decimal | float) -> Decimal:
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not an amount")
    if isinstance(value, int):
        result = Decimal(value)
    elif isinstance(value, float):
        # repr() gives the shortest text that round-trips, so 29.0 becomes 29.0, not
        # 29.0000000000000003552713678800500929355621337890625.
        result = Decimal(repr(value))
    elif isinstance(value, Decimal):
        result = value
    elif isinstance(value, str):
        text = value.strip()
        if not _DECIMAL_TEXT.fullmatch(text):
            raise ValueError(f'{value!r} is not a decimal amount such as "29.00"')
        result = Decimal(text)
    else:
        raise ValueError(f"{value!r} is not an amount")
    if not result.is_finite():
        raise ValueError(f"{value!r} is not a finite amount")
    return result


def _shift(value: Decimal, places: int) -> Decimal:
    # Moving the exponent is exact; Decimal.scaleb() would round at the context precision.
    sign, digits, exp = value.as_tuple()
    assert isinstance(exp, int)  # finite
    return Decimal((sign, digits, exp + places))


def _strip_trailing_zeros(value: Decimal) -> Decimal:
    # Decimal.normalize() would also round to the context precision; this stays exact.
    sign, digits, exp = value.as_tuple()
    assert isinstance(exp, int)
    trimmed = list(digits)
    while exp < 0 and len(trimmed) > 1 and trimmed[-1] == 0:
        trimmed.pop()
        exp += 1
    return Decimal((sign, tuple(trimmed), exp))


def _show(value: object) -> str:
    return repr(value) if isinstance(value, str) else str(value)
