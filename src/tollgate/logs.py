"""Logging: plain text, or one JSON object a line (TOLLGATE_LOG_FORMAT=json), with the request id.

The request id comes from the caller's `X-Request-Id` (when it looks like one) or is made here;
it is answered in the same header and set in a context variable that every log line of the
request carries, in the threads the request's work runs on too (Starlette copies the context into
its thread pool). Work the request queues for later carries it where that work is kept.

Nothing secret reaches a line: keys and signatures that slip into a message are masked.
"""

from __future__ import annotations

import itertools
import logging
import os
import re
import sys
import time
from contextvars import ContextVar
from typing import Any

import orjson

REQUEST_ID: ContextVar[str | None] = ContextVar("tollgate_request_id", default=None)
# Fields a line may carry, from `extra={...}` or the context.
FIELDS = (
    "request_id",
    "customer_id",
    "event_id",
    "job",
    "duration_ms",
    "method",
    "route",
    "status",
)
_SECRETS = re.compile(
    r"\b(sk|rk|pk)_(live|test)_[A-Za-z0-9]+|\bwhsec_[A-Za-z0-9]+|\btg_[A-Za-z0-9_-]{16,}"
    r"|(?i:bearer)\s+[A-Za-z0-9._~+/=-]+|\bv1=[0-9a-f]{16,}"
)


def current_request_id() -> str | None:
    """The id of the request this code runs for, if any (a column default reads it)."""
    return REQUEST_ID.get()


_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{8,128}$")


# Every secret the pattern finds holds one of these (lowercased): a line without any, nearly every
# line, is returned as it is. The pattern costs ~50 µs on a line of 80 characters; this ~1 µs.
_MARKERS = ("sk_", "rk_", "pk_", "whsec_", "tg_", "bearer", "v1=")


def mask_secrets(text: str) -> str:
    """Replace anything that looks like a key, a webhook secret or a signature by `***`."""
    lowered = text.lower()
    for marker in _MARKERS:
        if marker in lowered:
            return _SECRETS.sub("***", text)
    return text


def request_id_from(header: bytes | None) -> str:
    """The caller's request id when it is a plausible one, else a new one."""
    if header:
        value = header.decode("latin-1")
        if _REQUEST_ID.match(value):
            return value
    return new_request_id()


# A new request id is this process's random prefix and a counter: unique across processes and
# restarts, and cheaper than fresh random bytes on the entitlement check's hot path.
_PROCESS = os.urandom(5).hex()  # with the counter, 20 hex digits
_SEQUENCE = itertools.count(1)
# The prefix and the counter as one number: `hex` of it is the 20 digits after "0x1" (the leading
# 1 keeps the prefix's zeros), at about half the cost of a formatted counter.
_BASE = (1 << 80) | (int(_PROCESS, 16) << 40)


def new_request_id() -> str:
    return "req_" + hex(_BASE + next(_SEQUENCE))[3:]


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time, level, logger, message, and the fields that are set."""

    # The line's time to the second, made once a second (a line per webhook event).
    _second: tuple[int, str] = (-1, "")

    def format(self, record: logging.LogRecord) -> str:
        second = int(record.created)
        if second != self._second[0]:
            self._second = (second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)))
        line: dict[str, Any] = {
            "time": f"{self._second[1]}.{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": mask_secrets(record.getMessage()),
        }
        request_id = getattr(record, "request_id", None) or REQUEST_ID.get()
        if request_id:
            line["request_id"] = request_id
        for name in FIELDS[1:]:
            value = getattr(record, name, None)
            if value is not None:
                line[name] = value
        if record.exc_info:
            line["error"] = mask_secrets(self.formatException(record.exc_info))
        return orjson.dumps(line, default=str).decode()


class TextFormatter(logging.Formatter):
    """The plain format, with the request id when there is one, and secrets masked."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        request_id = getattr(record, "request_id", None) or REQUEST_ID.get()
        return mask_secrets(f"{text} [{request_id}]" if request_id else text)


class _Stderr(logging.StreamHandler):
    """Write to whatever sys.stderr is at the time (a test runner may swap it)."""

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, _: Any) -> None:
        pass

    def emit(self, record: logging.LogRecord) -> None:
        # StreamHandler's emit, reading the stream once and flushing it without another round
        # through the handler's lock (`handle` holds it already): a line per webhook event.
        try:
            line = self.format(record) + "\n"
            stream = sys.stderr
            stream.write(line)
            stream.flush()
        except RecursionError:
            raise
        except Exception:
            self.handleError(record)


def configure_logging(log_format: str, level: int = logging.INFO) -> None:
    """Send every logger's lines (uvicorn's too) to stderr in `log_format` (text or json).

    For a process's main command only (`serve`, `worker`): it sets the root logger up.
    """
    # No line shows the caller's file, thread or process: skip collecting them for each record
    # (the Logging HOWTO's "Optimization"; a third of a line's cost on the webhook path).
    logging._srcfile = None
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    handler = _Stderr()
    if log_format == "json":
        formatter: logging.Formatter = JsonFormatter()
    else:
        formatter = TextFormatter("%(levelname)s:     %(name)s: %(message)s")
        formatter.converter = time.gmtime
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers[:] = []
        logger.propagate = True
