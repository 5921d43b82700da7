"""Use cases: each runs in one transaction it owns; routes, CLI commands and jobs call these."""
