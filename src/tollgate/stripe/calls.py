"""The one path every Stripe call takes: the pinned client, 429 backoff, Tollgate's errors."""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Callable, Iterable, Mapping
from email.utils import parsedate_to_datetime
from typing import Any, NamedTuple, NoReturn, Self, TypeVar
from urllib.parse import unquote

import orjson
import requests
import stripe
import urllib3

from tollgate.config import ConfigError, Settings
from tollgate.metrics import STRIPE_CALLS, STRIPE_ERRORS, STRIPE_RATE_LIMIT_RETRIES
from tollgate.stripe.errors import (
    IdempotencyKeyReused,
    PaymentDeclined,
    StripeAuthenticationFailed,
    StripeFailure,
    StripeNotFound,
    StripeUnavailable,
)
from tollgate.tracing import span

# The API version this SDK release is generated for; every request is pinned to it.
PINNED_API_VERSION: str = stripe.api_version
T = TypeVar("T")


def make_client(settings: Settings) -> stripe.StripeClient:
    """A StripeClient for the configured key and API base, pinned and with network retries."""
    return _make_clients(settings)[0]


def _make_clients(settings: Settings) -> tuple[stripe.StripeClient, PlainGets | None]:
    """`make_client`'s client, and plain GETs on the same HTTP client (None when it is not
    urllib3's: a proxy only requests can use)."""
    if settings.stripe_secret_key is None:
        raise ConfigError(
            "STRIPE_SECRET_KEY: required to talk to Stripe (sk_test_…, sk_live_… or rk_…)"
        )
    key = settings.stripe_secret_key.get_secret_value()
    base = settings.stripe_api_base.rstrip("/") if settings.stripe_api_base else None
    http = _http_client(
        settings.stripe_timeout_seconds, _environment_proxy(base or "https://api.stripe.com")
    )
    client = stripe.StripeClient(
        key,
        stripe_version=PINNED_API_VERSION,
        base_addresses={"api": base, "connect": base, "files": base, "meter_events": base}
        if base
        else {},
        max_network_retries=settings.stripe_max_retries,
        http_client=http,
    )
    gets = (
        PlainGets(http, base or "https://api.stripe.com", key)
        if isinstance(http, Urllib3Client)
        else None
    )
    return client, gets


def _environment_proxy(url: str) -> str | None:
    """The proxy the environment names for `url` (None for none, or when NO_PROXY exempts it)."""
    return requests.utils.select_proxy(url, requests.utils.get_environ_proxies(url))


def _http_client(timeout: float, proxy: str | None) -> stripe.HTTPClient:
    """The SDK's HTTP client: urllib3's pool, or requests' for a proxy urllib3 cannot use."""
    if proxy is None or urllib3.util.parse_url(proxy).scheme in ("http", "https"):
        return Urllib3Client(timeout=timeout, proxy=proxy)
    return stripe.RequestsClient(timeout=timeout, session=_session(), proxy=proxy)


def _session() -> requests.Session:
    """A requests session that does not read the environment at every request.

    By default requests looks up the proxy settings in the environment for each request (walking
    `os.environ` twice: a quarter of a Stripe call's CPU measured in `tollgate serve`); they
    are read once instead, when the client is made (`HTTPS_PROXY`, `HTTP_PROXY`, `NO_PROXY` for
    the API's address). The CA bundle is the SDK's own either way, and no `.netrc` entry can
    replace the API key's header.
    """
    session = requests.Session()
    session.trust_env = False
    return session


class Urllib3Client(stripe.HTTPClient):
    """The SDK's requests client without requests: the same urllib3 pool underneath, the SDK's CA
    bundle, timeout and proxy (read once, as `_session` does), and its retry rules (only a
    timeout or a failed connection is retried, by the SDK, never by urllib3).

    A retrieve's client CPU measured against stripesim: 760-1,180 µs through requests (which
    merges settings, hooks and cookies and builds a second response object at each call),
    520-610 µs so.
    """

    name = "urllib3"

    def __init__(self, *, timeout: float, proxy: str | None = None) -> None:
        super().__init__(verify_ssl_certs=True, proxy=proxy)
        options: dict[str, Any] = {
            "timeout": urllib3.Timeout(connect=timeout, read=timeout),
            "retries": False,  # the SDK retries (max_network_retries), with its backoff
            "cert_reqs": "CERT_REQUIRED",
            "ca_certs": stripe.ca_bundle_path,
            "maxsize": 10,  # connections kept per host, as requests keeps
        }
        self._hosts: dict[str, urllib3.HTTPConnectionPool] = {}  # `get_plain`'s, by address
        self._proxied = proxy is not None
        self._pool: urllib3.PoolManager
        if proxy is None:
            self._pool = urllib3.PoolManager(**options)
        else:
            auth = urllib3.util.parse_url(proxy).auth
            # As requests does: credentials in the proxy's address go in Proxy-Authorization.
            headers = urllib3.make_headers(proxy_basic_auth=unquote(auth)) if auth else None
            self._pool = urllib3.ProxyManager(proxy, proxy_headers=headers, **options)

    def request(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str] | None,
        post_data: Any = None,
        *,
        _usage: list[str] | None = None,
    ) -> tuple[Any, int, Mapping[str, str]]:  # the body as bytes, as RequestsClient's
        answer = self._send(method, url, headers, post_data, preload=True)
        return answer.data, answer.status, answer.headers

    def request_stream(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str] | None,
        post_data: Any = None,
        *,
        _usage: list[str] | None = None,
    ) -> tuple[Any, int, Mapping[str, str]]:
        answer = self._send(method, url, headers, post_data, preload=False)
        return answer, answer.status, answer.headers

    def _send(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str] | None,
        body: Any,
        *,
        preload: bool,
    ) -> urllib3.BaseHTTPResponse:
        try:
            return self._pool.request(
                method, url, headers=headers, body=body, preload_content=preload
            )
        except Exception as error:  # as RequestsClient: every failure is the SDK's own error
            _connection_error(error)

    def get_plain(
        self, base: str, path: str, headers: Mapping[str, str]
    ) -> urllib3.BaseHTTPResponse | None:
        """GET `base` + `path` once, no retry, no redirect; the answer, or None when the
        request failed.

        Straight on the host's connection pool, kept, when there is no proxy: what the pool
        manager does first at each request (the URL parsed, the pool looked up by a key made
        anew) cost a sixth of a GET's client CPU (150-170 µs against 180-203 measured)."""
        try:
            if self._proxied:
                return self._pool.request("GET", base + path, headers=headers, redirect=False)
            host = self._hosts.get(base)
            if host is None:
                host = self._hosts[base] = self._pool.connection_from_url(base)
            return host.urlopen(
                "GET", path, headers=headers, redirect=False, assert_same_host=False
            )
        except Exception:  # the SDK's path tries again, and raises its error if it must
            self._hosts.pop(base, None)  # a pool the manager closed meanwhile is taken anew
            return None

    def close(self) -> None:
        self._pool.clear()


class PlainAnswer(NamedTuple):
    """A GET's answer as the SDK's raw request gives it: the JSON body and the headers."""

    data: Any
    headers: Mapping[str, str]


class PlainGets:
    """GETs of Stripe objects with no SDK request around them, on the SDK's own HTTP client.

    What the SDK does around a request (options merged, a client user agent made as JSON and a
    telemetry header at each call, log lines formatted whether logged or not, the body parsed
    with the standard library) cost as much CPU as the request itself; a webhook that needs an
    object from Stripe pays it at each fetch. The headers are made once here, as the SDK makes
    them (key, pinned version, user agents), and the body is parsed with orjson. Only a 200 is
    taken: any other answer, or a request that failed, is asked again through the SDK
    (`StripeCalls._get_raw`), which retries, raises its errors and counts them as for any call
    (a GET is safe to send twice).
    """

    def __init__(self, http: Urllib3Client, base: str, key: str) -> None:
        self._http = http
        self._base = base.rstrip("/")
        client_agent = {
            "bindings_version": stripe.VERSION,
            "lang": "python",
            "httplib": http.name,
            "lang_version": platform.python_version(),
        }
        self._headers = {
            "X-Stripe-Client-User-Agent": json.dumps(client_agent),
            "User-Agent": f"Stripe/v1 PythonBindings/{stripe.VERSION}",
            "Authorization": f"Bearer {key}",
            "Stripe-Version": PINNED_API_VERSION,
        }
        self._accounts: dict[str, dict[str, str]] = {}

    def get(self, path: str, stripe_account: str | None = None) -> PlainAnswer | None:
        """The object at `path` (`/v1/customers/cus_…`), or None unless Stripe answered 200."""
        headers = self._headers
        if stripe_account:
            headers = self._accounts.get(stripe_account) or self._accounts.setdefault(
                stripe_account, {**headers, "Stripe-Account": stripe_account}
            )
        answer = self._http.get_plain(self._base, path, headers)
        if answer is None or answer.status != 200:
            return None
        try:
            return PlainAnswer(orjson.loads(answer.data), answer.headers)
        except orjson.JSONDecodeError:
            return None


def _connection_error(error: Exception) -> NoReturn:
    """Raise the SDK's APIConnectionError for a failed request, retryable as RequestsClient
    decides: a timeout or a connection that failed, never a certificate that did not verify."""
    if isinstance(error, urllib3.exceptions.SSLError):
        message = "Could not verify Stripe's SSL certificate."
        retry = False
    elif isinstance(
        error,
        urllib3.exceptions.TimeoutError
        | urllib3.exceptions.NewConnectionError
        | urllib3.exceptions.ProtocolError
        | urllib3.exceptions.ProxyError,
    ):
        message = "Unexpected error communicating with Stripe."
        retry = True
    else:
        message = "Unexpected error communicating with Stripe."
        retry = False
    detail = f"{type(error).__name__}: {error}"
    raise stripe.APIConnectionError(
        f"{message}\n\n(Network error: {detail})", should_retry=retry
    ) from error


class StripeCalls:
    """Stripe in Tollgate's terms: plain values in and out, Tollgate's errors, safe retries.

    The SDK retries connection errors, timeouts, 409 and 5xx itself (`max_network_retries`), and
    reuses the request's idempotency key on each retry; 429 is retried here with backoff. Every
    write carries an idempotency key derived from local ids, so a retry never makes a second object.
    """

    def __init__(
        self,
        client: stripe.StripeClient,
        *,
        stripe_account: str | None = None,
        rate_limit_retries: int = 4,
        rate_limit_backoff: float = 0.5,
        sleep: Callable[[float], None] = time.sleep,
        plain_gets: PlainGets | None = None,
    ) -> None:
        self._client = client
        self._plain_gets = plain_gets
        self._account = stripe_account
        self._rate_limit_retries = rate_limit_retries
        self._rate_limit_backoff = rate_limit_backoff
        self._sleep = sleep

    @classmethod
    def from_settings(cls, settings: Settings) -> Self:
        client, gets = _make_clients(settings)
        return cls(client, plain_gets=gets)

    def for_account(self, stripe_account: str | None) -> Self:
        """The same gateway acting on a connected account (`Stripe-Account` header)."""
        return type(self)(
            self._client,
            stripe_account=stripe_account,
            rate_limit_retries=self._rate_limit_retries,
            rate_limit_backoff=self._rate_limit_backoff,
            sleep=self._sleep,
            plain_gets=self._plain_gets,
        )

    def _call(
        self,
        operation: str,
        method: Callable[..., T],
        *args: Any,
        params: dict[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> T:
        options: dict[str, Any] = {}
        if idempotency_key:
            options["idempotency_key"] = idempotency_key
        if self._account:
            options["stripe_account"] = self._account
        with span(f"stripe {operation}", {"rpc.system": "stripe", "rpc.method": operation}):
            return self._attempt(operation, method, args, params, options)

    def _attempt(
        self,
        operation: str,
        method: Callable[..., T],
        args: tuple[Any, ...],
        params: dict[str, Any] | None,
        options: dict[str, Any],
    ) -> T:
        attempt = 0
        while True:
            try:
                result = method(*args, params=params or {}, options=options)
            except stripe.RateLimitError as error:
                if attempt >= self._rate_limit_retries:
                    STRIPE_CALLS.labels(operation, "rate_limited").inc()
                    raise StripeUnavailable(f"Stripe kept rate-limiting {operation}") from error
                STRIPE_RATE_LIMIT_RETRIES.inc()
                self._sleep(self._rate_limit_backoff * 2**attempt)
                attempt += 1
                continue
            except stripe.StripeError as error:
                STRIPE_CALLS.labels(operation, "error").inc()
                STRIPE_ERRORS.labels(operation, str(error.http_status or "network")).inc()
                raise _translate(operation, error) from error
            STRIPE_CALLS.labels(operation, "ok").inc()
            return result

    def _list(
        self, operation: str, method: Callable[..., Any], params: dict[str, Any]
    ) -> Iterable[Any]:
        page = self._call(operation, method, params={"limit": 100, **params})
        yield from page.auto_paging_iter()

    def _call_json(
        self,
        operation: str,
        method: Callable[..., Any],
        *args: Any,
        params: dict[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        """Call Stripe as `_call` does; return the object it answered as plain JSON."""
        answered = self._call(
            operation, method, *args, params=params, idempotency_key=idempotency_key
        )
        return dict(answered.to_dict(for_json=True))


def stripe_time(headers: Mapping[str, str]) -> int | None:
    """Return Stripe's clock when it answered (its `Date` header), in whole seconds; None when
    the answer has none that can be read."""
    date = headers.get("date")
    if not date:
        return None
    try:
        return int(parsedate_to_datetime(date).timestamp())
    except (TypeError, ValueError):
        return None


def plain(value: Any) -> dict[str, Any]:
    """A StripeObject (or None) as a plain dict."""
    return value.to_dict() if value is not None else {}


def _translate(operation: str, error: stripe.StripeError) -> StripeFailure:
    """Stripe's error as Tollgate's; messages are Stripe's, which never echo a full key."""
    message = error.user_message or str(error) or "Stripe error"
    body: dict[str, Any] = error.json_body if isinstance(error.json_body, dict) else {}
    details: dict[str, Any] = body["error"] if isinstance(body.get("error"), dict) else {}
    # The SDK fills `code` for some error classes only; the body always has it.
    code = getattr(error, "code", None) or details.get("code")
    param = getattr(error, "param", None)
    if isinstance(error, stripe.IdempotencyError):
        return IdempotencyKeyReused(
            "this Idempotency-Key was used before with a different request; "
            "use a new key for a new request"
        )
    if isinstance(error, stripe.CardError):
        return PaymentDeclined(message, param=param, code=code)
    if isinstance(error, stripe.AuthenticationError | stripe.PermissionError):
        return StripeAuthenticationFailed(
            f"Stripe refused the API key for {operation}: {message}", code=code
        )
    if isinstance(error, stripe.APIConnectionError):
        return StripeUnavailable(f"Stripe could not be reached for {operation}: {message}")
    if isinstance(error, stripe.InvalidRequestError) and error.http_status == 404:
        return StripeNotFound(message, param=param, code=code)
    if isinstance(error, stripe.APIError) or (error.http_status or 0) >= 500:
        return StripeUnavailable(f"Stripe failed during {operation}: {message}")
    return StripeFailure(f"Stripe rejected {operation}: {message}", param=param, code=code)
