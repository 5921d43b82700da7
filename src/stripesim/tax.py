"""Automatic tax (Stripe Tax) from a small rate table: the jurisdictions a SaaS selling to
Quebec, the rest of Canada, the EU, the UK, Australia and New York registers in (issue 21).

An invoice with `automatic_tax.enabled` and no tax rates of its own is taxed at the rates of its
customer's address (country, and province or state where they differ); a customer `exempt` or
`reverse` (reverse charge) pays none. Each rate is a TaxRate object of the account, made on first
use, so lines and totals carry `tax_rate_details` as for rates set by hand.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from stripesim.registry import Ctx


@dataclass(frozen=True)
class Rate:
    """One tax of a jurisdiction, as a percentage of the taxable amount (exclusive)."""

    country: str
    state: str | None
    tax_type: str
    display_name: str
    percentage: str

    @property
    def key(self) -> str:
        return f"{self.country}-{self.state or '*'}-{self.tax_type}"


_EU_VAT = {"AT": "20", "BE": "21", "DE": "19", "DK": "25", "ES": "21", "FI": "25.5", "FR": "20"}
_EU_VAT |= {"IE": "23", "IT": "22", "NL": "21", "PL": "23", "PT": "23", "SE": "25"}

TABLE: dict[tuple[str, str | None], tuple[Rate, ...]] = {
    ("CA", "QC"): (
        Rate("CA", "QC", "gst", "GST", "5"),
        Rate("CA", "QC", "qst", "QST", "9.975"),
    ),
    ("CA", "ON"): (Rate("CA", "ON", "hst", "HST", "13"),),
    ("CA", None): (Rate("CA", None, "gst", "GST", "5"),),
    ("GB", None): (Rate("GB", None, "vat", "VAT", "20"),),
    ("AU", None): (Rate("AU", None, "gst", "GST", "10"),),
    ("US", "NY"): (Rate("US", "NY", "sales_tax", "Sales Tax", "4"),),
    **{(code, None): (Rate(code, None, "vat", "VAT", rate),) for code, rate in _EU_VAT.items()},
}


def rates_for(address: dict[str, Any] | None, tax_exempt: str | None) -> tuple[Rate, ...]:
    """The taxes of an address (none for an exempt or reverse-charge customer, or elsewhere)."""
    if tax_exempt in ("exempt", "reverse"):
        return ()
    country = str((address or {}).get("country") or "").upper()
    state = str((address or {}).get("state") or "").upper()
    return TABLE.get((country, state)) or TABLE.get((country, None)) or ()


def automatic_rates(ctx: Ctx, invoice: dict[str, Any]) -> list[str]:
    """The TaxRate ids Stripe Tax would apply to `invoice` (none unless automatic tax is on)."""
    if not (invoice.get("automatic_tax") or {}).get("enabled"):
        return []
    found = rates_for(invoice.get("customer_address"), invoice.get("customer_tax_exempt"))
    return [str(_stored(ctx, rate)["id"]) for rate in found]


def _stored(ctx: Ctx, rate: Rate) -> dict[str, Any]:
    marker = f"stripesim automatic tax {rate.key}"
    for existing in ctx.account.where("tax_rate", description=marker):
        return existing
    made = ctx.build(
        "tax_rate",
        "txr",
        created=ctx.now(),
        country=rate.country,
        description=marker,
        display_name=rate.display_name,
        effective_percentage=float(rate.percentage),
        jurisdiction=rate.state or rate.country,
        jurisdiction_level="state" if rate.state else "country",
        percentage=float(rate.percentage),
        state=rate.state,
        tax_type=rate.tax_type,
    )
    ctx.account.add(made)
    return made
