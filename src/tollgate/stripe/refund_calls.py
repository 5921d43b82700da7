"""Stripe calls that give money back: refunds of a charge, and credit notes that refund a paid
invoice (issue 21)."""

from __future__ import annotations

from typing import Any

from tollgate.stripe.calls import StripeCalls


class RefundCalls(StripeCalls):
    """Refunds; `StripeGateway` mixes them in."""

    def refund_charge(
        self,
        *,
        charge_id: str,
        amount_minor: int | None,
        reason: str | None,
        metadata: dict[str, str],
        idempotency_key: str,
    ) -> dict[str, Any]:
        """Refund `amount_minor` of a charge (all that is left when None); returns the refund."""
        params: dict[str, Any] = {"charge": charge_id, "metadata": metadata}
        if amount_minor is not None:
            params["amount"] = amount_minor
        if reason is not None:
            params["reason"] = reason
        return self._call_json(
            "refunds.create",
            self._client.v1.refunds.create,
            params=params,
            idempotency_key=idempotency_key,
        )

    def refund_invoice(
        self,
        *,
        invoice_id: str,
        amount_minor: int,
        reason: str | None,
        metadata: dict[str, str],
        idempotency_key: str,
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """Refund part or all of a paid invoice with a credit note, as Stripe's dashboard does;
        returns (the credit note, its refund)."""
        params: dict[str, Any] = {
            "invoice": invoice_id,
            "amount": amount_minor,
            "refund_amount": amount_minor,
            "metadata": metadata,
        }
        if reason in ("duplicate", "fraudulent"):  # a credit note's reasons are its own
            params["reason"] = reason
        note = self._call_json(
            "credit_notes.create",
            self._client.v1.credit_notes.create,
            params=params,
            idempotency_key=idempotency_key,
        )
        refund_id = next(
            (entry.get("refund") for entry in note.get("refunds") or [] if entry.get("refund")),
            None,
        )
        if isinstance(refund_id, dict):
            refund_id = refund_id.get("id")
        if not isinstance(refund_id, str):
            return note, {}
        return note, self._call_json(
            "refunds.retrieve", self._client.v1.refunds.retrieve, refund_id
        )
