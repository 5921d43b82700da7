"""Wire the pieces together once: settings, database, clock, catalog, Stripe gateway."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from functools import cached_property

from tollgate.catalog_file import load_catalog_file
from tollgate.clock import Clock, SystemClock
from tollgate.config import ConfigError, Settings
from tollgate.db.unit_of_work import Database
from tollgate.domain.catalog import Catalog
from tollgate.domain.dunning import DunningPolicy
from tollgate.services.api_keys import ApiKeyAuthenticator
from tollgate.services.catalog_live import LiveCatalog
from tollgate.services.closed_days import ClosedDays
from tollgate.services.entitlements import EntitlementCache
from tollgate.services.usage import ConsumeWriter, RedisCounters
from tollgate.services.webhooks import WebhookIntake
from tollgate.stripe.gateway import StripeGateway


@dataclass
class Container:
    """Everything a route, command or job needs, built from the settings."""

    settings: Settings
    db: Database
    clock: Clock = field(default_factory=SystemClock)
    catalog_override: Catalog | None = None
    gateway_override: StripeGateway | None = None

    @property
    def catalog(self) -> Catalog:
        """The catalog now: the newest synced one (swapped in whole), else the file.

        One Catalog object per use: a request that needs it several times should keep it.
        """
        if self.catalog_override is not None:
            return self.catalog_override
        return self.live_catalog.current()

    def read_catalog_file(self) -> Catalog:
        """Read and check TOLLGATE_CATALOG (what the next `catalog sync` would store)."""
        path = self.settings.catalog_path
        if not path.exists():
            raise ConfigError(
                f"TOLLGATE_CATALOG: {path} does not exist (start from catalog.example.yaml)"
            )
        return load_catalog_file(path)

    @cached_property
    def live_catalog(self) -> LiveCatalog:
        """The newest synced catalog, polled every TOLLGATE_CATALOG_REFRESH seconds."""
        return LiveCatalog(
            db=self.db,
            fallback=self.read_catalog_file,
            refresh_interval=self.settings.catalog_refresh,
            on_swap=self._catalog_swapped,
        )

    def _catalog_swapped(self, catalog: Catalog) -> None:
        """A newer catalog arrived: cached decisions were made under the old one."""
        if "entitlements" in self.__dict__:
            self.entitlements.use_catalog(catalog)

    @cached_property
    def stripe(self) -> StripeGateway:
        """The Stripe gateway; raises ConfigError when no STRIPE_SECRET_KEY is set."""
        if self.gateway_override is not None:
            return self.gateway_override
        return StripeGateway.from_settings(self.settings)

    def optional_stripe(self) -> StripeGateway | None:
        """The Stripe gateway, or None without a STRIPE_SECRET_KEY (for work that may not need
        Stripe: offline customers, most webhook events)."""
        try:
            return self.stripe
        except ConfigError:
            return None

    @cached_property
    def dunning_policy(self) -> DunningPolicy:
        """What a failed payment does to email and access (TOLLGATE_DUNNING_POLICY)."""
        return self.settings.dunning_policy

    @cached_property
    def webhook_intake(self) -> WebhookIntake:
        """Where Stripe's deliveries go: verified, stored and applied by one writer thread."""
        return WebhookIntake(
            db=self.db,
            clock=self.clock,
            settings=self.settings,
            dunning=self.dunning_policy,
            gateway=self.optional_stripe,
            on_change=self.forget_decisions,
        )

    @cached_property
    def consume_writer(self) -> ConsumeWriter:
        """Where consume calls go: decided and committed in groups by one writer thread."""
        return ConsumeWriter(
            db=self.db,
            catalog=lambda: self.catalog,
            clock=self.clock,
            grace=self.grace,
            counters=self.usage_counters,
            on_change=self.forget_decisions,
        )

    def forget_decisions(self, customers: Sequence[str]) -> None:
        """Drop this process's cached entitlement decisions of these customers, if any."""
        if "entitlements" in self.__dict__:
            self.entitlements.forget(customers)

    @cached_property
    def entitlements(self) -> EntitlementCache:
        """This process's cache of entitlement decisions (dropped as the change feed says)."""
        return EntitlementCache(
            db=self.db,
            catalog=self.catalog,
            clock=self.clock,
            grace=self.grace,
            ttl=self.settings.entitlement_cache_ttl,
            refresh_interval=self.settings.entitlement_refresh,
        )

    @property
    def grace(self) -> timedelta:
        """How long a past-due subscription keeps its plan."""
        return timedelta(days=self.settings.past_due_grace_days)

    @cached_property
    def closed_days(self) -> ClosedDays:
        """The billing page chart's daily sums of days that have ended, kept in this process."""
        return ClosedDays()

    @cached_property
    def authenticator(self) -> ApiKeyAuthenticator:
        return ApiKeyAuthenticator(db=self.db, bootstrap=self.settings.bootstrap_api_keys)

    @cached_property
    def usage_counters(self) -> RedisCounters | None:
        """The hot usage counters in Redis, or None when TOLLGATE_REDIS_URL is not set."""
        if not self.settings.redis_url:
            return None
        return RedisCounters(self.settings.redis_url, prefix=self.settings.redis_prefix)

    def close(self) -> None:
        if "webhook_intake" in self.__dict__:
            self.webhook_intake.close()
        if "consume_writer" in self.__dict__:
            self.consume_writer.close()
        if "entitlements" in self.__dict__:
            self.entitlements.stop_background()
        if "live_catalog" in self.__dict__:
            self.live_catalog.stop_background()
        counters = self.__dict__.get("usage_counters")
        if counters is not None:
            counters.close()
        self.db.dispose()


def open_database(settings: Settings) -> Database:
    """The database the settings name, through the pooler they name."""
    return Database(settings.database_url, pooler=settings.database_pooler)


def build_container(settings: Settings, **overrides: object) -> Container:
    return Container(settings=settings, db=open_database(settings), **overrides)  # type: ignore[arg-type]
