"""Acme Workflows: a small SaaS billing through Tollgate, the way an app is meant to.

Users belong to organisations; an organisation has workflows; a workflow has runs. The
organisation is the billing customer: it is created in Tollgate when the organisation is,
"new workflow" is gated by the `workflows` limit, each run is consumed from `runs` in one step
(allowed and counted, or refused with the reason and nothing counted), and the pages link to
Tollgate's pricing table and billing page for the organisation.

The app signs its users in with its own JWTs (RS256, a key made at start; the public key at
/.well-known/jwks.json), like an app using Clerk, Auth0 or Cognito would; Tollgate can trust the
same tokens for its billing page (see the README's "Billing page" settings).

Run it beside `tollgate dev` with `make example`, or by hand:

    source .tollgate-dev/env     # TOLLGATE_URL and TOLLGATE_API_KEY of the dev instance
    .venv/bin/uvicorn --app-dir examples/workflows app:app --port 8100
"""

from __future__ import annotations

import os
import re
import secrets
import sqlite3
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi import FastAPI, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from jwt.algorithms import RSAAlgorithm

from tollgate_client import Tollgate, TollgateError

HERE = Path(__file__).resolve().parent
TOLLGATE_URL = os.environ.get("TOLLGATE_URL", "http://127.0.0.1:8000")
APP_URL = os.environ.get("EXAMPLE_URL", "http://127.0.0.1:8100")
DATABASE = Path(os.environ.get("EXAMPLE_DATABASE", ".tollgate-dev/example.db"))
SESSION_COOKIE = "acme_session"
AUDIENCE = "acme-workflows"
KEY_ID = f"acme-{secrets.token_hex(4)}"

# The app's signing key lives as long as the process (a real app keeps it in its secrets).
_private_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
billing = Tollgate(TOLLGATE_URL, os.environ.get("TOLLGATE_API_KEY", ""))
templates = Jinja2Templates(directory=HERE / "templates")
app = FastAPI(title="Acme Workflows (a Tollgate example)", docs_url=None, redoc_url=None)


# -- the app's own data ------------------------------------------------------------------------


@contextmanager
def database() -> Iterator[sqlite3.Connection]:
    DATABASE.parent.mkdir(parents=True, exist_ok=True)
    connection = sqlite3.connect(DATABASE)
    connection.row_factory = sqlite3.Row
    try:
        with connection:
            connection.executescript(
                "CREATE TABLE IF NOT EXISTS orgs (id TEXT PRIMARY KEY, name TEXT NOT NULL);"
                "CREATE TABLE IF NOT EXISTS users (email TEXT PRIMARY KEY, org_id TEXT NOT NULL);"
                "CREATE TABLE IF NOT EXISTS workflows (id INTEGER PRIMARY KEY, org_id TEXT,"
                " name TEXT NOT NULL, runs INTEGER NOT NULL DEFAULT 0);"
            )
            yield connection
    finally:
        connection.close()


# -- signing in: the app's JWTs ----------------------------------------------------------------


def issue_token(email: str, org_id: str) -> str:
    """A session token as an identity provider would issue it: the org id as a claim."""
    now = int(time.time())
    claims: dict[str, Any] = {"iss": APP_URL, "aud": AUDIENCE, "sub": email, "org_id": org_id}
    claims |= {"iat": now, "exp": now + 8 * 3600}
    return jwt.encode(claims, _private_key, algorithm="RS256", headers={"kid": KEY_ID})


def signed_in(request: Request) -> dict[str, Any] | None:
    token = request.cookies.get(SESSION_COOKIE)
    if not token:
        return None
    try:
        return jwt.decode(
            token,
            _private_key.public_key(),
            algorithms=["RS256"],
            audience=AUDIENCE,
            issuer=APP_URL,
        )
    except jwt.PyJWTError:
        return None


@app.get("/.well-known/jwks.json")
def jwks() -> dict[str, Any]:
    """The public key of the app's tokens, for whoever trusts them (Tollgate's billing page)."""
    key = RSAAlgorithm.to_jwk(_private_key.public_key(), as_dict=True)
    return {"keys": [{**key, "kid": KEY_ID, "use": "sig", "alg": "RS256"}]}


# -- pages --------------------------------------------------------------------------------------


@app.get("/", response_class=HTMLResponse)
def home(request: Request, note: str = "", error: str = "") -> Response:
    user = signed_in(request)
    if user is None:
        return templates.TemplateResponse(request, "signup.html", {"error": error})
    org_id = user["org_id"]
    with database() as db:
        org = db.execute("SELECT * FROM orgs WHERE id = ?", (org_id,)).fetchone()
        flows = db.execute("SELECT * FROM workflows WHERE org_id = ? ORDER BY id", (org_id,))
        workflows = flows.fetchall()
    customer = billing.get_customer(org_id)
    runs = billing.check(org_id, "runs", 1)
    return templates.TemplateResponse(
        request,
        "dashboard.html",
        {
            "user": user,
            "org": org,
            "customer": customer,
            "workflows": workflows,
            "runs": runs,
            "note": note,
            "error": error,
        },
    )


@app.post("/signup")
def signup(email: str = Form(...), organisation: str = Form(...)) -> Response:
    email, organisation = email.strip().lower(), organisation.strip()
    if "@" not in email or not organisation:
        return _back(error="Give an email address and your organisation's name.")
    slug = re.sub(r"[^a-z0-9]+", "-", organisation.lower()).strip("-")[:40] or "org"
    with database() as db:
        user = db.execute("SELECT org_id FROM users WHERE email = ?", (email,)).fetchone()
        if user is None:
            org_id = f"{slug}-{secrets.token_hex(3)}"
            # The billing customer is made with the organisation; an error leaves neither.
            billing.create_customer(id=org_id, email=email, name=organisation)
            db.execute("INSERT INTO orgs VALUES (?, ?)", (org_id, organisation))
            db.execute("INSERT INTO users VALUES (?, ?)", (email, org_id))
        else:
            org_id = user["org_id"]
    response = RedirectResponse("/", status_code=303)
    response.set_cookie(SESSION_COOKIE, issue_token(email, org_id), httponly=True, samesite="lax")
    return response


@app.post("/signout")
def signout() -> Response:
    response = RedirectResponse("/", status_code=303)
    response.delete_cookie(SESSION_COOKIE)
    return response


@app.post("/workflows")
def create_workflow(request: Request, name: str = Form(...)) -> Response:
    user = signed_in(request)
    if user is None:
        return _back()
    org_id = user["org_id"]
    with database() as db:
        count = db.execute("SELECT count(*) FROM workflows WHERE org_id = ?", (org_id,))
        in_use = int(count.fetchone()[0])
        # A limit feature is checked against what the organisation has now.
        decision = billing.check(org_id, "workflows", 1, in_use=in_use)
        if not decision.allowed:
            return _back(error=decision.reason)
        db.execute("INSERT INTO workflows (org_id, name) VALUES (?, ?)", (org_id, name.strip()))
    return _back(note=f"Workflow {name.strip()!r} created.")


@app.post("/workflows/{workflow_id}/run")
def run_workflow(request: Request, workflow_id: int) -> Response:
    user = signed_in(request)
    if user is None:
        return _back()
    org_id = user["org_id"]
    with database() as db:
        flow = db.execute(
            "SELECT * FROM workflows WHERE id = ? AND org_id = ?", (workflow_id, org_id)
        ).fetchone()
        if flow is None:
            return _back(error="No such workflow.")
        # One id per run: a retried request is counted once.
        run_id = f"run-{uuid.uuid4()}"
        decision = billing.consume(org_id, "runs", 1, id=run_id)
        if not decision.allowed:
            return _back(error=decision.reason)
        db.execute("UPDATE workflows SET runs = runs + 1 WHERE id = ?", (workflow_id,))
    return _back(note=f"{flow['name']} ran.")


@app.post("/upgrade")
def upgrade(request: Request, plan: str = Form("pro"), interval: str = Form("month")) -> Response:
    user = signed_in(request)
    if user is None:
        return _back()
    try:
        session = billing.checkout(
            user["org_id"],
            plan=plan,
            interval=interval,
            success_url=f"{APP_URL}/?note=Thank+you%21+Your+plan+is+being+activated.",
            cancel_url=f"{APP_URL}/",
        )
    except TollgateError as error:
        return _back(error=str(error))
    return RedirectResponse(session.url, status_code=303)


@app.get("/billing")
def billing_page(request: Request) -> Response:
    """Send the signed-in user to their organisation's billing page on Tollgate."""
    user = signed_in(request)
    if user is None:
        return _back()
    session = billing.billing_session(user["org_id"])
    return RedirectResponse(session["url"], status_code=303)


def _back(*, note: str = "", error: str = "") -> Response:
    query = urlencode({key: value for key, value in (("note", note), ("error", error)) if value})
    return RedirectResponse(f"/?{query}" if query else "/", status_code=303)
