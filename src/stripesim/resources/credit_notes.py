"""Credit notes: issue, preview, read, update, void, list (routes over billing.credit_notes)."""

from __future__ import annotations

from typing import Any

from stripesim.billing import credit_notes
from stripesim.lists import paginate, update_metadata
from stripesim.registry import Ctx, changed_since, list_route, retrieve_route, route
from stripesim.state import snapshot

KIND = credit_notes.KIND


def _note(ctx: Ctx, note_id: str) -> dict[str, Any]:
    return ctx.account.get(note_id, KIND, label="credit note")


@route("POST", "/v1/credit_notes", "CreditNoteCreateParams")
def create_credit_note(ctx: Ctx, params: dict[str, Any]) -> dict[str, Any]:
    note = credit_notes.build_credit_note(ctx, params, store=True)
    return credit_notes.issue(ctx, note)


@route("GET", "/v1/credit_notes/preview", "CreditNotePreviewParams")
def preview_credit_note(ctx: Ctx, params: dict[str, Any]) -> dict[str, Any]:
    return credit_notes.build_credit_note(ctx, params, store=False)


@route("GET", "/v1/credit_notes/preview/lines", "CreditNotePreviewLinesListParams")
def preview_credit_note_lines(ctx: Ctx, params: dict[str, Any]) -> dict[str, Any]:
    note = credit_notes.build_credit_note(ctx, params, store=False)
    lines = list(reversed(note["lines"]["data"]))  # lists page newest first
    return paginate(
        ctx.account, credit_notes.LINE, params, "/v1/credit_notes/preview/lines", objects=lines
    )


retrieve_route("/v1/credit_notes/{note_id}", KIND, "CreditNoteRetrieveParams", label="credit note")


@route("POST", "/v1/credit_notes/{note_id}", "CreditNoteUpdateParams")
def update_credit_note(ctx: Ctx, params: dict[str, Any], note_id: str) -> dict[str, Any]:
    note = _note(ctx, note_id)
    before = snapshot(note)
    if "memo" in params:
        note["memo"] = params["memo"] or None
    update_metadata(note, params.get("metadata"))
    now = ctx.now_for_customer(note["customer"])
    ctx.emit_update("credit_note.updated", note, changed_since(before, note), created=now)
    return note


@route("POST", "/v1/credit_notes/{note_id}/void", "CreditNoteVoidCreditNoteParams")
def void_credit_note(ctx: Ctx, params: dict[str, Any], note_id: str) -> dict[str, Any]:
    return credit_notes.void(ctx, _note(ctx, note_id))


@route("GET", "/v1/credit_notes/{note_id}/lines", "CreditNoteLineItemListParams")
def list_credit_note_lines(ctx: Ctx, params: dict[str, Any], note_id: str) -> dict[str, Any]:
    note = _note(ctx, note_id)
    lines = list(reversed(note["lines"]["data"]))
    return paginate(
        ctx.account, credit_notes.LINE, params, f"/v1/credit_notes/{note_id}/lines", objects=lines
    )


list_route("/v1/credit_notes", KIND, "CreditNoteListParams", filters=("customer", "invoice"))
