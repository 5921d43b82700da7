"""What every `tollgate` command shares: one-line errors, settings, the database, tables and
progress bars. Imports stay light here for the same reason as in tollgate.cli."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import wraps
from typing import Any, TypeVar

import typer

from tollgate.config import ConfigError, Settings, load_settings
from tollgate.domain.errors import CatalogError, TollgateError

F = TypeVar("F", bound=Callable[..., Any])


def table(headers: tuple[str, ...], rows: list[tuple[Any, ...]]) -> None:
    """Print rows under their headers (a plain, aligned table, as lists are read)."""
    from rich import box
    from rich.console import Console
    from rich.table import Table

    table = Table(
        *headers, box=box.SIMPLE_HEAD, header_style="bold", pad_edge=False, show_edge=False
    )
    for column in table.columns:  # a row stays one line, so lists can be grepped
        column.no_wrap, column.overflow = True, "ignore"
    for row in rows:
        table.add_row(*("" if value is None else str(value) for value in row))
    # Piped or captured, a line is as long as its row; on a terminal, as wide as the window.
    width = None if sys.stdout.isatty() else 10_000
    Console(width=width, soft_wrap=True).print(table, crop=False)


def progress() -> Any:
    """A progress bar on the terminal (on stderr, so output stays clean); none when piped."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    console = Console(stderr=True)
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        console=console,
        transient=True,
        disable=not console.is_terminal,
    )


def fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


def one_line_errors(command: F) -> F:
    """Turn Tollgate's expected errors into `error: …` on stderr and exit status 2."""

    @wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except CatalogError as error:
            typer.echo(f"error: the catalog has {len(error.problems)} problem(s):", err=True)
            for problem in error.problems:
                typer.echo(f"  {problem}", err=True)
            raise typer.Exit(2) from None
        except (ConfigError, TollgateError) as error:
            fail(str(error))
        except Exception as error:
            from sqlalchemy.exc import DBAPIError  # here: `import tollgate.cli` stays light

            if not isinstance(error, DBAPIError):
                raise
            # The driver's first line says why (refused, unknown host, bad password) and never
            # holds the password; the rest is SQLAlchemy's statement and a link.
            reason = str(error.orig).strip().splitlines()[0] if str(error.orig).strip() else ""
            fail(f"the database did not answer ({type(error.orig).__name__}): {reason}")

    return wrapper  # type: ignore[return-value]


def settings(**overrides: Any) -> Settings:
    return load_settings(**overrides)


@contextmanager
def migrated_database() -> Iterator[Any]:
    from tollgate.bootstrap import open_database
    from tollgate.server import require_migrated

    database = open_database(settings())
    try:
        require_migrated(database)
        yield database
    finally:
        database.dispose()
