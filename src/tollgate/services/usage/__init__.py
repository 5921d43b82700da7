"""Usage metering: record usage exactly once, enforce hard limits atomically, queue overage.

`record_usage` decides a batch in one transaction with one loop (`recording`) over a counter
store (`counters`): the database's counters (`database_counters`), locked for the batch, or,
with `TOLLGATE_REDIS_URL`, Redis's (`redis_counters`), where one Lua script checks and counts
and the database gets a pending row per counter that `flush_usage` folds in later (`flush`).
Threshold crossings, their notifications and the overage for Stripe are written in the same
transaction as the usage that caused them. `get_usage` reads a customer's period (`reading`).
"""

from tollgate.services.usage.consume import (
    ConsumeCall,
    Consumed,
    ConsumeWriter,
    consume,
    consume_many,
)
from tollgate.services.usage.counters import CounterBatch, CounterStore, Tally
from tollgate.services.usage.database_counters import DatabaseCounters
from tollgate.services.usage.events import (
    MAX_ID_LENGTH,
    Event,
    Rejection,
    UsageReport,
    parse_events,
)
from tollgate.services.usage.flush import FlushReport, ResyncReport, flush_usage, resync_usage
from tollgate.services.usage.reading import CustomerUsage, MeterUsage, get_usage
from tollgate.services.usage.recording import record_usage
from tollgate.services.usage.redis_counters import (
    Counted,
    CounterKey,
    CountersUnavailable,
    Moved,
    RedisCounters,
    Stored,
)
from tollgate.services.usage.thresholds import threshold_facts

__all__ = [
    "MAX_ID_LENGTH",
    "ConsumeCall",
    "ConsumeWriter",
    "Consumed",
    "Counted",
    "CounterBatch",
    "CounterKey",
    "CounterStore",
    "CountersUnavailable",
    "CustomerUsage",
    "DatabaseCounters",
    "Event",
    "FlushReport",
    "MeterUsage",
    "Moved",
    "RedisCounters",
    "Rejection",
    "ResyncReport",
    "Stored",
    "Tally",
    "UsageReport",
    "consume",
    "consume_many",
    "flush_usage",
    "get_usage",
    "parse_events",
    "record_usage",
    "resync_usage",
    "threshold_facts",
]
