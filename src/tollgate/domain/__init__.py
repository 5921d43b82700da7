"""Pure billing rules: no database, no Stripe, no HTTP, no clock."""
