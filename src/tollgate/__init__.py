"""Tollgate: self-hosted billing, entitlements and usage metering for SaaS products on Stripe."""

__version__ = "0.1.0"
