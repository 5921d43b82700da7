"""Usage counted in Redis: the hard-limit check and the increment as one atomic step.

With `TOLLGATE_REDIS_URL` set, `record_usage` counts a batch here, in one Lua script that walks
the batch's new events in order, refuses each one that would pass a hard limit and increments
the rest, so concurrent batches from any number of processes cannot overshoot a limit. The
database stays the record: the events, and one pending row per counter per batch
(usage_pending), commit in the request's transaction, and `flush_usage` folds pending rows into
usage_counters.

A counter is a hash `<prefix>u:<period start>:<meter>:<customer>` with fields `v` (the value),
`h` (units reservations hold, counted against the limit with `v`),
`a`/`i` (time and id of the latest reading, for `last` meters), `w` (the highest warning percent
known to be recorded), `n` (how many batches touched it) and `g` (a generation stamped when the
hash is built from the database). A missing hash (Redis restarted, a key evicted or expired) is
built from the database before use. When the transaction fails after the script, the increment
is given back (a `sum` is decremented if the hash is still the same generation; `max` and `last`
hashes are dropped and rebuilt); so is an event's, when its credits are used up. A process that
dies between the script and its commit leaves the hash over-counted until `resync_usage` sees it
differ from the database twice with nobody touching it in between, and sets it to the
database's value.
"""

from __future__ import annotations

import logging
import os
import secrets
import threading
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from itertools import compress
from typing import Any, ClassVar

import redis
from redis.commands.core import Script
from redis.exceptions import NoScriptError
from sqlalchemy import Connection

from tollgate.db.queries import usage as queries
from tollgate.domain.catalog import Aggregation
from tollgate.domain.errors import TollgateError
from tollgate.domain.metering import Counter, fold_pending
from tollgate.services.usage.counters import Tallies, Tally
from tollgate.services.usage.events import Event

log = logging.getLogger("tollgate.usage")

# How long a counter hash outlives its period (late reads, the flush of the last batches).
KEEP_AFTER_PERIOD = timedelta(days=7)

_AGGREGATION_CODE = {Aggregation.SUM: "s", Aggregation.MAX: "m", Aggregation.LAST: "l"}

# KEYS: the counters. ARGV: counter count C; C times (aggregation code, limit or -1, rate
# window seconds or 0, rate limit or -1); the events as one string of "counter value time hold"
# quads (time in microseconds, for `last` meters and rate-limited counters only; hold: the
# signed change in held units); then the id of each event of a `last` meter, in order.
# A rate window is fixed (keyed by its start, fields `ws`/`wv`): an event of the current or a
# later window must fit its limit; a late event of an earlier window is not checked.
# Returns {0, missing counter indexes...} without changing anything when a hash is missing,
# else {1, "10…" (accepted or not per event), "before after w generation held" of each counter}.
_COUNT = """
local c = tonumber(ARGV[1])
local missing = {}
for k = 1, c do
  if redis.call('EXISTS', KEYS[k]) == 0 then missing[#missing + 1] = k end
end
if #missing > 0 then
  table.insert(missing, 1, 0)
  return missing
end
local value, before, at, id, w, gen, held, held0 = {}, {}, {}, {}, {}, {}, {}, {}
local ws, wv, ws0, wv0 = {}, {}, {}, {}
for k = 1, c do
  local h = redis.call('HMGET', KEYS[k], 'v', 'a', 'i', 'w', 'g', 'h', 'ws', 'wv')
  value[k] = tonumber(h[1]) or 0
  before[k] = value[k]
  at[k] = tonumber(h[2]) or -1
  id[k] = h[3] or ''
  w[k] = tonumber(h[4]) or 0
  gen[k] = h[5] or ''
  held[k] = tonumber(h[6]) or 0
  held0[k] = held[k]
  ws[k] = tonumber(h[7]) or -1
  wv[k] = tonumber(h[8]) or 0
  ws0[k] = ws[k]
  wv0[k] = wv[k]
end
local decisions = {}
local base = 2 + 4 * c
local ids = base
for k, v, t, hold in string.gmatch(ARGV[base], '(%d+) (-?%d+) (%d+) (-?%d+)') do
  k = tonumber(k)
  v = tonumber(v)
  hold = tonumber(hold)
  t = tonumber(t)
  local agg = ARGV[4 * k - 2]
  local limit = tonumber(ARGV[4 * k - 1])
  local wsize = tonumber(ARGV[4 * k])
  local wlimit = tonumber(ARGV[4 * k + 1])
  local wstart, wcur = nil, 0
  if wsize > 0 then
    wstart = math.floor(t / 1000000 / wsize) * wsize
    if wstart == ws[k] then wcur = wv[k] elseif wstart < ws[k] then wstart = nil end
  end
  local eid = ''
  if agg == 'l' then
    ids = ids + 1
    eid = ARGV[ids]
  end
  local after
  if agg == 's' then after = value[k] + v
  elseif agg == 'm' then after = math.max(value[k], v)
  else after = v end
  local grows = agg ~= 's' or v + hold > 0
  local refuse = limit >= 0 and grows and after + held[k] + hold > limit
  if wstart ~= nil and wlimit >= 0 and v > 0 and wcur + v > wlimit then refuse = true end
  if refuse then
    decisions[#decisions + 1] = '0'
  else
    decisions[#decisions + 1] = '1'
    held[k] = held[k] + hold
    if wstart ~= nil then
      ws[k] = wstart
      wv[k] = wcur + v
    end
    if agg == 'l' then
      if t > at[k] or (t == at[k] and eid >= id[k]) then
        value[k] = v
        at[k] = t
        id[k] = eid
      end
    else
      value[k] = after
    end
  end
end
local out = {}
for k = 1, c do
  if value[k] ~= before[k] or ARGV[4 * k - 2] == 'l' then
    redis.call('HSET', KEYS[k], 'v', string.format('%.0f', value[k]))
    if ARGV[4 * k - 2] == 'l' and at[k] >= 0 then
      redis.call('HSET', KEYS[k], 'a', string.format('%.0f', at[k]), 'i', id[k])
    end
  end
  if held[k] ~= held0[k] then
    redis.call('HSET', KEYS[k], 'h', string.format('%.0f', held[k]))
  end
  if ws[k] ~= ws0[k] or wv[k] ~= wv0[k] then
    redis.call('HSET', KEYS[k], 'ws', string.format('%.0f', ws[k]),
               'wv', string.format('%.0f', wv[k]))
  end
  redis.call('HINCRBY', KEYS[k], 'n', 1)
  out[#out + 1] = string.format('%.0f %.0f %d %s %.0f', before[k], value[k], w[k], gen[k], held[k])
end
return {1, table.concat(decisions), table.concat(out, ' ')}
"""

# KEYS: counters to build. ARGV: 6 per key (value, latest time or -1, latest id, generation,
# expire-at Unix seconds, held units). A hash that exists already is left alone (another
# process built it).
_BUILD = """
for k = 1, #KEYS do
  local b = 6 * (k - 1)
  if redis.call('EXISTS', KEYS[k]) == 0 then
    redis.call('HSET', KEYS[k], 'v', ARGV[b + 1], 'a', ARGV[b + 2], 'i', ARGV[b + 3],
               'w', 0, 'n', 0, 'g', ARGV[b + 4], 'h', ARGV[b + 6])
    redis.call('EXPIREAT', KEYS[k], ARGV[b + 5])
  end
end
return #KEYS
"""

# KEYS: counters. ARGV: 4 per key (aggregation code, amount, generation, held change). A `sum`
# hash of the same generation gives the amount and the held change back; any other hash is
# dropped, to be built again.
_GIVE_BACK = """
for k = 1, #KEYS do
  local b = 4 * (k - 1)
  local gen = redis.call('HGET', KEYS[k], 'g')
  if gen == ARGV[b + 3] and ARGV[b + 1] == 's' then
    -- (a zero is skipped: Lua writes -0 as "-0", which HINCRBY refuses)
    local amount, held = tonumber(ARGV[b + 2]), tonumber(ARGV[b + 4])
    if amount ~= 0 then redis.call('HINCRBY', KEYS[k], 'v', 0 - amount) end
    if held ~= 0 then redis.call('HINCRBY', KEYS[k], 'h', 0 - held) end
  elseif gen then
    redis.call('DEL', KEYS[k])
  end
end
return #KEYS
"""

# KEYS: counters. ARGV: percent per key. Raise `w` (thresholds known to be recorded).
_MARK = """
for k = 1, #KEYS do
  if redis.call('EXISTS', KEYS[k]) == 1 then
    local w = tonumber(redis.call('HGET', KEYS[k], 'w')) or 0
    if tonumber(ARGV[k]) > w then redis.call('HSET', KEYS[k], 'w', ARGV[k]) end
  end
end
return #KEYS
"""

# KEYS: one counter. ARGV: touches seen, value seen, database value. If no batch touched the
# hash since it was seen and it still differs from the database as it did then, set it to the
# database's value (1); else note what was seen now (0).
_RESYNC = """
local h = redis.call('HMGET', KEYS[1], 'n', 'v', 'o')
if not h[1] then return -1 end
if h[1] ~= ARGV[1] or h[2] ~= ARGV[2] then return -1 end
local seen = ARGV[1] .. ':' .. ARGV[2] .. ':' .. ARGV[3]
if h[2] == ARGV[3] then
  redis.call('HDEL', KEYS[1], 'o')
  return 2
end
if h[3] == seen then
  redis.call('HSET', KEYS[1], 'v', ARGV[3])
  redis.call('HDEL', KEYS[1], 'o')
  return 1
end
redis.call('HSET', KEYS[1], 'o', seen)
return 0
"""


class CountersUnavailable(TollgateError):
    """Redis did not answer: the batch is refused whole (nothing counted), to be sent again."""

    type: ClassVar[str] = "service_unavailable"
    status: ClassVar[int] = 503


@dataclass(frozen=True, slots=True)
class CounterKey:
    """One customer's counter of one meter in one billing period."""

    customer: str
    meter: str
    period_start: datetime
    period_end: datetime


@dataclass(frozen=True, slots=True)
class Stored:
    """A counter as the database has it (folded counter plus pending rows)."""

    value: int
    last_at: datetime | None = None
    last_id: str | None = None
    held: int = 0


@dataclass(frozen=True, slots=True)
class Moved:
    """What a batch did to one counter in Redis."""

    key: CounterKey
    aggregation: Aggregation
    before: int
    after: int
    warned: int  # the highest warning percent known to be recorded this period
    generation: str
    held: int = 0  # units reservations hold, after the batch


@dataclass(frozen=True)
class Counted:
    """The script's answer: accepted or not per event, and each counter before and after."""

    accepted: list[bool]
    moved: dict[CounterKey, Moved]


# Reads the database's value of counters missing from Redis (in the caller's transaction).
LoadStored = Callable[[Sequence[CounterKey]], Mapping[CounterKey, Stored]]


class RedisCounters:
    """The hot counters of one Tollgate deployment in one Redis (under a key prefix)."""

    def __init__(self, url: str, *, prefix: str = "tollgate:") -> None:
        self.client = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=2)
        self.prefix = prefix
        self._count = self.client.register_script(_COUNT)
        self._lines = _Lines(self.client.connection_pool)
        self._build = self.client.register_script(_BUILD)
        self._give_back = self.client.register_script(_GIVE_BACK)
        self._mark = self.client.register_script(_MARK)
        self._resync = self.client.register_script(_RESYNC)
        self.builds = 0  # hashes built from the database (for tests and metrics)

    def close(self) -> None:
        self._lines.close()
        self.client.close()

    @contextmanager
    def batch(self) -> Iterator[RedisBatch]:
        """Return one batch's counters: given back if its transaction fails, marked after."""
        batch = RedisBatch(self)
        try:
            yield batch
        except BaseException:
            batch.give_back_held()
            raise
        batch.mark_recorded()

    # -- keys ------------------------------------------------------------------------------

    def key(self, counter: CounterKey) -> str:
        start = int(counter.period_start.timestamp())
        return f"{self.prefix}u:{start}:{counter.meter}:{counter.customer}"

    def parse_key(self, raw: str) -> tuple[str, str, datetime] | None:
        """Return (customer, meter, period start) of a counter key, or None if not one."""
        if not raw.startswith(f"{self.prefix}u:"):
            return None
        start, meter, customer = raw[len(self.prefix) + 2 :].split(":", 2)
        return customer, meter, datetime.fromtimestamp(int(start), UTC)

    # -- counting --------------------------------------------------------------------------

    def count(
        self,
        counters: Sequence[tuple[CounterKey, Aggregation, int | None]],
        events: Sequence[tuple[int, int, datetime, str, int]],
        load: LoadStored,
        now: datetime,
        windows: Sequence[tuple[int, int | None]] | None = None,
    ) -> Counted:
        """Check and count events in order: (counter index, value, time, id, hold) each.

        `counters` gives each counter's aggregation and hard limit (None: not limited);
        `windows` each one's rate limit (window seconds, 0 for none; limit).
        """
        keys = [self.key(counter) for counter, _, _ in counters]
        rates = windows or [(0, None)] * len(counters)
        argv: list[Any] = [len(counters)]
        for (_, aggregation, limit), (seconds, rate) in zip(counters, rates, strict=True):
            argv += [
                _AGGREGATION_CODE[aggregation],
                -1 if limit is None else limit,
                seconds,
                -1 if rate is None else rate,
            ]
        last = {
            index
            for index, (_, aggregation, _) in enumerate(counters)
            if aggregation is Aggregation.LAST
        }
        timed = last | {index for index, (seconds, _) in enumerate(rates) if seconds}
        argv.append(
            " ".join(
                f"{index + 1} {value} {_micros(occurred_at) if index in timed else 0} {hold}"
                for index, value, occurred_at, _, hold in events
            )
        )
        if last:
            argv += [event_id for index, _, _, event_id, _ in events if index in last]
        try:
            for _ in range(3):
                answer = self._lines.run(self._count, keys, argv)
                if answer[0] == 1:
                    break
                self._build_missing([counters[int(k) - 1][0] for k in answer[1:]], load, now)
            else:
                raise RuntimeError("Redis counters kept disappearing while being built")
        except redis.RedisError as error:
            # The URL stays out of the message: it may hold a password.
            raise CountersUnavailable(
                f"the usage counters (Redis) did not answer ({type(error).__name__}); nothing "
                "of this batch was counted, send it again"
            ) from None
        decisions = _text(answer[1])
        numbers = _text(answer[2]).split(" ")
        moved: dict[CounterKey, Moved] = {}
        for position, (counter, aggregation, _) in enumerate(counters):
            before, after, warned, generation, held = numbers[5 * position : 5 * position + 5]
            moved[counter] = Moved(
                counter, aggregation, int(before), int(after), int(warned), generation, int(held)
            )
        return Counted([mark == "1" for mark in decisions], moved)

    def _build_missing(
        self, missing: Sequence[CounterKey], load: LoadStored, now: datetime
    ) -> None:
        stored = load(missing)
        args: list[Any] = []
        for counter in missing:
            found = stored.get(counter, Stored(0))
            # A period that ended (usage recorded late, a test clock) still keeps a while.
            expires = max(counter.period_end, now) + KEEP_AFTER_PERIOD
            args += [
                found.value,
                _micros(found.last_at) if found.last_at is not None else -1,
                found.last_id or "",
                secrets.token_hex(6),
                int(expires.timestamp()),
                found.held,
            ]
        self._build(keys=[self.key(counter) for counter in missing], args=args)
        self.builds += len(missing)
        log.info("built %d usage counters in Redis from the database", len(missing))

    def give_back(self, moves: Iterable[tuple[Moved, int, int]]) -> None:
        """Undo increments of a batch that did not commit: (counter move, amount, held change)
        each."""
        keys: list[str] = []
        args: list[Any] = []
        for move, amount, held in moves:
            if amount == 0 and held == 0 and move.aggregation is Aggregation.SUM:
                continue
            keys.append(self.key(move.key))
            args += [_AGGREGATION_CODE[move.aggregation], amount, move.generation, held]
        if not keys:
            return
        try:
            self._give_back(keys=keys, args=args)
        except redis.RedisError:
            # Left over-counted: `resync` corrects it, and a rebuilt hash starts from the database.
            log.exception("could not give back %d usage counter increments", len(keys))

    def mark_warned(self, marks: Mapping[CounterKey, int]) -> None:
        """Note warning percents now recorded in the database, so batches stop re-checking."""
        if not marks:
            return
        try:
            self._mark(keys=[self.key(counter) for counter in marks], args=list(marks.values()))
        except redis.RedisError:  # only saves later batches a look at the thresholds table
            log.exception("could not note recorded usage thresholds in Redis")

    # -- resync ----------------------------------------------------------------------------

    def scan(self) -> Iterable[str]:
        """Yield the keys of every counter under this prefix."""
        for raw in self.client.scan_iter(match=f"{self.prefix}u:*", count=1000):
            yield raw.decode() if isinstance(raw, bytes) else str(raw)

    def snapshot(self, keys: Sequence[str]) -> list[tuple[int, int] | None]:
        """Return (touches, value) of each key, None where it is gone."""
        pipe = self.client.pipeline(transaction=False)
        for key in keys:
            pipe.hmget(key, "n", "v")
        found: list[tuple[int, int] | None] = []
        for touches, value in pipe.execute():
            found.append(None if touches is None or value is None else (int(touches), int(value)))
        return found

    def resync_one(self, key: str, touches: int, value: int, stored: int) -> int:
        """Compare one counter with the database (see `_RESYNC`): 1 if it was corrected."""
        return int(self._resync(keys=[key], args=[touches, value, stored]))


class _Lines:
    """Each thread's own connection to Redis, for the counting script every batch runs.

    A batch (a lone in-process consume above all) waits for one script round trip; through
    the client's `Script` call, redis-py 8 also takes a connection from its pool and gives it
    back (a lock, observability hooks, each way), wraps the call in its retry policy and
    dispatches the command by name: about 20 µs of CPU a call on top of the 20 µs the round trip
    itself costs (`send_command` and `read_response` alone). Here the thread's connection is
    kept and the command sent on it directly. As the pool does before handing a connection out,
    one with anything to read (the server closed it: a restart, an idle timeout) is opened
    anew before the script is sent, so a connection that died unnoticed is not what fails the
    batch. A call that fails after sending is not sent again (redis-py's retry would): the
    script may have counted, and the batch is refused whole (CountersUnavailable) with what it
    counted given back, as for any other Redis error.
    """

    def __init__(self, pool: redis.ConnectionPool) -> None:
        self._pool = pool
        # Each `_Line` is held by its thread alone: a thread that ends drops its line, which
        # closes its connection then (the consume writer's thread ends after each pause, and
        # a new one opens its own), whatever else redis-py's objects hold. `_opened` only finds
        # the live ones for `close`.
        self._local = threading.local()
        self._lock = threading.Lock()
        self._opened: weakref.WeakSet[_Line] = weakref.WeakSet()

    def run(self, script: Script, keys: Sequence[str], args: Sequence[Any]) -> Any:
        """Run `script` on this thread's connection; raise redis's errors as they come."""
        connection = self._connection()
        try:
            stale = connection.can_read()  # data left unread, or the server closed it (EOF)
        except (redis.ConnectionError, redis.TimeoutError, OSError):
            stale = True  # closed: redis-py says so by raising
        if stale:
            connection.disconnect()  # opened anew by the send
        try:
            connection.send_command("EVALSHA", script.sha, len(keys), *keys, *args)
            try:
                return connection.read_response()
            except NoScriptError:  # a Redis restarted (or flushed) since the script was loaded
                connection.send_command("EVAL", script.script, len(keys), *keys, *args)
                return connection.read_response()
        except (redis.ConnectionError, redis.TimeoutError, OSError):
            connection.disconnect()  # the next call opens it anew
            raise

    def _connection(self) -> redis.connection.AbstractConnection:
        line: _Line | None = getattr(self._local, "line", None)
        if line is not None and line.pid == os.getpid():  # a forked child opens its own
            return line.connection
        pool = self._pool
        line = self._local.line = _Line(pool.connection_class(**pool.connection_kwargs))
        with self._lock:
            self._opened.add(line)
        return line.connection

    def close(self) -> None:
        """Close every live thread's connection."""
        with self._lock:
            opened = list(self._opened)
            self._opened.clear()
        for line in opened:
            line.connection.disconnect()  # redis-py shuts a socket down only in its own process


class _Line:
    """One thread's connection, closed when the thread lets go of it."""

    __slots__ = ("__weakref__", "connection", "pid")

    def __init__(self, connection: redis.connection.AbstractConnection) -> None:
        self.connection = connection
        self.pid = os.getpid()

    def __del__(self) -> None:
        self.connection.disconnect()


def _text(raw: Any) -> str:
    return raw.decode() if isinstance(raw, bytes) else str(raw)


def _micros(moment: datetime) -> int:
    return int(moment.timestamp() * 1_000_000)


# -- one batch -------------------------------------------------------------------------------


class RedisBatch:
    """One batch's counters in Redis: checked and counted by one script, pending rows written."""

    # Nothing is held: the script counts for a batch that may still be committing when
    # another with the same events runs it (`recording._refused_recorded`).
    waits_for_recorders = False

    def __init__(self, counters: RedisCounters) -> None:
        self.counters = counters
        self._moves: dict[Tally, Moved] = {}
        self._fits: dict[int, bool] = {}  # by event index: the script's answer
        # What the script counted on behalf of this batch, and of that, what was refused for
        # credits and is still to be given back.
        self._counted: list[tuple[Tally, Event]] = []
        self._refused: list[tuple[Tally, Event]] = []

    def lock(self, connection: Connection, tallies: Sequence[Tally], now: datetime) -> None:
        pass  # nothing to hold before the ids are known: `check` counts only new events

    def check(
        self, connection: Connection, tallies: Tallies, events: Sequence[Event], now: datetime
    ) -> None:
        pairs = [(tallies[(event.customer, event.meter)], event) for event in events]
        touched = sorted({tally: None for tally, _ in pairs}, key=lambda tally: tally.key)
        position = {tally: index for index, tally in enumerate(touched)}
        specs = [
            (
                CounterKey(tally.customer.id, tally.meter, tally.period.start, tally.period.end),
                tally.aggregation,
                tally.limit,
            )
            for tally in touched
        ]
        counted = self.counters.count(
            specs,
            [
                (position[tally], event.value, event.occurred_at, event.id, event.hold)
                for tally, event in pairs
            ],
            partial(stored_counters, connection),
            now,
            [(tally.window_seconds, tally.window_limit) for tally in touched],
        )
        for tally, (key, _, _) in zip(touched, specs, strict=True):
            move = self._moves[tally] = counted.moved[key]
            tally.before, tally.counter.value, tally.warned = move.before, move.after, move.warned
            tally.held = move.held
        self._fits = dict(zip([event.index for event in events], counted.accepted, strict=True))
        self._counted = list(compress(pairs, counted.accepted))

    def fits(self, tally: Tally, event: Event) -> bool:
        return self._fits[event.index]

    def count(self, tally: Tally, event: Event) -> None:
        pass  # the script counted it

    def refuse(self, tally: Tally, event: Event) -> None:
        self._refused.append((tally, event))

    def write(
        self,
        connection: Connection,
        moved: Sequence[Tally],
        events: Sequence[queries.EventRow],
        now: datetime,
    ) -> int:
        if events:
            new = queries.insert_events(connection, events, now)
            if new != len(events):
                return new  # the batch is given back and decided again
        if self._refused:
            # Counted in Redis but refused for credits: given back now, not when the batch ends.
            self.counters.give_back(self._amounts(self._refused))
            refused = {event.index for _, event in self._refused}
            self._counted = [pair for pair in self._counted if pair[1].index not in refused]
            self._refused = []
        if moved:
            batches: dict[Tally, list[Event]] = {tally: [] for tally in moved}
            for tally, event in self._counted:
                batches[tally].append(event)
            queries.insert_pending(
                connection,
                [_pending_row(tally, counted, now) for tally, counted in batches.items()],
            )
        return len(events)

    def give_back_held(self) -> None:
        """Undo what the script counted for this batch (its transaction failed)."""
        if self._counted:
            self.counters.give_back(self._amounts(self._counted))

    def mark_recorded(self) -> None:
        """Note in Redis the warning levels this batch recorded (it committed)."""
        marks = {
            move.key: tally.warned
            for tally, move in self._moves.items()
            if tally.warned is not None and tally.warned > move.warned
        }
        if marks:
            self.counters.mark_warned(marks)

    def _amounts(self, pairs: Sequence[tuple[Tally, Event]]) -> list[tuple[Moved, int, int]]:
        """Return what the events add up to per counter: (counter move, amount, held change)."""
        amounts: dict[Tally, tuple[int, int]] = {}
        for tally, event in pairs:
            value, held = amounts.get(tally, (0, 0))
            amounts[tally] = (value + event.value, held + event.hold)
        return [(self._moves[tally], value, held) for tally, (value, held) in amounts.items()]


def _pending_row(tally: Tally, events: list[Event], now: datetime) -> queries.NewPending:
    """Return the usage_pending row of one counter's events in a batch."""
    latest = max(events, key=lambda event: (event.occurred_at, event.id))
    if tally.aggregation is Aggregation.SUM:
        value = sum(event.value for event in events)
    elif tally.aggregation is Aggregation.MAX:
        value = max(event.value for event in events)
    else:
        value = latest.value
    return (
        tally.customer.id,
        tally.meter,
        tally.period.start,
        tally.period.end,
        tally.aggregation.value,
        value,
        latest.occurred_at,
        latest.id,
        now,
        sum(event.hold for event in events),
    )


def stored_counters(connection: Connection, keys: Sequence[CounterKey]) -> dict[CounterKey, Stored]:
    """Return the database's value of counters: the folded counter plus pending rows."""
    wanted = {(key.customer, key.meter, key.period_start): key for key in keys}
    customers = sorted({key.customer for key in keys})
    found: dict[CounterKey, Counter] = {}
    held: dict[CounterKey, int] = {}
    for row in queries.counters_of(connection, customers):
        key = wanted.get((row.customer_id, row.meter, row.period_start))
        if key is not None:
            found[key] = Counter(int(row.value), row.last_at, row.last_event_id)
            held[key] = int(row.held)
    pending = [
        (key, row)
        for row in queries.pending_of(connection, customers)
        if (key := wanted.get((row.customer_id, row.meter, row.period_start))) is not None
    ]
    for key, row in pending:
        held[key] = held.get(key, 0) + int(row.held)
    fold_pending(
        found,
        ((key, row.aggregation, row.value, row.last_at, row.last_event_id) for key, row in pending),
    )
    return {
        key: Stored(counter.value, counter.last_at, counter.last_id, held.get(key, 0))
        for key, counter in found.items()
    }
