"""Email through a real SMTP server that demands STARTTLS before AUTH (aiosmtpd).

The server's certificate is self-signed for 127.0.0.1, made with the `openssl` command for each
test session; Tollgate trusts it through `cafile=` in TOLLGATE_SMTP_URL, and refuses it without.
"""

from __future__ import annotations

import shutil
import ssl
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from stripesim.testing import free_port
from tests.integration.test_notifications_delivery import NOW, SMTP_PASSWORD, _customer, _queue
from tollgate.bootstrap import Container, build_container
from tollgate.clock import FrozenClock
from tollgate.config import Settings
from tollgate.db.models import Notification
from tollgate.db.unit_of_work import Database
from tollgate.notify.email import EmailError
from tollgate.services.outbox import deliver_emails


@dataclass
class Received:
    """One mail as the server got it, with how the session that carried it was secured."""

    message: EmailMessage
    tls: bool
    login: bytes | None


class TlsInbox:
    """Keeps each mail, and whether its session had STARTTLS and AUTH."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.logins: list[tuple[bytes, bool]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = message_from_bytes(envelope.content, policy=policy.default)
        login = session.auth_data.login if session.authenticated else None
        self.received.append(Received(message, session.ssl is not None, login))
        return "250 OK"


@pytest.fixture(scope="session")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate and key for 127.0.0.1 (PEM files)."""
    if shutil.which("openssl") is None:
        pytest.fail("the openssl command is needed to make the SMTP server's certificate")
    folder = tmp_path_factory.mktemp("smtp-tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    command = "openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=127.0.0.1"
    command += " -addext subjectAltName=IP:127.0.0.1"
    subprocess.run(
        [*command.split(), "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )
    return cert, key


@pytest.fixture
def make_app(
    db: Database, make_settings: Callable[..., Settings]
) -> Iterator[Callable[..., Container]]:
    built: list[Container] = []

    def make(**overrides: Any) -> Container:
        container = build_container(make_settings(db.url, **overrides), clock=FrozenClock(NOW))
        built.append(container)
        return container

    yield make
    for container in built:
        container.close()


@dataclass
class TlsServer:
    port: int
    inbox: TlsInbox
    cert: Path


@pytest.fixture
def tls_smtp(certificate: tuple[Path, Path]) -> Iterator[TlsServer]:
    cert, key = certificate
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(str(cert), str(key))
    inbox = TlsInbox()

    def authenticate(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> Any:
        ok = isinstance(data, LoginPassword) and data.password == SMTP_PASSWORD.encode()
        inbox.logins.append((data.login if isinstance(data, LoginPassword) else b"", ok))
        # handled=False: the server answers a refusal with its 535 (True would leave it mute).
        return AuthResult(success=ok, auth_data=data, handled=False)

    port = free_port()
    controller = Controller(
        inbox,
        hostname="127.0.0.1",
        port=port,
        tls_context=context,
        require_starttls=True,
        authenticator=authenticate,
        auth_required=True,
        auth_require_tls=True,
        # PLAIN only: after a refused password, smtplib tries no second mechanism.
        auth_exclude_mechanism=["LOGIN"],
    )
    controller.start()
    yield TlsServer(port, inbox, cert)
    controller.stop()


def _url(server: TlsServer, *, password: str = SMTP_PASSWORD, query: str | None = None) -> str:
    query = f"starttls=true&cafile={server.cert}" if query is None else query
    return f"smtp://billing:{password}@127.0.0.1:{server.port}?{query}"


def _deliver(app: Container) -> Any:
    return deliver_emails(db=app.db, settings=app.settings, catalog=app.catalog, clock=app.clock)


def _row(db: Database) -> Notification:
    with db.transaction() as session:
        return session.scalars(sa.select(Notification)).one()


def _receipt(db: Database) -> None:
    _customer(db, "acme", "owner@acme.example")
    _queue(
        db,
        "acme",
        "payment_succeeded",
        "in_tls",
        number="INV-9",
        amount_paid={"amount": 2900, "currency": "usd"},
    )


def test_a_mail_goes_over_starttls_with_auth_once(
    db: Database, tls_smtp: TlsServer, make_app: Callable[..., Container]
) -> None:
    app = make_app(TOLLGATE_SMTP_URL=_url(tls_smtp))
    _receipt(db)

    assert _deliver(app).sent == 1
    assert _deliver(app).sent == 0
    [received] = tls_smtp.inbox.received
    assert received.tls and received.login == b"billing"
    assert received.message["To"] == "owner@acme.example"
    assert received.message["Subject"] == "Receipt: $29.00 paid for invoice INV-9"
    assert tls_smtp.inbox.logins == [(b"billing", True)]
    assert _row(db).status == "sent"


@pytest.mark.parametrize(
    ("query", "why"),
    [
        # No STARTTLS asked for: the server refuses to take the password in clear.
        ("", "plain"),
        # STARTTLS, but the self-signed certificate is not trusted by the system's CAs.
        ("starttls=true", "untrusted"),
    ],
)
def test_without_a_trusted_tls_session_the_password_is_never_sent_and_the_mail_waits(
    db: Database,
    tls_smtp: TlsServer,
    make_app: Callable[..., Container],
    caplog: pytest.LogCaptureFixture,
    query: str,
    why: str,
) -> None:
    app = make_app(TOLLGATE_SMTP_URL=_url(tls_smtp, query=query))
    _receipt(db)

    report = _deliver(app)

    assert report.sent == 0, why
    assert tls_smtp.inbox.received == [] and tls_smtp.inbox.logins == []
    row = _row(db)
    assert row.status == "pending" and row.attempts == 1 and row.last_error
    assert SMTP_PASSWORD not in row.last_error and SMTP_PASSWORD not in caplog.text


def test_a_wrong_password_keeps_the_mail_without_echoing_it(
    db: Database,
    tls_smtp: TlsServer,
    make_app: Callable[..., Container],
    caplog: pytest.LogCaptureFixture,
) -> None:
    wrong = "not-the-password-123"
    app = make_app(TOLLGATE_SMTP_URL=_url(tls_smtp, password=wrong))
    _receipt(db)

    assert _deliver(app).sent == 0
    assert tls_smtp.inbox.logins == [(b"billing", False)]  # tried, over TLS, and refused
    row = _row(db)
    assert row.status == "pending" and row.last_error is not None
    assert row.last_error.startswith(f"SMTP smtp://billing@127.0.0.1:{tls_smtp.port} (STARTTLS)")
    assert wrong not in row.last_error and wrong not in caplog.text


def test_a_cafile_that_is_not_there_is_a_clear_error_and_the_mail_waits(
    db: Database, tls_smtp: TlsServer, make_app: Callable[..., Container], tmp_path: Path
) -> None:
    missing = tmp_path / "nope.pem"
    app = make_app(TOLLGATE_SMTP_URL=_url(tls_smtp, query=f"starttls=true&cafile={missing}"))
    _receipt(db)
    with pytest.raises(EmailError, match=f"cafile {missing} is not a file"):
        _deliver(app)
    row = _row(db)
    assert (row.status, row.attempts) == ("pending", 0)
    assert tls_smtp.inbox.logins == []
