"""The Operators page: an admin adds operators (a password shown once), changes their roles,
signs them out and removes them; the last admin stays; each operator changes their own password.
On SQLite and PostgreSQL, through the console's forms."""

from __future__ import annotations

import re
import threading

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from tests.console.conftest import Desk
from tollgate.cli import app as cli
from tollgate.db.tables import AUDIT_LOG
from tollgate.domain.errors import Conflict
from tollgate.services.operators import create_operator, set_operator_role

PASSWORD = "correct horse battery"


def _csrf(page: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert found, page
    return found.group(1)


def _browser(desk: Desk, name: str, password: str = PASSWORD) -> TestClient:
    """A browser of its own, signed in as `name`."""
    browser = TestClient(desk.api.app)
    form = browser.get("/console/sign-in")
    answer = browser.post(
        "/console/sign-in",
        data={"csrf_token": _csrf(form.text), "name": name, "password": password},
        follow_redirects=False,
    )
    assert answer.status_code == 303, answer.text
    return browser


def _admin(desk: Desk, name: str = "ada") -> TestClient:
    create_operator(db=desk.db, clock=desk.clock, name=name, role="admin", password=PASSWORD)
    return _browser(desk, name)


def _post(browser: TestClient, path: str, **data: str):  # type: ignore[no-untyped-def]
    page = browser.get("/console/operators")
    return browser.post(path, data={"csrf_token": _csrf(page.text), **data}, follow_redirects=False)


def _audit(desk: Desk) -> list[tuple[str, str, str]]:
    with desk.db.engine.connect() as connection:
        rows = connection.execute(
            sa.select(AUDIT_LOG.c.actor, AUDIT_LOG.c.object_id, AUDIT_LOG.c.action)
            .where(AUDIT_LOG.c.object_type == "operator")
            .order_by(AUDIT_LOG.c.id)
        ).all()
    return [(actor, name, action) for actor, name, action in rows]


def test_an_admin_adds_an_operator_who_signs_in_with_the_password_shown_once(desk: Desk) -> None:
    ada = _admin(desk)
    added = _post(ada, "/console/operators", name="Grace", role="support")
    assert added.status_code == 200, added.text
    shown = re.search(r'<code id="new-password">([^<]+)</code>', added.text)
    assert shown and len(shown.group(1)) >= 12
    assert shown.group(1) not in ada.get("/console/operators").text  # once
    grace = _browser(desk, "grace", shown.group(1))
    page = grace.get("/console/operators")
    assert page.status_code == 200 and 'badge">support' in page.text
    assert "Add an operator" not in page.text and "/role" not in page.text  # support only reads
    listed = ada.get("/console/operators").text
    assert re.search(r"grace.*?1 session, seen", listed, re.S)
    assert _audit(desk) == [("cli", "ada", "created"), ("operator:ada", "grace", "created")]
    with desk.db.engine.connect() as connection:
        stored = str(connection.execute(sa.select(AUDIT_LOG.c.after)).all())
    assert shown.group(1) not in stored


@pytest.mark.parametrize(
    ("name", "role", "problem"),
    [
        ("", "support", "name must be"),
        ("grace", "owner", "role must be"),
        ("ada", "readonly", "exists"),
    ],
)
def test_a_bad_new_operator_is_refused_and_nothing_is_made(
    desk: Desk, name: str, role: str, problem: str
) -> None:
    ada = _admin(desk)
    answer = _post(ada, "/console/operators", name=name, role=role)
    assert answer.status_code == 400 and problem in answer.text
    assert [o for o in re.findall(r"<tr><td>([a-z0-9]+)", ada.get("/console/operators").text)] == [
        "ada"
    ]


def test_a_new_role_holds_from_the_next_page_and_the_last_admin_keeps_theirs(desk: Desk) -> None:
    ada = _admin(desk)
    create_operator(db=desk.db, clock=desk.clock, name="grace", role="support", password=PASSWORD)
    grace = _browser(desk, "grace")
    keys = grace.get("/console/api-keys")
    key = {"csrf_token": _csrf(keys.text), "name": "k", "scope": "read"}
    assert grace.post("/console/api-keys", data=key).status_code == 403
    assert _post(ada, "/console/operators/grace/role", role="admin").status_code == 303
    assert grace.post("/console/api-keys", data=key).status_code == 200  # no new sign-in

    # Two admins: ada may step down; then grace is the last and may not.
    assert _post(ada, "/console/operators/ada/role", role="support").status_code == 303
    refused = _post(grace, "/console/operators/grace/role", role="readonly")
    assert refused.status_code == 400 and "last admin" in refused.text
    removed = _post(grace, "/console/operators/ada/remove")
    assert removed.status_code == 303
    assert _post(grace, "/console/operators/grace/remove").status_code == 400  # not yourself
    assert _audit(desk) == [
        ("cli", "ada", "created"),
        ("cli", "grace", "created"),
        ("operator:ada", "grace", "role_changed"),
        ("operator:ada", "ada", "role_changed"),
        ("operator:grace", "ada", "removed"),
    ]
    assert ada.get("/console", follow_redirects=False).status_code == 303  # signed out


def test_an_admin_signs_another_operator_out_of_every_browser(desk: Desk) -> None:
    ada = _admin(desk)
    create_operator(db=desk.db, clock=desk.clock, name="sam", role="support", password=PASSWORD)
    laptops = [_browser(desk, "sam") for _ in range(2)]
    assert "2 sessions" in ada.get("/console/operators").text
    assert _post(ada, "/console/operators/sam/sign-out").status_code == 303
    for laptop in laptops:
        assert laptop.get("/console", follow_redirects=False).status_code == 303
    assert ada.get("/console").status_code == 200
    assert _audit(desk)[-1] == ("operator:ada", "sam", "signed_out")
    ghost = _post(ada, "/console/operators/ghost/sign-out")  # a name nobody has
    assert ghost.status_code == 400 and "no operator &#39;ghost&#39;" in ghost.text
    assert _audit(desk)[-1] == ("operator:ada", "sam", "signed_out")


def test_support_may_not_change_operators(desk: Desk) -> None:
    _admin(desk)
    create_operator(db=desk.db, clock=desk.clock, name="sam", role="support", password=PASSWORD)
    sam = _browser(desk, "sam")
    for path, data in (
        ("/console/operators", {"name": "eve", "role": "admin"}),
        ("/console/operators/sam/role", {"role": "admin"}),
        ("/console/operators/ada/remove", {}),
        ("/console/operators/ada/sign-out", {}),
    ):
        assert _post(sam, path, **data).status_code == 403, path
    assert 'badge">support' in sam.get("/console").text
    assert [action for _, _, action in _audit(desk)] == ["created", "created"]


def test_an_operator_changes_their_own_password(desk: Desk) -> None:
    ada = _admin(desk)
    new = "a much longer passphrase"
    wrong = _post(
        ada,
        "/console/password",
        current_password="nope nope nope",
        new_password=new,
        repeat_password=new,
    )
    assert wrong.status_code == 400 and "current password is wrong" in wrong.text
    differ = _post(
        ada, "/console/password", current_password=PASSWORD, new_password=new, repeat_password="x"
    )
    assert differ.status_code == 400 and "differ" in differ.text
    short = _post(
        ada,
        "/console/password",
        current_password=PASSWORD,
        new_password="short",
        repeat_password="short",
    )
    assert short.status_code == 400 and "12 characters" in short.text
    done = _post(
        ada, "/console/password", current_password=PASSWORD, new_password=new, repeat_password=new
    )
    assert done.status_code == 303 and done.headers["location"].endswith("done=password")
    assert "Your password was changed" in ada.get(done.headers["location"]).text
    assert ada.get("/console", follow_redirects=False).status_code == 303  # this session ended
    with pytest.raises(AssertionError):
        _browser(desk, "ada", PASSWORD)
    assert _browser(desk, "ada", new).get("/console").status_code == 200
    assert _audit(desk)[-1] == ("operator:ada", "ada", "password_changed")


def test_two_admins_stepping_down_at_once_leave_one_admin(desk: Desk) -> None:
    """Each change reads the admins behind a lock, so they take turns: one steps down and the
    other, then the last admin, is refused."""
    for round_ in range(5):
        names = [f"a{round_}x", f"a{round_}y"]
        for name in names:
            create_operator(
                db=desk.db, clock=desk.clock, name=name, role="admin", password=PASSWORD
            )
        with desk.db.engine.begin() as connection:  # only these two are admins this round
            connection.execute(
                sa.text("UPDATE operators SET role = 'readonly' WHERE id NOT IN (:x, :y)"),
                {"x": names[0], "y": names[1]},
            )
        start = threading.Barrier(2)
        outcomes: list[str] = []
        threads = [
            threading.Thread(target=_step_down, args=(desk, name, start, outcomes))
            for name in names
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sorted(outcomes) == ["changed", "refused"]
        with desk.db.engine.connect() as connection:
            admins = connection.execute(
                sa.text("SELECT count(*) FROM operators WHERE role = 'admin'")
            ).scalar_one()
        assert admins == 1


def _step_down(desk: Desk, name: str, start: threading.Barrier, outcomes: list[str]) -> None:
    start.wait()
    try:
        set_operator_role(db=desk.db, clock=desk.clock, name=name, role="support", actor="test")
        outcomes.append("changed")
    except Conflict:
        outcomes.append("refused")


def test_the_cli_changes_a_role_and_removes_an_operator(desk: Desk) -> None:
    create_operator(db=desk.db, clock=desk.clock, name="ada", role="admin", password=PASSWORD)
    create_operator(db=desk.db, clock=desk.clock, name="sam", role="readonly", password=PASSWORD)
    env = {"TOLLGATE_DATABASE_URL": desk.db.url, "TOLLGATE_ENV": "test"}
    runner = CliRunner()
    made = runner.invoke(cli, ["operators", "set-role", "sam", "support"], env=env)
    assert made.exit_code == 0 and "'sam' is support now" in made.output
    last = runner.invoke(cli, ["operators", "set-role", "ada", "readonly"], env=env)
    assert last.exit_code == 2 and "last admin" in last.output
    gone = runner.invoke(cli, ["operators", "remove", "sam"], env=env)
    assert gone.exit_code == 0
    listed = runner.invoke(cli, ["operators", "list"], env=env)
    assert "ada" in listed.output and "sam" not in listed.output
    typo = runner.invoke(cli, ["operators", "sign-out", "sma"], env=env)
    assert typo.exit_code == 2 and "no operator 'sma'" in typo.output
