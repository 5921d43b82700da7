"""Keep the Customer Portal's configuration following the catalog (issue 20).

Checked each time Tollgate opens a Portal session: the configuration Tollgate made (metadata
`tollgate_portal`) is updated when its terms' fingerprint differs from the catalog's, or made
if there is none; the session then names it. A change the customer makes in the Portal reaches
Tollgate as `customer.subscription.updated`, like any other.
"""

from __future__ import annotations

from collections.abc import Mapping

from tollgate.domain.catalog import Catalog
from tollgate.domain.portal import portal_configuration_params, portal_lookup_keys
from tollgate.stripe.gateway import StripeGateway


def ensure_portal_configuration(
    *,
    catalog: Catalog,
    gateway: StripeGateway,
    proration_behavior: str,
    card_limits: Mapping[str, int] | None = None,
) -> str:
    """Return the id of the Portal configuration matching the catalog, updating it if needed."""
    keys = portal_lookup_keys(catalog)
    price_ids = gateway.price_ids(keys) if keys else {}
    params = portal_configuration_params(catalog, price_ids, proration_behavior, card_limits)
    wanted = params["metadata"]["tollgate_terms"]
    ours = [
        config
        for config in gateway.portal_configurations()
        if (config.get("metadata") or {}).get("tollgate_portal") == "true" and config.get("active")
    ]
    for config in ours:
        if config["metadata"].get("tollgate_terms") == wanted:
            return str(config["id"])
    if ours:
        return gateway.update_portal_configuration(str(ours[0]["id"]), params)
    # Keyed by the terms: Portal sessions opened at once, none finding the configuration, make
    # one, not one each (each session naming its own would break the session's idempotency).
    return gateway.create_portal_configuration(params, idempotency_key=f"portal-config-{wanted}")
