"""Scheduled jobs, each safe to run twice and on several replicas at once."""
