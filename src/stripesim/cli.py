"""`stripesim serve`: run the offline Stripe on a port."""

from __future__ import annotations

import argparse
import sys

import uvicorn

from stripesim.app import create_app
from stripesim.state import Simulator


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="stripesim", description="An offline, stateful Stripe API."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="serve the simulated Stripe API")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=12111)
    serve.add_argument("--webhook", help="URL that receives every event (a webhook endpoint)")
    serve.add_argument("--webhook-secret", help="signing secret for --webhook (whsec_…)")
    serve.add_argument("--state", help="snapshot file: loaded at start, saved at stop")
    serve.add_argument(
        "--duplicate-rate", type=float, default=0.0, help="share of events sent twice"
    )
    serve.add_argument("--shuffle", action="store_true", help="deliver events out of order")
    serve.add_argument(
        "--business-name", default="Test business", help="the seller's name on hosted pages"
    )
    args = parser.parse_args(argv)
    if args.webhook_secret and not args.webhook_secret.startswith("whsec_"):
        print("stripesim: --webhook-secret must start with whsec_", file=sys.stderr)
        return 2
    sim = Simulator(
        webhook_url=args.webhook,
        webhook_secret=args.webhook_secret,
        state_file=args.state,
        business_name=args.business_name,
    )
    sim.webhooks.duplicate_rate = args.duplicate_rate
    sim.webhooks.shuffle = args.shuffle
    sim.base_url = f"http://{args.host}:{args.port}"
    print(f"stripesim: Stripe API on {sim.base_url} (test keys sk_test_…)", flush=True)
    uvicorn.run(create_app(sim), host=args.host, port=args.port, log_level="warning")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
