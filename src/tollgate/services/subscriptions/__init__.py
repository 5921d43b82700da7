"""Subscriptions: Checkout, direct subscriptions, plan and seat changes, cancel and resume.

Every write reads the customer's subscription from Stripe first (the mirror may be a webhook
behind), decides with the pure rules of `tollgate.domain.subscriptions`, and then makes one
Stripe call whose idempotency key is derived from the customer's id and the request, so a retry
after a timeout or a 5xx makes nothing twice. The mirror itself follows from the webhooks
Stripe sends about the change. A downgrade waits for the period end as a `PlanChange` row that
`apply_due_plan_changes` makes in Stripe shortly before the renewal.

`reading` answers GET; `checkout` opens a Checkout Session; `changing` subscribes directly and
changes plans, intervals and seats; `canceling` cancels and resumes; `pending_changes` keeps the
changes waiting for the period end and makes them in Stripe. `lookups` reads what every write
needs from Stripe and the catalog; `payment_rules` says which payment methods may pay a plan.
"""
