"""A JWKS the test serves itself, with keys the test generates, and tokens signed by them."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

ISSUER = "https://auth.app.example/"
AUDIENCE = "tollgate-billing"


@dataclass
class Issuer:
    """The app's identity provider: its signing keys and the JWKS it publishes."""

    url: str = ""
    keys: dict[str, Any] = field(default_factory=dict)
    fetches: int = 0

    def add_rsa(self, kid: str) -> None:
        self.keys[kid] = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    def add_ec(self, kid: str) -> None:
        self.keys[kid] = ec.generate_private_key(ec.SECP256R1())

    def jwks(self) -> dict[str, Any]:
        published = []
        for kid, key in self.keys.items():
            if isinstance(key, rsa.RSAPrivateKey):
                entry = json.loads(RSAAlgorithm.to_jwk(key.public_key()))
                entry["alg"] = "RS256"
            else:
                entry = json.loads(ECAlgorithm.to_jwk(key.public_key()))
                entry["alg"] = "ES256"
            published.append({**entry, "kid": kid, "use": "sig"})
        return {"keys": published}

    def token(self, kid: str, *, org: str = "org_a", expires_in: int = 300, **claims: Any) -> str:
        key = self.keys[kid]
        algorithm = "RS256" if isinstance(key, rsa.RSAPrivateKey) else "ES256"
        now = int(time.time())
        body = {"iss": ISSUER, "aud": AUDIENCE, "sub": "user_1", "org_id": org, "iat": now}
        body["exp"] = now + expires_in
        body.update(claims)
        return jwt.encode(body, key, algorithm=algorithm, headers={"kid": kid})

    def settings(self) -> dict[str, str]:
        return {
            "TOLLGATE_JWT_JWKS_URL": self.url,
            "TOLLGATE_JWT_ISSUER": ISSUER,
            "TOLLGATE_JWT_AUDIENCE": AUDIENCE,
            "TOLLGATE_JWT_CUSTOMER_CLAIM": "org_id",
        }


@contextmanager
def serve_issuer() -> Iterator[Issuer]:
    issuer = Issuer()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            issuer.fetches += 1
            body = json.dumps(issuer.jwks()).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    issuer.url = f"http://127.0.0.1:{server.server_address[1]}/.well-known/jwks.json"
    try:
        yield issuer
    finally:
        server.shutdown()
        server.server_close()
