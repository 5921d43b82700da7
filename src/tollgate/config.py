"""Settings, read in one place: environment variables or a `.env` file."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import time
from decimal import Decimal
from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from tollgate.domain.dunning import DEFAULT_POLICY as DEFAULT_DUNNING_POLICY
from tollgate.domain.dunning import DunningPolicy, parse_dunning_policy
from tollgate.domain.payment_limits import parse_card_limits
from tollgate.money import normalize_currency

Scope = Literal["read", "write"]
ProrationBehavior = Literal["create_prorations", "none", "always_invoice"]
SeatChangeBehavior = Literal["exact", "incremental"]
TrialEndBehavior = Literal["release", "cancel"]
SCOPES: tuple[Scope, ...] = ("read", "write")
_PLACEHOLDERS = ("changeme", "change-me", "placeholder", "xxx", "your_key", "sk_test_...")


class ConfigError(Exception):
    """A setting is missing or malformed; the message names the variable."""


@dataclass(frozen=True)
class BootstrapKey:
    """An API key given in TOLLGATE_API_KEYS (`name:scope:secret`)."""

    name: str
    scope: Scope
    secret: SecretStr


class Settings(BaseSettings):
    """Every setting Tollgate reads; names are the environment variables of DESIGN.md."""

    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", populate_by_name=True
    )

    env: Literal["dev", "test", "production"] = Field("production", alias="TOLLGATE_ENV")
    database_url: str = Field("sqlite:///./tollgate.db", alias="TOLLGATE_DATABASE_URL")
    catalog_path: Path = Field(Path("./catalog.yaml"), alias="TOLLGATE_CATALOG")
    api_keys_raw: SecretStr = Field(SecretStr(""), alias="TOLLGATE_API_KEYS")
    default_currency: str = Field("usd", alias="TOLLGATE_DEFAULT_CURRENCY")
    sync_catalog_on_start: bool = Field(False, alias="TOLLGATE_SYNC_CATALOG_ON_START")
    max_body_bytes: int = Field(1024 * 1024, alias="TOLLGATE_MAX_BODY_BYTES", ge=1024)
    webhook_tolerance_seconds: int = Field(300, alias="TOLLGATE_WEBHOOK_TOLERANCE", ge=1, le=3600)

    stripe_secret_key: SecretStr | None = Field(None, alias="STRIPE_SECRET_KEY")
    stripe_webhook_secrets_raw: SecretStr = Field(SecretStr(""), alias="STRIPE_WEBHOOK_SECRETS")
    stripe_api_base: str | None = Field(None, alias="STRIPE_API_BASE")
    stripe_automatic_tax: bool = Field(False, alias="STRIPE_AUTOMATIC_TAX")
    stripe_max_retries: int = Field(3, alias="STRIPE_MAX_RETRIES", ge=0, le=10)
    stripe_timeout_seconds: float = Field(30.0, alias="STRIPE_TIMEOUT", gt=0, le=120)
    # Test mode only: new platform customers are attached to this test clock (`tollgate dev`
    # sets it, so `tollgate dev advance` moves every demo customer's billing at once).
    stripe_test_clock: str | None = Field(
        None, alias="STRIPE_TEST_CLOCK", pattern=r"^clock_[A-Za-z0-9]{1,250}$"
    )

    # -- customers and subscriptions -----------------------------------------------------------
    # Credits granted to each new customer, recorded for the credits capability to spend.
    onboard_credits: int = Field(0, alias="TOLLGATE_ONBOARD_CREDITS", ge=0)
    # Changes applied at renewal (a downgrade kept until the period ends).
    proration_behavior: ProrationBehavior = Field("none", alias="TOLLGATE_PRORATION_BEHAVIOR")
    # Changes applied now (an upgrade, seats, or a downgrade asked for now).
    immediate_proration_behavior: ProrationBehavior = Field(
        "create_prorations", alias="TOLLGATE_IMMEDIATE_PRORATION_BEHAVIOR"
    )
    # exact: the seat count follows the app's member count; incremental: it never goes down.
    seat_change_behavior: SeatChangeBehavior = Field("exact", alias="TOLLGATE_SEAT_CHANGE_BEHAVIOR")
    # What a trial without a payment method becomes: release (invoice it) or cancel.
    trial_end_behavior: TrialEndBehavior = Field("release", alias="TOLLGATE_TRIAL_END_BEHAVIOR")
    # The platform's share of a connected account's subscription invoices (Stripe Connect).
    application_fee_percent: Decimal | None = Field(
        None, alias="TOLLGATE_APPLICATION_FEE_PERCENT", ge=0, le=100
    )

    # -- entitlements and usage metering (issue 6) ---------------------------------------------
    # How long a past-due subscription keeps its plan before access is reduced.
    past_due_grace_days: int = Field(7, alias="TOLLGATE_PAST_DUE_GRACE_DAYS", ge=0, le=365)
    # The most a cached decision can lag usage recorded by another process (seconds).
    entitlement_cache_ttl: float = Field(1.0, alias="TOLLGATE_ENTITLEMENT_CACHE_TTL", ge=0, le=60)
    # How often a server looks at the change feed to drop changed customers' decisions (seconds).
    entitlement_refresh: float = Field(0.005, alias="TOLLGATE_ENTITLEMENT_REFRESH", ge=0.001, le=5)
    # Refuse usage past a hard limit (false: record it, and let the app decide).
    usage_enforce_limits: bool = Field(True, alias="TOLLGATE_USAGE_ENFORCE_LIMITS")
    # Hot counters and the hard-limit check in Redis (the database stays the record).
    redis_url: str | None = Field(None, alias="TOLLGATE_REDIS_URL")
    # Where this deployment's counters live in that Redis (several deployments can share one).
    redis_prefix: str = Field("tollgate:", alias="TOLLGATE_REDIS_PREFIX", min_length=1)

    # -- jobs, notifications, dunning, reconciliation (issue 7) ---------------------------------
    # smtp://user:pass@host:587?starttls=true, smtps://…:465, file:///dir (.eml files), console:
    smtp_url: SecretStr | None = Field(None, alias="TOLLGATE_SMTP_URL")
    # How emails write numbers, money and dates (a customer's metadata `locale` wins).
    email_locale: str = Field("en", alias="TOLLGATE_EMAIL_LOCALE")
    email_from: str = Field("Tollgate <billing@localhost>", alias="TOLLGATE_EMAIL_FROM")
    # Operator's templates, looked up before the built-in ones (same file names).
    templates_dir: Path | None = Field(None, alias="TOLLGATE_TEMPLATES_DIR")
    # The app's billing page linked from emails ({customer_id} is replaced); it opens the portal.
    billing_url: str | None = Field(None, alias="TOLLGATE_BILLING_URL")
    notify_max_attempts: int = Field(12, alias="TOLLGATE_NOTIFY_MAX_ATTEMPTS", ge=1, le=100)
    app_webhook_url: str | None = Field(None, alias="TOLLGATE_APP_WEBHOOK_URL")
    app_webhook_secret: SecretStr = Field(SecretStr(""), alias="TOLLGATE_APP_WEBHOOK_SECRET")
    # attempt:template:access steps keyed by the failed invoice's attempt_count.
    dunning_policy_raw: str = Field(DEFAULT_DUNNING_POLICY, alias="TOLLGATE_DUNNING_POLICY")
    # -- bank debits (issue 21) ------------------------------------------------------------------
    # Access while an ACH debit is processing: keep (the subscribed plan at once) or wait (the
    # plan only once Stripe confirms the money); see README "Bank debits (ACH)".
    processing_access: Literal["keep", "wait"] = Field("keep", alias="TOLLGATE_PROCESSING_ACCESS")
    # How Stripe verifies a bank account before its first debit: `automatic` (Stripe decides;
    # instant through Financial Connections) or `microdeposits` (always micro-deposits: the
    # first payment waits, `action_required`, until the customer enters them); README "Bank
    # debits (ACH)".
    bank_verification: Literal["automatic", "microdeposits"] = Field(
        "automatic", alias="TOLLGATE_BANK_VERIFICATION"
    )
    # A customer with an open or lost dispute: keeps its plan (`keep`) or gets its reduced access
    # (`reduce`); see README "Disputes".
    dispute_access: Literal["keep", "reduce"] = Field("keep", alias="TOLLGATE_DISPUTE_ACCESS")
    # A card may pay at most this much per invoice, per currency in minor units, e.g.
    # "usd:100000"; above it only us_bank_account or customer_balance (issue 21).
    card_limits_raw: str = Field("", alias="TOLLGATE_CARD_LIMITS")
    # Who hears of disputes at once and 2 days before their evidence is due (issue 21).
    operator_email: str | None = Field(None, alias="TOLLGATE_OPERATOR_EMAIL")
    # When the nightly reconciliation with Stripe runs, HH:MM in UTC.
    reconcile_at: time = Field(time(2, 0), alias="TOLLGATE_RECONCILE_AT")
    # Checkout Sessions Tollgate opened and still open after this many minutes are expired, so
    # a forgotten tab cannot subscribe on stale terms (Stripe's own expiry is 24 hours).
    checkout_expire_after_minutes: int = Field(
        120, alias="TOLLGATE_CHECKOUT_EXPIRE_AFTER_MINUTES", ge=30, le=1440
    )

    # -- credits (issue 8) ---------------------------------------------------------------------
    # How far below zero a new customer's credits may go (set per customer through the API).
    credit_overdraft_allowance: int = Field(0, alias="TOLLGATE_CREDIT_OVERDRAFT_ALLOWANCE", ge=0)
    # The overdraft is invoiced on this day of the month, for the month this many months away
    # (-1: the previous month).
    credit_overdraft_invoice_day: int = Field(
        1, alias="TOLLGATE_CREDIT_OVERDRAFT_INVOICE_DAY", ge=1, le=28
    )
    credit_overdraft_invoice_range_shift: int = Field(
        -1, alias="TOLLGATE_CREDIT_OVERDRAFT_INVOICE_RANGE_SHIFT", ge=-12, le=0
    )

    # -- the API under fire (issue 18) -----------------------------------------------------------
    # Requests a minute per API key on the /v1 routes (off by default: an app's own key checks
    # entitlements thousands of times a second), and per client address on every other route
    # and on /v1 requests without a key seen accepted; 0 turns a limit off. Per process.
    rate_limit_per_key: int = Field(0, alias="TOLLGATE_RATE_LIMIT_PER_KEY", ge=0)
    rate_limit_per_address: int = Field(1_200, alias="TOLLGATE_RATE_LIMIT_PER_ADDRESS", ge=0)
    # Stripe's deliveries per sending address (0: unlimited; Stripe sends bursts at renewals).
    rate_limit_webhooks: int = Field(0, alias="TOLLGATE_RATE_LIMIT_WEBHOOKS", ge=0)
    # When set, GET /metrics needs `Authorization: Bearer <this token>` (Prometheus'
    # `authorization` setting); unset, /metrics is open (bind it where only scrapers reach).
    metrics_token: SecretStr | None = Field(None, alias="TOLLGATE_METRICS_TOKEN")

    # -- pages: billing page, pricing table, console (issue 15) ---------------------------------
    # Signs billing links, page cookies and CSRF tokens; set one value on every replica
    # (without it, dev and tests use a random one per process and production refuses pages).
    secret_key: SecretStr = Field(SecretStr(""), alias="TOLLGATE_SECRET_KEY")
    # Where browsers reach this server (links in billing sessions, Checkout return URLs).
    public_url: str | None = Field(None, alias="TOLLGATE_PUBLIC_URL", pattern=r"^https?://[^\s]+$")
    billing_session_ttl: int = Field(900, alias="TOLLGATE_BILLING_SESSION_TTL", ge=30, le=86_400)
    brand_name: str = Field("Tollgate", alias="TOLLGATE_BRAND_NAME", min_length=1, max_length=80)
    brand_logo_url: str | None = Field(
        None, alias="TOLLGATE_BRAND_LOGO_URL", pattern=r"^(https?://|/)[^\s\"'()<>]+$"
    )
    brand_color: str = Field(
        "#3b3bd1", alias="TOLLGATE_BRAND_COLOR", pattern=r"^#([0-9a-fA-F]{3}|[0-9a-fA-F]{6})$"
    )
    brand_font: str = Field(
        "system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif",
        alias="TOLLGATE_BRAND_FONT",
        pattern=r"^[A-Za-z0-9 ,'\-]{1,200}$",
    )
    # Who may show the pages in an iframe: CSP frame-ancestors sources, space-separated.
    frame_ancestors: str = Field(
        "'none'", alias="TOLLGATE_FRAME_ANCESTORS", pattern=r"^[A-Za-z0-9 :/.*'\-]{1,1000}$"
    )
    # The app's own sign-in: JWTs (RS256/ES256…) verified against its JWKS.
    jwt_jwks_url: str | None = Field(None, alias="TOLLGATE_JWT_JWKS_URL")
    jwt_issuer: str | None = Field(None, alias="TOLLGATE_JWT_ISSUER")
    jwt_audience: str | None = Field(None, alias="TOLLGATE_JWT_AUDIENCE")
    # The claim that holds Tollgate's customer id (an org or tenant id).
    jwt_customer_claim: str = Field("org_id", alias="TOLLGATE_JWT_CUSTOMER_CLAIM", min_length=1)

    # -- the operator console (issue 16) ---------------------------------------------------------
    # A console session ends after this many idle minutes, and this many hours after sign-in.
    console_idle_minutes: int = Field(30, alias="TOLLGATE_CONSOLE_IDLE_MINUTES", ge=1, le=1440)
    console_session_hours: int = Field(12, alias="TOLLGATE_CONSOLE_SESSION_HOURS", ge=1, le=720)
    # Failed sign-ins allowed in 15 minutes, per operator name and per client address.
    sign_in_failures_per_account: int = Field(
        5, alias="TOLLGATE_SIGN_IN_FAILURES_PER_ACCOUNT", ge=1, le=1000
    )
    sign_in_failures_per_address: int = Field(
        20, alias="TOLLGATE_SIGN_IN_FAILURES_PER_ADDRESS", ge=1, le=10000
    )
    # Payment fees the platform pays (the console's fees view): cards percent + fixed minor
    # units, ACH debits percent capped at a number of minor units.
    fee_card_percent: Decimal = Field(
        Decimal("2.9"), alias="TOLLGATE_FEE_CARD_PERCENT", ge=0, le=100
    )
    fee_card_fixed: int = Field(30, alias="TOLLGATE_FEE_CARD_FIXED", ge=0)
    fee_ach_percent: Decimal = Field(Decimal("0.8"), alias="TOLLGATE_FEE_ACH_PERCENT", ge=0, le=100)
    fee_ach_cap: int = Field(500, alias="TOLLGATE_FEE_ACH_CAP", ge=0)
    # What a lost dispute costs (Stripe keeps its dispute fee), in minor units (issue 21).
    fee_dispute: int = Field(1500, alias="TOLLGATE_FEE_DISPUTE", ge=0)
    # -- running in production (issue 23) ------------------------------------------------------
    # What sits between Tollgate and PostgreSQL: `transaction` for PgBouncer (or a managed
    # pooler) in transaction mode, where the next transaction may run on another server
    # connection, so nothing may outlive a transaction: no server-side prepared statements.
    database_pooler: Literal["none", "transaction"] = Field(
        "none", alias="TOLLGATE_DATABASE_POOLER"
    )
    # Migrations run here when set (the database itself, not the pooler); else on the URL above.
    database_direct_url: str | None = Field(None, alias="TOLLGATE_DATABASE_DIRECT_URL")
    # Log one JSON object a line (request id, customer, event, duration) instead of plain text.
    log_format: Literal["text", "json"] = Field("text", alias="TOLLGATE_LOG_FORMAT")
    # The webhook inbox: raw payloads of applied events are dropped after this many days; the
    # rows (ids, for dedupe) are deleted later, never before Stripe's 3-day retry window ends.
    webhook_payload_retention_days: int = Field(
        30, alias="TOLLGATE_WEBHOOK_PAYLOAD_RETENTION_DAYS", ge=1, le=3650
    )
    webhook_id_retention_days: int = Field(
        90, alias="TOLLGATE_WEBHOOK_ID_RETENTION_DAYS", ge=4, le=3650
    )
    # Raw usage events are kept this many days, then pruned by the worker (`tollgate db
    # prune-usage`); never those of a period still open or with overage not yet sent to Stripe.
    # Usage history reads the hourly roll-up, which is kept. A repeat of a pruned event's id
    # counts again, so keep this longer than any app retries its usage.
    usage_raw_retention_days: int = Field(
        400, alias="TOLLGATE_USAGE_RAW_RETENTION_DAYS", ge=1, le=36500
    )
    # On SIGTERM, how long in-flight requests, deliveries and job runs get to finish (seconds).
    shutdown_grace_seconds: float = Field(20.0, alias="TOLLGATE_SHUTDOWN_GRACE", gt=0, le=600)
    # -- pricing that changes (issue 20) -------------------------------------------------------
    # How often a process looks for a newer synced catalog (seconds).
    catalog_refresh: float = Field(1.0, alias="TOLLGATE_CATALOG_REFRESH", ge=0.05, le=60)

    @field_validator("default_currency")
    @classmethod
    def _currency(cls, value: str) -> str:
        return normalize_currency(value)

    @field_validator("dunning_policy_raw")
    @classmethod
    def _dunning_policy(cls, value: str) -> str:
        parse_dunning_policy(value)
        return value

    @field_validator("card_limits_raw")
    @classmethod
    def _card_limits(cls, value: str) -> str:
        parse_card_limits(value)
        return value

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, value: str | None) -> str | None:
        if not value:
            return None
        if not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must be a redis://, rediss:// or unix:// URL")
        return value

    @field_validator("database_direct_url")
    @classmethod
    def _database_direct_url(cls, value: str | None) -> str | None:
        return _database_url(value) if value else None

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, value: str) -> str:
        return _database_url(value)

    @field_validator("stripe_secret_key")
    @classmethod
    def _stripe_key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value():
            return None
        key = value.get_secret_value()
        if not key.startswith(("sk_test_", "sk_live_", "rk_test_", "rk_live_")):
            raise ValueError("must start with sk_test_, sk_live_, rk_test_ or rk_live_")
        return value

    @field_validator("stripe_webhook_secrets_raw")
    @classmethod
    def _webhook_secrets(cls, value: SecretStr) -> SecretStr:
        for secret in _split(value.get_secret_value()):
            if not secret.startswith("whsec_"):
                raise ValueError("each secret must start with whsec_")
        return value

    @field_validator("api_keys_raw")
    @classmethod
    def _api_keys(cls, value: SecretStr) -> SecretStr:
        for entry in _split(value.get_secret_value()):
            parts = entry.split(":")
            if len(parts) != 3 or not all(parts):
                raise ValueError("each key must be name:scope:secret")
            if parts[1] not in SCOPES:
                raise ValueError(f"key '{parts[0]}' has scope '{parts[1]}'; scopes are read, write")
            if len(parts[2]) < 16:
                raise ValueError(f"key '{parts[0]}' secret must be at least 16 characters")
        return value

    @model_validator(mode="after")
    def _ids_outlive_payloads(self) -> Settings:
        if self.webhook_id_retention_days < self.webhook_payload_retention_days:
            raise ValueError(
                "TOLLGATE_WEBHOOK_ID_RETENTION_DAYS: must be at least "
                "TOLLGATE_WEBHOOK_PAYLOAD_RETENTION_DAYS (ids outlive payloads)"
            )
        return self

    @model_validator(mode="after")
    def _test_clock_in_test_mode_only(self) -> Settings:
        if self.stripe_test_clock and self.stripe_live:
            raise ValueError("STRIPE_TEST_CLOCK: test clocks exist only with a test-mode key")
        return self

    @model_validator(mode="after")
    def _no_placeholders_outside_dev(self) -> Settings:
        if self.env == "dev":
            return self
        secrets = [self.stripe_secret_key.get_secret_value()] if self.stripe_secret_key else []
        secrets += self.stripe_webhook_secrets
        secrets += [key.secret.get_secret_value() for key in self.bootstrap_api_keys]
        secrets += [self.secret_key.get_secret_value()]
        for secret in secrets:
            if any(marker in secret.lower() for marker in _PLACEHOLDERS):
                raise ValueError("a placeholder secret is set; replace it outside TOLLGATE_ENV=dev")
        return self

    @cached_property
    def stripe_webhook_secrets(self) -> list[str]:
        return _split(self.stripe_webhook_secrets_raw.get_secret_value())

    @cached_property
    def bootstrap_api_keys(self) -> list[BootstrapKey]:
        keys = []
        for entry in _split(self.api_keys_raw.get_secret_value()):
            name, scope, secret = entry.split(":")
            keys.append(BootstrapKey(name, scope, SecretStr(secret)))  # type: ignore[arg-type]
        return keys

    @cached_property
    def card_limits(self) -> dict[str, int]:
        """TOLLGATE_CARD_LIMITS: the most a card may pay per invoice, by currency."""
        return parse_card_limits(self.card_limits_raw)

    @cached_property
    def dunning_policy(self) -> DunningPolicy:
        policy = parse_dunning_policy(self.dunning_policy_raw)
        return replace(
            policy,
            processing_access=self.processing_access,
            dispute_access=self.dispute_access,
        )

    @property
    def migration_url(self) -> str:
        """Where migrations run: TOLLGATE_DATABASE_DIRECT_URL, else TOLLGATE_DATABASE_URL."""
        return self.database_direct_url or self.database_url

    @property
    def migration_pooler(self) -> str:
        """The pooler in front of `migration_url` (none for the direct URL)."""
        return "none" if self.database_direct_url else self.database_pooler

    @property
    def stripe_live(self) -> bool:
        key = self.stripe_secret_key.get_secret_value() if self.stripe_secret_key else ""
        return "_live_" in key


def _database_url(value: str) -> str:
    if not value.startswith(("sqlite", "postgresql", "postgres")):
        raise ValueError("must be a sqlite:/// or postgresql:// URL")
    if value.startswith("postgres://"):
        value = "postgresql://" + value[len("postgres://") :]
    if value.startswith("postgresql://"):
        # psycopg 3 is the driver we ship.
        value = "postgresql+psycopg://" + value[len("postgresql://") :]
    return value


def _split(raw: str) -> list[str]:
    return [part.strip() for part in raw.split(",") if part.strip()]


_FIELD_ALIASES = {name: field.alias for name, field in Settings.model_fields.items()}


def load_settings(**overrides: object) -> Settings:
    """Read the settings, turning a validation failure into one line naming the variable."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as error:
        first = error.errors()[0]
        location = first["loc"][0] if first["loc"] else ""
        variable = _FIELD_ALIASES.get(str(location), str(location)) or "settings"
        message = str(first["msg"]).removeprefix("Value error, ")
        raise ConfigError(f"{variable}: {message}") from None
