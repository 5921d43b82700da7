"""The `tollgate` command. Each command is a few lines over a service; errors are one line.

Commands import the server, the database, the services and the Stripe SDK inside themselves, on
purpose: importing them up front would make every command, `--help` included, wait for all of
them (measured: `import tollgate.cli` 0.7 s, with those modules 5.4 s on a busy two-core
machine). What is light (the standard library, the clock, money, the pure domain) is imported
here at the top.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from tollgate.cli_lists import customers_app, outbox_app
from tollgate.cli_support import fail, one_line_errors
from tollgate.cli_support import migrated_database as _migrated_database
from tollgate.cli_support import progress as _progress
from tollgate.cli_support import settings as _settings
from tollgate.cli_support import table as _table
from tollgate.clock import SystemClock
from tollgate.config import ConfigError
from tollgate.domain.operators import password_problem, role_problem
from tollgate.domain.reconcile import DriftKind, parse_window, values_text
from tollgate.money import Money

app = typer.Typer(
    help="Tollgate: billing, entitlements and usage metering on Stripe.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
db_app = typer.Typer(
    help="Database: migrations, and pruning raw usage events.", no_args_is_help=True
)
catalog_app = typer.Typer(
    help="Plans as code: validate, diff and sync the catalog.", no_args_is_help=True
)
apikeys_app = typer.Typer(help="API keys for the HTTP API.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(catalog_app, name="catalog")
app.add_typer(apikeys_app, name="apikeys")
events_app = typer.Typer(
    help="Stripe events received at /webhooks/stripe: list, replay, retry.", no_args_is_help=True
)
app.add_typer(events_app, name="events")
emails_app = typer.Typer(help="The emails Tollgate sends: preview one.", no_args_is_help=True)
app.add_typer(emails_app, name="emails")
app.add_typer(customers_app, name="customers")
app.add_typer(outbox_app, name="outbox")
operators_app = typer.Typer(
    help="People who sign in to the operator console (/console).", no_args_is_help=True
)
app.add_typer(operators_app, name="operators")

DEV_DIR = ".tollgate-dev"


@app.callback()
def main_options(
    dev: Annotated[
        bool,
        typer.Option(
            "--dev",
            help=f"Use the running `tollgate dev` (its settings in {DEV_DIR}/env).",
        ),
    ] = False,
) -> None:
    """Tollgate: billing, entitlements and usage metering on Stripe."""
    if dev:
        _use_dev_settings(Path(DEV_DIR) / "env")


def _use_dev_settings(path: Path) -> None:
    """Load the `export NAME=value` lines `tollgate dev` wrote into this process's environment."""
    if not path.exists():
        fail(f"{path} not found: start the dev instance with `make dev` (or `tollgate dev`) here")
    for line in path.read_text().splitlines():
        if line.startswith("export "):
            name, _, quoted = line.removeprefix("export ").partition("=")
            values = shlex.split(quoted)
            os.environ[name] = values[0] if values else ""


# -- serve ----------------------------------------------------------------------------------


@app.command()
@one_line_errors
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
) -> None:
    """Run the API server (the database must be migrated: `tollgate db upgrade`)."""
    from tollgate.server import run_server

    run_server(_settings(), host=host, port=port)


dev_app = typer.Typer(
    help="The simulator, the server on SQLite, the demo catalog and data, one clock.",
    invoke_without_command=True,
)
app.add_typer(dev_app, name="dev")


@dev_app.callback()
@one_line_errors
def dev(
    context: typer.Context,
    port: Annotated[int, typer.Option(help="Port of the Tollgate API.")] = 8000,
    stripe_port: Annotated[int, typer.Option(help="Port of the simulated Stripe.")] = 12111,
    data_dir: Annotated[
        Path, typer.Option(help="Where the dev database lives (recreated).")
    ] = Path(DEV_DIR),
    catalog: Annotated[
        Path | None,
        typer.Option(help="Your plans YAML (default: the example catalog); checked first."),
    ] = None,
) -> None:
    """Start the Stripe simulator and the server on SQLite with the demo catalog and data."""
    if context.invoked_subcommand is not None:
        return
    from tollgate.devserver import run_dev

    run_dev(port=port, stripe_port=stripe_port, data_dir=data_dir, catalog=catalog)


@dev_app.command("advance")
@one_line_errors
def dev_advance(
    by: Annotated[
        str, typer.Argument(help="How far: 90m, 12h, 3d, 2w, 1mo, 1y, or an ISO 8601 time.")
    ],
) -> None:
    """Move the running dev instance's clocks forward: the simulated Stripe's and Tollgate's."""
    import httpx

    if not os.environ.get("TOLLGATE_URL"):
        _use_dev_settings(Path(DEV_DIR) / "env")
    url, key = os.environ["TOLLGATE_URL"], os.environ.get("TOLLGATE_API_KEY", "")
    try:
        answer = httpx.post(
            f"{url}/dev/clock/advance",
            json={"by": by},
            headers={"Authorization": f"Bearer {key}"},
            timeout=600,
        )
    except httpx.TransportError:
        fail(f"no dev instance answers at {url}: is `make dev` running?")
    body = answer.json()
    if answer.status_code != 200:
        fail(str(body.get("error", {}).get("message", answer.text)))
    typer.echo(
        f"Stripe (simulated) is at {body['stripe_time']}, Tollgate at {body['tollgate_time']}"
    )


@app.command()
@one_line_errors
def worker(
    once: Annotated[bool, typer.Option("--once", help="Run every job once, then exit.")] = False,
    metrics_port: Annotated[
        int | None,
        typer.Option(help="Serve this worker's Prometheus metrics (jobs, queues) on this port."),
    ] = None,
    metrics_host: Annotated[str, typer.Option(help="Address of the metrics port.")] = "127.0.0.1",
) -> None:
    """Run the scheduled jobs (webhook retries, pending plan changes) until stopped."""
    from tollgate.bootstrap import build_container
    from tollgate.jobs.schedule import SCHEDULE, Worker, summarize
    from tollgate.logs import configure_logging
    from tollgate.server import require_migrated
    from tollgate.shutdown import GracefulStop

    settings = _settings()
    if not once:
        configure_logging(settings.log_format)
    container = build_container(settings)
    require_migrated(container.db)
    runner = Worker(container)
    if once:
        reports = runner.run_due()
        _table(("job", "what it did"), [(name, summarize(r)) for name, r in reports.items()])
        if any(isinstance(report, Exception) for report in reports.values()):
            raise typer.Exit(1)
        return
    # SIGTERM: the job running finishes, no other starts; past TOLLGATE_SHUTDOWN_GRACE, exit.
    stop = GracefulStop(container.settings.shutdown_grace_seconds).install()
    if metrics_port is not None:
        from prometheus_client import start_http_server

        start_http_server(metrics_port, addr=metrics_host)
    typer.echo("worker running: " + ", ".join(f"{job.name} every {job.every}" for job in SCHEDULE))
    try:
        runner.run_forever(stop.event)
    finally:
        container.close()
        stop.done()
    typer.echo("worker stopped")


# -- doctor -----------------------------------------------------------------------------------


@app.command()
def doctor(
    public_url: Annotated[
        str | None,
        typer.Option(help="Tollgate's public URL, to find its webhook endpoint at Stripe."),
    ] = None,
) -> None:
    """Check configuration, database, migrations, Redis, Stripe, webhooks and catalog: a line
    each; exit 1 if any check failed (warnings do not fail)."""
    from tollgate.bootstrap import build_container
    from tollgate.doctor import run_checks

    try:
        settings = _settings()
    except ConfigError as error:
        typer.echo(f"fail  {'configuration':<14} {error}")
        raise typer.Exit(1) from None
    container = build_container(settings)
    failed = False
    try:
        for check in run_checks(container, clock=SystemClock(), public_url=public_url):
            typer.echo(f"{check.status:<5} {check.name:<14} {check.detail}")
            failed = failed or check.status == "fail"
    finally:
        container.close()
    raise typer.Exit(1 if failed else 0)


# -- db ---------------------------------------------------------------------------------------


@db_app.command("upgrade")
@one_line_errors
def db_upgrade(revision: Annotated[str, typer.Argument(help="Target revision.")] = "head") -> None:
    """Apply migrations up to REVISION (default: the newest)."""
    from tollgate.db.migrate import upgrade

    settings = _settings()
    upgrade(settings.migration_url, revision, pooler=settings.migration_pooler)
    typer.echo(f"database at {revision}")


@db_app.command("downgrade")
@one_line_errors
def db_downgrade(revision: Annotated[str, typer.Argument(help="Target revision.")]) -> None:
    """Revert migrations down to REVISION (`base` removes every table)."""
    from tollgate.db.migrate import downgrade

    settings = _settings()
    downgrade(settings.migration_url, revision, pooler=settings.migration_pooler)
    typer.echo(f"database at {revision}")


@db_app.command("current")
@one_line_errors
def db_current() -> None:
    """Print the database's migration revision and the newest one."""
    from tollgate.bootstrap import open_database
    from tollgate.db.migrate import current_revision, head_revision

    settings = _settings()
    database = open_database(settings)
    newest = head_revision(settings.database_url)
    missing = database.missing_file()
    current = f"none (no database at {missing})" if missing else current_revision(database.engine)
    typer.echo(f"current: {current}  newest: {newest}")


@db_app.command("prune-usage")
@one_line_errors
def db_prune_usage() -> None:
    """Prune raw usage events past TOLLGATE_USAGE_RAW_RETENTION_DAYS (the worker does it hourly)."""
    from tollgate.bootstrap import build_container
    from tollgate.server import require_migrated
    from tollgate.services.usage.storage import maintain_usage_storage

    container = build_container(_settings())
    try:
        require_migrated(container.db)
        report = maintain_usage_storage(
            db=container.db, clock=container.clock, settings=container.settings
        )
    finally:
        container.close()
    typer.echo(
        f"pruned {report.events_pruned:,} raw usage events from before "
        f"{report.cutoff.isoformat()} ({report.partitions_dropped} monthly partitions dropped, "
        f"{report.partitions_made} made ahead)"
    )


# -- catalog ----------------------------------------------------------------------------------


def _catalog_path(path: Path | None) -> Path:
    if path is not None:
        return path
    return _settings().catalog_path


@catalog_app.command("validate")
@one_line_errors
def catalog_validate(
    path: Annotated[
        Path | None, typer.Argument(help="Catalog file (default: TOLLGATE_CATALOG).")
    ] = None,
) -> None:
    """Check the catalog file; print every problem with the path of the offending key."""
    from tollgate.catalog_file import load_catalog_file

    target = _catalog_path(path)
    catalog = load_catalog_file(target)
    typer.echo(f"{target}: ok ({len(catalog.plans)} plans, {len(catalog.features)} features)")


def _gateway_and_catalog(path: Path | None) -> tuple[Any, Any]:
    from tollgate.catalog_file import load_catalog_file
    from tollgate.stripe.gateway import StripeGateway

    settings = _settings()
    catalog = load_catalog_file(path or settings.catalog_path)
    return StripeGateway.from_settings(settings), catalog


def _versions_database() -> Any:
    """The migrated database plan versions are kept in, or None (with a note on stderr)."""
    from tollgate.db.migrate import current_revision, head_revision
    from tollgate.db.unit_of_work import Database

    settings = _settings()
    database = Database(settings.database_url)
    if database.missing_file() is None and current_revision(database.engine) == head_revision(
        database.url
    ):
        return database
    database.dispose()
    typer.echo(
        "note: TOLLGATE_DATABASE_URL is not a migrated database: plans are not versioned and "
        "servers are not told of this catalog (run `tollgate db upgrade` first)",
        err=True,
    )
    return None


@catalog_app.command("diff")
@one_line_errors
def catalog_diff(
    path: Annotated[
        Path | None, typer.Argument(help="Catalog file (default: TOLLGATE_CATALOG).")
    ] = None,
) -> None:
    """Show what `catalog sync` would change in Stripe (and which plans get a new version, with
    how many subscribers stay on the earlier one), one line per change."""
    from tollgate.services.catalog import diff_catalog

    gateway, catalog = _gateway_and_catalog(path)
    changes = diff_catalog(catalog=catalog, gateway=gateway, db=_versions_database())
    for change in changes:
        typer.echo(change.describe())
    typer.echo(
        f"{len(changes)} change(s)" if changes else "Stripe matches the catalog: nothing to do"
    )


@catalog_app.command("sync")
@one_line_errors
def catalog_sync(
    path: Annotated[
        Path | None, typer.Argument(help="Catalog file (default: TOLLGATE_CATALOG).")
    ] = None,
) -> None:
    """Create or update products, prices and meters in Stripe, version changed plans (existing
    subscribers keep theirs) and tell every server of the new catalog; running it twice changes
    nothing."""

    from tollgate.services.catalog import sync_catalog

    gateway, catalog = _gateway_and_catalog(path)
    database = _versions_database()
    with _progress() as bar:
        task = bar.add_task("syncing the catalog with Stripe", total=None)
        changes = sync_catalog(
            catalog=catalog,
            gateway=gateway,
            progress=lambda change, done, total: bar.update(task, completed=done, total=total),
            db=database,
            now=datetime.now(UTC),
        )
    for change in changes:
        typer.echo(change.describe())
    typer.echo(
        f"{len(changes)} change(s) made" if changes else "Stripe matches the catalog: nothing to do"
    )


# -- plans: versions and migrations (issue 20) -----------------------------------------------

plans_app = typer.Typer(
    help="Plan versions: move subscribers from one version to another.", no_args_is_help=True
)
app.add_typer(plans_app, name="plans")


def _customer_ids(path: Path | None) -> tuple[str, ...] | None:
    if path is None:
        return None
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as error:
        fail(f"--customers: cannot read {path}: {error.strerror or error}")
    return tuple(line.strip() for line in lines if line.strip() and not line.startswith("#"))


def _money_text(amount: int | None, currency: str | None) -> str:

    if amount is None or currency is None:
        return "-"
    return Money(amount, currency).format()


@plans_app.command("migrate")
@one_line_errors
def plans_migrate(
    plan: Annotated[str, typer.Argument(help="The plan whose subscribers move.")],
    from_version: Annotated[int, typer.Option("--from", help="The version they are on.")],
    to_version: Annotated[int, typer.Option("--to", help="The version they move to.")],
    at: Annotated[
        str, typer.Option(help="renewal: from each one's next renewal; now: at once.")
    ] = "renewal",
    proration: Annotated[
        str, typer.Option(help="create_prorations, always_invoice or none.")
    ] = "none",
    customers: Annotated[
        Path | None, typer.Option(help="A file of customer ids (one a line): only these move.")
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show each price change; change nothing.")
    ] = False,
    notify: Annotated[
        bool, typer.Option(help="Email each customer the date and the new price first.")
    ] = False,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask before migrating.")] = False,
    limit: Annotated[int, typer.Option(min=0, help="Customers listed in the preview.")] = 50,
) -> None:
    """Preview each subscriber's price change, then move them; run again to resume."""
    from tollgate.bootstrap import build_container
    from tollgate.server import require_migrated
    from tollgate.services.plan_migrations import (
        MigrationRequest,
        preview_plan_migration,
        run_plan_migration,
        start_plan_migration,
    )

    request = MigrationRequest(
        plan=plan,
        from_version=from_version,
        to_version=to_version,
        at=at,
        proration=proration,
        customers=_customer_ids(customers),
        notify=notify,
    )
    container = build_container(_settings())
    try:
        require_migrated(container.db)
        catalog = container.catalog
        lines = preview_plan_migration(
            db=container.db, catalog=catalog, clock=container.clock, request=request
        )
        rows = [
            (
                line.customer_id,
                line.interval,
                _money_text(line.old_amount_minor, line.currency),
                _money_text(line.new_amount_minor, line.currency),
                line.effective_at.date().isoformat() if line.effective_at else "-",
                line.error or "",
            )
            for line in lines
        ]
        _table(("customer", "interval", "now", "then", "from", "note"), rows[:limit])
        if len(rows) > limit:
            typer.echo(f"… and {len(rows) - limit:,} more")
        moving = sum(1 for line in lines if line.status == "pending")
        typer.echo(
            f"{moving:,} of {len(lines):,} subscriber(s) of {plan} v{from_version} move to "
            f"v{to_version} at {at}"
        )
        if dry_run:
            return
        if not yes:
            if not sys.stdin.isatty():
                fail("pass --yes to migrate without being asked (or --dry-run to only look)")
            typer.confirm("Migrate them?", abort=True)
        started = start_plan_migration(
            db=container.db, catalog=catalog, clock=container.clock, request=request, actor="cli"
        )
        typer.echo(f"migration {started.id}: {sum(started.counts.values()):,} subscriber(s)")
        with _progress() as bar:
            task = bar.add_task(f"migrating {plan} v{from_version} -> v{to_version}", total=None)
            finished = run_plan_migration(
                db=container.db,
                catalog=catalog,
                gateway=container.stripe,
                clock=container.clock,
                migration_id=started.id,
                progress=lambda done, total: bar.update(task, completed=done, total=total),
            )
        counts = ", ".join(
            f"{count:,} {status}" for status, count in sorted(finished.counts.items())
        )
        typer.echo(f"migration {finished.id}: {finished.status} ({counts})")
        for line in finished.lines:
            if line.status == "failed":
                typer.echo(f"  {line.customer_id}: {line.error}", err=True)
        if finished.status != "done":
            raise typer.Exit(1)
    finally:
        container.close()


# -- api keys ---------------------------------------------------------------------------------


@apikeys_app.command("create")
@one_line_errors
def apikeys_create(
    name: Annotated[str, typer.Option(help="Who the key is for, e.g. 'web-app'.")],
    scope: Annotated[
        str, typer.Option(help="read (GET routes and entitlement checks) or write.")
    ] = "write",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Make an API key; its secret is printed once and stored only as a hash."""
    from tollgate.bootstrap import open_database
    from tollgate.server import require_migrated
    from tollgate.services.api_keys import create_api_key

    database = open_database(_settings())
    require_migrated(database)
    created = create_api_key(db=database, clock=SystemClock(), name=name, scope=scope)
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "id": created.id,
                    "name": created.name,
                    "scope": created.scope,
                    "secret": created.secret,
                }
            )
        )
    else:
        typer.echo(f"created key '{created.name}' ({created.scope}): {created.secret}")
        typer.echo("store it now: Tollgate keeps only its hash.")


# -- console operators --------------------------------------------------------------------------


@operators_app.command("create")
@one_line_errors
def operators_create(
    name: Annotated[str, typer.Argument(help="The operator's sign-in name, e.g. 'ada'.")],
    role: Annotated[
        str,
        typer.Option(
            help="readonly (sees), support (also acts on customers) or admin (also catalog, "
            "operators and API keys)."
        ),
    ],
) -> None:
    """Make a console operator; the password is asked for (twice) and kept as an argon2 hash."""
    from tollgate.services.operators import create_operator

    problem = role_problem(role)
    if problem:
        fail(f"--role: {problem}")
    password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    problem = password_problem(password)
    if problem:
        fail(problem)
    with _migrated_database() as database:
        made = create_operator(
            db=database, clock=SystemClock(), name=name, role=role, password=password
        )
    typer.echo(f"created operator '{made.id}' ({made.role}); sign in at /console")


@operators_app.command("list")
@one_line_errors
def operators_list() -> None:
    """List the console's operators with their roles."""
    from tollgate.services.operators import list_operators

    with _migrated_database() as database:
        found = list_operators(db=database)
    _table(
        ("name", "role", "created"),
        [(o.id, o.role, o.created_at.strftime("%Y-%m-%d %H:%M")) for o in found],
    )


@operators_app.command("sign-out")
@one_line_errors
def operators_sign_out(
    name: Annotated[str, typer.Argument(help="The operator to sign out of every browser.")],
) -> None:
    """End every console session of an operator (a lost laptop, a leaver)."""
    from tollgate.services.operators import sign_out_everywhere

    with _migrated_database() as database:
        ended = sign_out_everywhere(db=database, clock=SystemClock(), operator=name.strip().lower())
    typer.echo(f"ended {ended} session(s) of '{name}'")


@operators_app.command("set-role")
@one_line_errors
def operators_set_role(
    name: Annotated[str, typer.Argument(help="The operator whose role changes.")],
    role: Annotated[str, typer.Argument(help="readonly, support or admin.")],
) -> None:
    """Give an operator another role, from its next page on (the last admin stays admin)."""
    from tollgate.services.operators import set_operator_role

    with _migrated_database() as database:
        set_operator_role(
            db=database, clock=SystemClock(), name=name.strip().lower(), role=role, actor="cli"
        )
    typer.echo(f"'{name}' is {role} now")


@operators_app.command("remove")
@one_line_errors
def operators_remove(
    name: Annotated[str, typer.Argument(help="The operator to remove.")],
) -> None:
    """Remove an operator and end its sessions (the last admin stays)."""
    from tollgate.services.operators import remove_operator

    with _migrated_database() as database:
        remove_operator(db=database, clock=SystemClock(), name=name.strip().lower(), actor="cli")
    typer.echo(f"removed operator '{name}'")


# -- stripe events ------------------------------------------------------------------------------


def _optional_gateway() -> Any:
    from tollgate.stripe.gateway import StripeGateway

    settings = _settings()
    return StripeGateway.from_settings(settings) if settings.stripe_secret_key else None


@events_app.command("list")
@one_line_errors
def events_list(
    status: Annotated[
        str | None,
        typer.Option(help="Only this status: pending, processing, succeeded, failed, ignored."),
    ] = None,
    limit: Annotated[int, typer.Option(min=1, help="How many events to show.")] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per event.")] = False,
) -> None:
    """List stored events, newest first: when, type, customer, status, attempts, a failure's
    error."""
    from tollgate.services.webhooks import list_stripe_events

    with _migrated_database() as database:
        events = list_stripe_events(db=database, status=status, limit=limit)
    if as_json:
        typer.echo(json.dumps([event.to_json() for event in events], indent=2))
        return
    if not events:
        typer.echo("no events" + (f" with status {status}" if status else ""))
        return
    errors = any(event.status == "failed" and event.last_error for event in events)
    headers = ("created (UTC)", "type", "customer", "status", "attempts", "id")
    _table(
        (*headers, "error") if errors else headers,
        [
            (
                f"{event.created:%Y-%m-%d %H:%M:%S}",
                event.type,
                event.customer or "-",
                event.status,
                event.attempts,
                event.id,
                *([event.last_error if event.status == "failed" else ""] if errors else []),
            )
            for event in events
        ],
    )


@events_app.command("replay")
@one_line_errors
def events_replay(
    event_id: Annotated[str, typer.Argument(help="The stored event's id (evt_…).")],
) -> None:
    """Apply one stored event again; harmless if applied before (newer state is kept)."""
    from tollgate.services.webhooks import replay_stripe_event

    with _migrated_database() as database:
        result = replay_stripe_event(
            db=database,
            gateway=_optional_gateway(),
            event_id=event_id,
            clock=SystemClock(),
            dunning=_settings().dunning_policy,
        )
    if result.failed:
        fail(f"{event_id} failed again: {result.error}")
    typer.echo(f"{event_id}: {result.outcome} ({result.changes} change(s))")


@events_app.command("retry")
@one_line_errors
def events_retry(
    limit: Annotated[int, typer.Option(min=1, help="At most this many events.")] = 100,
) -> None:
    """Retry failed events that are due and events stuck for over five minutes, once."""
    from tollgate.jobs.webhooks import retry_failed_webhooks

    with _migrated_database() as database:
        report = retry_failed_webhooks(
            db=database,
            gateway=_optional_gateway(),
            clock=SystemClock(),
            dunning=_settings().dunning_policy,
            limit=limit,
        )
    retried = len(report.results)
    typer.echo(f"{retried} event(s) retried: {report.succeeded} applied, {report.failed} failed")


# -- emails -----------------------------------------------------------------------------------


@emails_app.command("preview")
@one_line_errors
def emails_preview(
    template: Annotated[
        str, typer.Argument(help="The template: usage_warning, usage_exceeded, trial_ending, …")
    ],
    customer: Annotated[
        str | None,
        typer.Option(help="As this customer gets it (its newest such mail, or sample facts)."),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(help="Write the HTML part to this file instead of printing the text."),
    ] = None,
) -> None:
    """Render an email as a customer gets it: to the terminal (text) or a file (HTML)."""
    from tollgate.bootstrap import build_container
    from tollgate.server import require_migrated
    from tollgate.services.outbox import preview_email

    container = build_container(_settings())
    try:
        if customer is not None:
            require_migrated(container.db)
        mail = preview_email(container, template=template, customer_id=customer)
    finally:
        container.close()
    source = "sample facts from the catalog" if mail.sample else "its newest mail"
    if out is not None:
        out.write_text(mail.html)
        typer.echo(f"{out}: {mail.subject!r} ({source})")
        return
    typer.echo(f"To: {mail.recipient}\nSubject: {mail.subject}\n({source})\n\n{mail.text}")


# -- reconciliation ----------------------------------------------------------------------------


@app.command("reconcile")
@one_line_errors
def reconcile_command(
    since: Annotated[
        str, typer.Option(help="Window: 24h, 90m, 7d, or an ISO 8601 time (UTC unless given).")
    ] = "24h",
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    limit: Annotated[int, typer.Option(min=0, help="Drifts listed in the table.")] = 50,
    object_id: Annotated[
        str | None,
        typer.Option(
            "--object", help="Check one object again instead of a window (sub_…, in_…, ch_…)."
        ),
    ] = None,
    account: Annotated[
        str | None, typer.Option(help="With --object: the connected account it lives in.")
    ] = None,
) -> None:
    """Compare what Stripe made in the window with the mirror; heal what Stripe owns, report all."""
    from tollgate.bootstrap import build_container
    from tollgate.server import require_migrated
    from tollgate.services.reconcile import list_drifts, recheck_object, run_reconcile

    if account and not object_id:
        fail("--account goes with --object")
    container = build_container(_settings())
    try:
        require_migrated(container.db)
        now = container.clock.now()
        try:
            window_start = parse_window(since, now)
        except ValueError as error:
            fail(f"--since: {error}")
        if object_id:
            report = recheck_object(container, object_id=object_id, account=account, trigger="cli")
        else:
            with _progress() as bar:
                task = bar.add_task("comparing Stripe's objects with the mirror", total=None)
                report = run_reconcile(
                    container,
                    since=window_start,
                    trigger="cli",
                    progress=lambda kind, checked: bar.update(
                        task,
                        completed=checked,
                        description=f"comparing {kind}s: {checked:,} checked",
                    ),
                )
        if as_json:
            drifts = list_drifts(db=container.db, run_id=report.run_id)
            typer.echo(json.dumps(_report_json(report, drifts), indent=2))
        else:
            _print_report(report, list_drifts(db=container.db, run_id=report.run_id, limit=limit))
    finally:
        container.close()


def _report_json(report: Any, drifts: Any) -> dict[str, Any]:
    return {**report.to_json(), "drifts": [drift.to_json() for drift in drifts]}


def _print_report(report: Any, drifts: Any) -> None:
    if report.object_id:
        what = f"{report.object_type} {report.object_id} at {report.started_at:%Y-%m-%d %H:%M:%S}"
    else:
        what = f"{report.window_start:%Y-%m-%d %H:%M:%S} to {report.window_end:%Y-%m-%d %H:%M:%S}"
    typer.echo(
        f"reconciliation {report.run_id}: {what} UTC, {report.checked} object(s) checked, "
        f"{report.drifts} drift(s), {report.healed} healed"
    )
    typer.echo(f"{'kind':<20} {'count':>6}")
    for kind in DriftKind:
        typer.echo(f"{kind.value:<20} {report.counts.get(kind.value, 0):>6}")
    rows = [
        (
            drift.kind,
            f"{drift.object_type} {drift.object_id}",
            _values(drift.local),
            _values(drift.stripe),
            "healed" if drift.healed else "-",
        )
        for drift in drifts
    ]
    if rows:
        typer.echo("")
        header = ("kind", "object", "local", "stripe", "healed")
        widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
        for row in [header, *rows]:
            cells = (str(cell).ljust(width) for cell, width in zip(row, widths, strict=True))
            typer.echo("  ".join(cells).rstrip())
        if len(rows) < report.drifts:
            typer.echo(f"… and {report.drifts - len(rows)} more (--json lists every drift)")


def _values(values: dict[str, Any] | None) -> str:
    return "(none)" if values is None else values_text(values)


def main() -> None:
    """Entry point of the `tollgate` console script."""
    app()


if __name__ == "__main__":
    main()
