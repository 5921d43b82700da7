"""Stripe resources: each module registers its routes with `stripesim.registry.route`."""
