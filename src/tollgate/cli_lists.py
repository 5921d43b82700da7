"""`tollgate customers list` and `tollgate outbox list`: what the console's lists show, in a
terminal (a table, or one JSON object per row with --json), over the same services.

Commands import the services inside themselves, as in tollgate.cli: every other command, and
`--help`, then starts without loading them."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from tollgate.cli_support import migrated_database, one_line_errors, settings, table

customers_app = typer.Typer(help="The billing customers: list and search.", no_args_is_help=True)
outbox_app = typer.Typer(
    help="Emails and app webhooks waiting, sent or given up on.", no_args_is_help=True
)


@customers_app.command("list")
@one_line_errors
def customers_list(
    search: Annotated[
        str | None, typer.Option("--search", "-q", help="Id, email, name or Stripe id.")
    ] = None,
    plan: Annotated[str | None, typer.Option(help="Only customers on this plan.")] = None,
    status: Annotated[
        str | None,
        typer.Option(
            help="trialing, active, canceling, past_due, unpaid, incomplete, paused, canceled,"
            " none."
        ),
    ] = None,
    over: Annotated[
        int | None, typer.Option(min=1, help="Only customers over this % of a limit.")
    ] = None,
    limit: Annotated[
        int, typer.Option(min=1, max=200, help="How many to show (at most 200).")
    ] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per customer.")] = False,
) -> None:
    """List customers, newest first: id, email, plan, status, currency, since when."""
    from tollgate.bootstrap import Container
    from tollgate.catalog_file import load_catalog_file
    from tollgate.services.console import CustomerQuery, list_customers

    catalog = load_catalog_file(settings().catalog_path)
    query = CustomerQuery(search=search, plan=plan, status=status, over_percent=over)
    with migrated_database() as database:
        deps = Container(settings=settings(), db=database, catalog_override=catalog)
        page = list_customers(deps, query=query, limit=limit)
    if as_json:
        for customer in page.items:
            typer.echo(json.dumps(customer.to_json()))
        return
    if not page.items:
        typer.echo("no customers" + (" match" if search or plan or status or over else ""))
        return
    table(
        ("id", "email", "plan", "status", "currency", "created (UTC)", "stripe id"),
        [
            (
                row.id,
                row.email or "-",
                row.plan or "-",
                row.status,
                (row.currency or "-").upper(),
                f"{row.created:%Y-%m-%d %H:%M}",
                row.stripe_customer_id or "-",
            )
            for row in page.items
        ],
    )
    if page.next_cursor:
        typer.echo("(more: raise --limit, or page with GET /v1/customers?cursor=…)", err=True)


@outbox_app.command("list")
@one_line_errors
def outbox_list(
    kind: Annotated[str | None, typer.Option(help="email, app_webhook or usage.")] = None,
    status: Annotated[
        str | None, typer.Option(help="pending, claimed, sent, delivered, failed or skipped.")
    ] = None,
    customer: Annotated[str | None, typer.Option(help="Only this customer's.")] = None,
    limit: Annotated[
        int, typer.Option(min=1, max=200, help="How many to show (at most 200).")
    ] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per item.")] = False,
) -> None:
    """List emails, app webhooks and usage reports to Stripe, newest first, with their status,
    attempts and last error."""
    from tollgate.services.console import list_outbox

    with migrated_database() as database:
        page = list_outbox(db=database, kind=kind, status=status, customer_id=customer, limit=limit)
    if as_json:
        for item in page.items:
            typer.echo(json.dumps(item.to_json()))
        return
    if not page.items:
        typer.echo(
            "the outbox is empty" + (" for that filter" if kind or status or customer else "")
        )
        return
    errors = any(item.last_error for item in page.items)
    headers = ("created (UTC)", "kind", "name", "customer", "status", "attempts", "id")
    table(
        (*headers, "last error") if errors else headers,
        [
            (
                f"{item.created:%Y-%m-%d %H:%M:%S}",
                item.kind,
                item.name,
                item.customer_id,
                item.status,
                item.attempts,
                item.reference,
                *([item.last_error or ""] if errors else []),
            )
            for item in page.items
        ],
    )
