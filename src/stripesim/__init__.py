"""stripesim: an offline, stateful simulator of the part of Stripe's HTTP API that Tollgate uses."""
