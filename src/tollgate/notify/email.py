"""Emails: render a template's text and HTML parts, and send them through SMTP or a dev sink.

`TOLLGATE_SMTP_URL` picks the transport: `smtp://user:pass@host:587?starttls=true`,
`smtps://user:pass@host:465` (TLS from the start), `file:///dir` (one .eml file per mail) or
`console:` (printed). The server's certificate is checked against the system's trusted CAs, or
those in `&cafile=/path/ca.pem`; with STARTTLS, the password is only sent after TLS is up.
Templates are Jinja2 pairs `<name>.txt` and `<name>.html`; the text part's first line is
`Subject: …`. Files in `TOLLGATE_TEMPLATES_DIR` replace the built-in ones.
"""

from __future__ import annotations

import smtplib
import ssl
import sys
from dataclasses import dataclass
from datetime import datetime
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qs, unquote, urlsplit

from babel import Locale, UnknownLocaleError
from babel.dates import format_date
from babel.numbers import format_currency, format_decimal
from jinja2 import (
    ChoiceLoader,
    Environment,
    FileSystemLoader,
    pass_context,
    select_autoescape,
)
from jinja2.runtime import Context

from tollgate.money import Money

BUILTIN_TEMPLATES = Path(__file__).resolve().parent / "templates"
TEMPLATES = (
    "trial_started",
    "trial_ending",
    "trial_converted",
    "payment_succeeded",
    "payment_failed_soft",
    "payment_action_required",
    "payment_failed_warning",
    "downgraded_payment_failed",
    "payment_recovered",
    "subscription_canceled",
    "downgraded_to_free",
    "usage_warning",
    "usage_exceeded",
    "usage_alert",
    "auto_topup_failed",
    "card_limit_passed",
    "price_change",
    "dispute_opened",
    "dispute_reminder",
    "dispute_closed",
)
# Sent to the operator (TOLLGATE_OPERATOR_EMAIL), about the customer they name.
OPERATOR_TEMPLATES = frozenset({"dispute_opened", "dispute_reminder", "dispute_closed"})


class EmailError(Exception):
    """A mail could not be rendered or handed over; the message never holds a password."""


class Transport(Protocol):
    def send(self, message: EmailMessage) -> None:
        """Hand one message over for delivery, or raise EmailError."""
        ...

    def describe(self) -> str:
        """Say where mails go, without credentials."""
        ...


@dataclass(frozen=True)
class SmtpTransport:
    """An SMTP server: plain, STARTTLS (`?starttls=true`) or TLS (`smtps://`), with auth."""

    host: str
    port: int
    username: str | None = None
    password: str | None = None
    tls: bool = False
    starttls: bool = False
    timeout: float = 30.0
    ssl_context: ssl.SSLContext | None = None

    def send(self, message: EmailMessage) -> None:
        context = self.ssl_context or ssl.create_default_context()
        try:
            if self.tls:
                server: smtplib.SMTP = smtplib.SMTP_SSL(
                    self.host, self.port, timeout=self.timeout, context=context
                )
            else:
                server = smtplib.SMTP(self.host, self.port, timeout=self.timeout)
            with server:
                if self.starttls:
                    server.starttls(context=context)
                if self.username:
                    server.login(self.username, self.password or "")
                server.send_message(message)
        except (OSError, smtplib.SMTPException) as error:
            # Not the exception itself: an auth failure's text may echo what was sent.
            raise EmailError(f"SMTP {self.describe()}: {type(error).__name__}") from None

    def describe(self) -> str:
        scheme = "smtps" if self.tls else "smtp"
        user = f"{self.username}@" if self.username else ""
        return f"{scheme}://{user}{self.host}:{self.port}" + (
            " (STARTTLS)" if self.starttls else ""
        )


@dataclass(frozen=True)
class FileTransport:
    """A directory that gets one .eml file per mail (for `tollgate dev` and local runs)."""

    directory: Path

    def send(self, message: EmailMessage) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        name = str(message["Message-ID"]).strip("<>").replace("@", "_").replace("/", "_")
        (self.directory / f"{name}.eml").write_bytes(bytes(message))

    def describe(self) -> str:
        return f"files in {self.directory}"


class ConsoleTransport:
    """Print each mail's headers and text part (for `tollgate dev`)."""

    def send(self, message: EmailMessage) -> None:
        body = message.get_body(preferencelist=("plain",))
        text = body.get_content() if body is not None else ""
        print(
            f"--- email to {message['To']}: {message['Subject']}\n{text}---",
            file=sys.stdout,
            flush=True,
        )

    def describe(self) -> str:
        return "the console"


def transport_from_url(url: str) -> Transport:
    """Build the transport a `TOLLGATE_SMTP_URL` names."""
    parts = urlsplit(url)
    if parts.scheme == "console":
        return ConsoleTransport()
    if parts.scheme == "file":
        return FileTransport(Path(unquote(parts.path)))
    if parts.scheme not in ("smtp", "smtps"):
        raise EmailError("TOLLGATE_SMTP_URL must start with smtp://, smtps://, file:// or console:")
    if not parts.hostname:
        raise EmailError("TOLLGATE_SMTP_URL names no host")
    query = parse_qs(parts.query)
    tls = parts.scheme == "smtps"
    starttls = query.get("starttls", ["false"])[0].lower() in ("1", "true", "yes")
    context = None
    if "cafile" in query:
        # A private CA's certificates (PEM), instead of the system's trusted ones.
        cafile = Path(query["cafile"][0])
        if not cafile.is_file():
            raise EmailError(f"TOLLGATE_SMTP_URL: cafile {cafile} is not a file")
        try:
            context = ssl.create_default_context(cafile=str(cafile))
        except (OSError, ssl.SSLError) as error:
            raise EmailError(
                f"TOLLGATE_SMTP_URL: cafile {cafile} holds no usable certificate"
            ) from error
    return SmtpTransport(
        host=parts.hostname,
        port=parts.port or (465 if tls else 25),
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
        tls=tls,
        starttls=starttls,
        ssl_context=context,
    )


# Numbers, money and dates are written for the reader's locale (the context's `locale`).
@pass_context
def _number(context: Context, value: Any) -> str:
    if value is None or value == "":
        return ""
    return format_decimal(value, locale=_locale(context))


@pass_context
def _money(context: Context, value: Any) -> str:
    if not value:
        return ""
    money = Money(int(value["amount"]), str(value["currency"]))
    return format_currency(money.major, money.currency.upper(), locale=_locale(context))


@pass_context
def _date(context: Context, value: Any) -> str:
    if not value:
        return ""
    at = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    return format_date(at, "d MMMM y", locale=_locale(context))


def _locale(context: Context) -> Locale:
    wanted = str(context.get("locale") or "en")
    try:
        return Locale.parse(wanted.replace("-", "_"))
    except (ValueError, UnknownLocaleError):
        return Locale.parse("en")


class EmailRenderer:
    """Render templates, the operator's first, the built-in ones otherwise."""

    def __init__(self, templates_dir: Path | None = None) -> None:
        loaders = [FileSystemLoader(str(templates_dir))] if templates_dir else []
        loaders.append(FileSystemLoader(str(BUILTIN_TEMPLATES)))
        self.environment = Environment(
            loader=ChoiceLoader(loaders),
            autoescape=select_autoescape(["html"], default_for_string=False),
            keep_trailing_newline=True,
        )
        self.environment.filters["number"] = _number
        self.environment.filters["money"] = _money
        self.environment.filters["date"] = _date

    def render(self, template: str, context: dict[str, Any]) -> tuple[str, str, str]:
        """Return the subject, the text part and the HTML part of `template`."""
        if template not in TEMPLATES:
            raise EmailError(f"unknown email template {template!r}")
        text = self.environment.get_template(f"{template}.txt").render(context)
        html = self.environment.get_template(f"{template}.html").render(context)
        first, _, body = text.partition("\n")
        if not first.startswith("Subject:"):
            raise EmailError(f"{template}.txt must start with a 'Subject: …' line")
        return first.removeprefix("Subject:").strip(), body.lstrip("\n"), html


def build_message(
    *,
    sender: str,
    recipient: str,
    subject: str,
    text: str,
    html: str,
    message_id: str,
    now: datetime,
) -> EmailMessage:
    """Return the multipart/alternative mail; `message_id` lets receivers drop a resend."""
    message = EmailMessage()
    message["From"] = sender
    message["To"] = recipient
    message["Subject"] = subject
    message["Date"] = formatdate(now.timestamp(), usegmt=True)
    message["Message-ID"] = message_id or make_msgid()
    message.set_content(text)
    message.add_alternative(html, subtype="html")
    return message
