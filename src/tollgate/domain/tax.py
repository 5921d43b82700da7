"""Tax rules Tollgate checks itself (issue 21): a customer's tax status and tax IDs, and the
address automatic tax needs before a subscription is made.

The taxes themselves are Stripe's (Stripe Tax computes them from the customer's address); this
module only refuses what Stripe would refuse later, or too late.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tollgate.domain.errors import InvalidRequest, TollgateError

# Stripe's `tax_exempt`: `exempt` pays no tax; `reverse` (reverse charge) leaves the tax to the
# buyer, who accounts for it in its own country, and the invoice says so.
TAX_EXEMPT_STATUSES = ("none", "exempt", "reverse")
# Stripe's tax ID types are a country code then a kind (`eu_vat`, `gb_vat`, `ca_qst`, `au_abn`…);
# Stripe itself refuses a type it does not know, with a message naming the field.
_TAX_ID_TYPE = re.compile(r"^[a-z]{2}_[a-z_]{2,16}$")
MAX_TAX_IDS = 25  # as many as Stripe keeps on a customer


# What an invoice says about a tax it does not charge.
_TAX_NOTES = {"reverse": "Reverse charge", "exempt": "Tax exempt"}


def tax_note(tax_exempt: str | None) -> str | None:
    """Return the note an invoice for a customer of this tax status carries (none: None)."""
    return _TAX_NOTES.get(tax_exempt or "")


class AddressRequired(TollgateError):
    """Automatic tax is on and the customer has no billing address to tax by."""

    type = "address_required"
    status = 400


@dataclass(frozen=True, slots=True)
class TaxIdEntry:
    """A tax ID as the app gives it."""

    type: str
    value: str


def check_tax_exempt(value: Any) -> str:
    """Return the tax status, or raise InvalidRequest."""
    if value not in TAX_EXEMPT_STATUSES:
        raise InvalidRequest(
            f"tax_exempt must be one of {', '.join(TAX_EXEMPT_STATUSES)}", param="tax_exempt"
        )
    return str(value)


def check_tax_ids(entries: Sequence[Mapping[str, Any]]) -> list[TaxIdEntry]:
    """Return the tax IDs, each `{type, value}` (spaces dropped, upper case), or raise."""
    if len(entries) > MAX_TAX_IDS:
        raise InvalidRequest(f"at most {MAX_TAX_IDS} tax IDs", param="tax_ids")
    found: list[TaxIdEntry] = []
    for index, entry in enumerate(entries):
        kind, value = entry.get("type"), entry.get("value")
        if set(entry) - {"type", "value"}:
            raise InvalidRequest("a tax ID has only `type` and `value`", param=f"tax_ids[{index}]")
        if not isinstance(kind, str) or not _TAX_ID_TYPE.match(kind):
            raise InvalidRequest(
                "tax ID type must be Stripe's, such as eu_vat, gb_vat, ca_gst_hst or au_abn",
                param=f"tax_ids[{index}].type",
            )
        if not isinstance(value, str) or not 1 <= len(value.strip()) <= 64:
            raise InvalidRequest(
                "tax ID value must be text of 1 to 64 characters",
                param=f"tax_ids[{index}].value",
            )
        tax_id = TaxIdEntry(kind, value.replace(" ", "").upper())
        if tax_id in found:
            raise InvalidRequest("the same tax ID twice", param=f"tax_ids[{index}]")
        found.append(tax_id)
    return found


def require_address(address: Mapping[str, Any] | None, *, automatic_tax: bool) -> None:
    """Refuse a subscription automatic tax cannot tax: no address, or one without a country."""
    if automatic_tax and not (address or {}).get("country"):
        raise AddressRequired(
            "automatic tax is on (STRIPE_AUTOMATIC_TAX) and this customer has no billing "
            "address: set one with PATCH /v1/customers/{id} "
            '{"address": {"country": …, "postal_code": …}} or subscribe through Checkout, '
            "which asks for it",
            param="address",
        )
