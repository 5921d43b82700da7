"""Currencies Stripe supports, and which of them have no minor unit."""

from __future__ import annotations

_CURRENCY_CODES = """
aed afn all amd ang aoa ars aud awg azn bam bbd bdt bgn bhd bif bmd bnd bob brl bsd bwp byn bzd cad
cdf chf clp cny cop crc cve czk djf dkk dop dzd egp etb eur fjd fkp gbp gel gip gmd gnf gtq gyd hkd
hnl htg huf idr ils inr isk jmd jod jpy kes kgs khr kmf krw kwd kyd kzt lak lbp lkr lrd lsl mad mdl
mga mkd mmk mnt mop mur mvr mwk mxn myr mzn nad ngn nio nok npr nzd omr pab pen pgk php pkr pln pyg
qar ron rsd rub rwf sar sbd scr sek sgd shp sle sos srd std szl thb tjs tnd top try ttd twd tzs uah
ugx usd uyu uzs vnd vuv wst xaf xcd xof xpf yer zar zmw
"""
CURRENCIES = frozenset(_CURRENCY_CODES.split())
# Amounts in these are whole units (no minor unit): 500 JPY is `unit_amount=500`.
_ZERO_DECIMAL_CODES = "bif clp djf gnf jpy kmf krw mga pyg rwf ugx vnd vuv xaf xof xpf"
ZERO_DECIMAL = frozenset(_ZERO_DECIMAL_CODES.split())


def format_amount(amount: int, currency: str) -> str:
    """`1999, "usd"` → `$19.99`; zero-decimal currencies stay whole (`500 JPY`)."""
    currency = currency.lower()
    if currency in ZERO_DECIMAL:
        return f"{amount:,} {currency.upper()}"
    whole, cents = divmod(abs(amount), 100)
    sign = "-" if amount < 0 else ""
    symbol = {"usd": "$", "eur": "€", "gbp": "£"}.get(currency)
    text = f"{whole:,}.{cents:02d}"
    return f"{sign}{symbol}{text}" if symbol else f"{sign}{text} {currency.upper()}"
