"""Tables, one module per capability; each capability adds its models there and a migration under
migrations/versions."""

from __future__ import annotations

from tollgate.db.models import console_indexes as console_indexes
from tollgate.db.models.access import (
    ApiKey,
    Operator,
    OperatorSession,
    SignInAttempt,
)
from tollgate.db.models.base import AUTO_ID, NAMING, STRIPE_ID, Base
from tollgate.db.models.credits import (
    CreditAccount,
    CreditEntry,
    CreditLot,
    CreditTransaction,
)
from tollgate.db.models.operations import (
    AppEvent,
    JobLock,
    Notification,
    ReconciliationDrift,
    ReconciliationRun,
)
from tollgate.db.models.plans import (
    CatalogVersion,
    CustomerOverride,
    PlanChange,
    PlanMigration,
    PlanMigrationCustomer,
    PlanVersionRow,
    UsageGrant,
)
from tollgate.db.models.stripe_mirror import (
    AuditLog,
    BankTransfer,
    Charge,
    Customer,
    Discount,
    Dispute,
    Invoice,
    InvoicePayment,
    Refund,
    StripeEvent,
    Subscription,
    SubscriptionItem,
)
from tollgate.db.models.usage import (
    CustomerChange,
    MeterOutbox,
    UsageCounter,
    UsageEvent,
    UsageHourly,
    UsagePending,
    UsageThreshold,
)
from tollgate.db.models.usage_controls import (
    AutoTopup,
    MeterAdjustment,
    SpendCap,
    TopupAttempt,
    UsageAlert,
    UsageAlertFiring,
    UsageConsumption,
    UsageReservation,
    UsageVoid,
)

__all__ = [
    "AUTO_ID",
    "NAMING",
    "STRIPE_ID",
    "ApiKey",
    "AppEvent",
    "AuditLog",
    "AutoTopup",
    "BankTransfer",
    "Base",
    "CatalogVersion",
    "Charge",
    "CreditAccount",
    "CreditEntry",
    "CreditLot",
    "CreditTransaction",
    "Customer",
    "CustomerChange",
    "CustomerOverride",
    "Discount",
    "Dispute",
    "Invoice",
    "InvoicePayment",
    "JobLock",
    "MeterAdjustment",
    "MeterOutbox",
    "Notification",
    "Operator",
    "OperatorSession",
    "PlanChange",
    "PlanMigration",
    "PlanMigrationCustomer",
    "PlanVersionRow",
    "ReconciliationDrift",
    "ReconciliationRun",
    "Refund",
    "SignInAttempt",
    "SpendCap",
    "StripeEvent",
    "Subscription",
    "SubscriptionItem",
    "TopupAttempt",
    "UsageAlert",
    "UsageAlertFiring",
    "UsageConsumption",
    "UsageCounter",
    "UsageEvent",
    "UsageGrant",
    "UsageHourly",
    "UsagePending",
    "UsageReservation",
    "UsageThreshold",
    "UsageVoid",
]
