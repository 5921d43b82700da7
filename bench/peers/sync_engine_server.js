// @supabase/stripe-sync-engine behind a minimal Node HTTP server, for bench/peers/run.py.
//
// `node sync_engine_server.js migrate` creates its `stripe` schema; `node sync_engine_server.js`
// serves POST /webhooks (the raw body and Stripe-Signature handed to processWebhook: 200 once
// the rows are written, 400 for a bad signature, 500 otherwise) and GET /healthz.
// Environment: SYNC_ENGINE_MODULES (the folder holding node_modules), DATABASE_URL, PORT,
// STRIPE_SECRET_KEY, STRIPE_WEBHOOK_SECRET, STRIPE_API_PORT (stripesim on 127.0.0.1), and
// REVALIDATE: object kinds to fetch from Stripe instead of trusting the payload ("customer,
// subscription": its `revalidateObjectsViaStripeApi` option; none by default).
"use strict";

const http = require("node:http");
const path = require("node:path");
const { createRequire } = require("node:module");

const need = createRequire(path.join(process.env.SYNC_ENGINE_MODULES, "package.json"));
const Stripe = need("stripe");
const { StripeSync, runMigrations } = need("@supabase/stripe-sync-engine");

const SCHEMA = "stripe";

async function migrate() {
  await runMigrations({ databaseUrl: process.env.DATABASE_URL, schema: SCHEMA });
}

function serve() {
  const sync = new StripeSync({
    poolConfig: { connectionString: process.env.DATABASE_URL, max: 10 },
    schema: SCHEMA,
    stripeSecretKey: process.env.STRIPE_SECRET_KEY,
    stripeWebhookSecret: process.env.STRIPE_WEBHOOK_SECRET,
    revalidateObjectsViaStripeApi: (process.env.REVALIDATE || "").split(",").filter(Boolean),
  });
  // The engine builds its own client for api.stripe.com: the same one, aimed at stripesim.
  sync.stripe = new Stripe(process.env.STRIPE_SECRET_KEY, {
    host: "127.0.0.1",
    port: Number(process.env.STRIPE_API_PORT),
    protocol: "http",
    maxNetworkRetries: 0,
    appInfo: { name: "Stripe Postgres Sync" },
  });

  const server = http.createServer((request, response) => {
    const answer = (status, text) => {
      response.writeHead(status, {
        "Content-Type": "text/plain",
        "Content-Length": Buffer.byteLength(text),
      });
      response.end(text);
    };
    if (request.method === "GET" && request.url === "/healthz") {
      answer(200, "ok");
      return;
    }
    if (request.method !== "POST" || request.url !== "/webhooks") {
      answer(404, "not found");
      return;
    }
    const chunks = [];
    request.on("data", (chunk) => chunks.push(chunk));
    request.on("end", () => {
      const body = Buffer.concat(chunks);
      sync
        .processWebhook(body, request.headers["stripe-signature"])
        .then(() => answer(200, "ok"))
        .catch((error) => {
          const signature = error && error.type === "StripeSignatureVerificationError";
          if (!signature) console.error(error);
          answer(signature ? 400 : 500, signature ? "bad signature" : "failed");
        });
    });
  });
  server.keepAliveTimeout = 60_000;
  server.listen(Number(process.env.PORT), "127.0.0.1");
  process.on("SIGINT", () => server.close(() => process.exit(0)));
  process.on("SIGTERM", () => server.close(() => process.exit(0)));
}

if (process.argv[2] === "migrate") {
  migrate().then(
    () => process.exit(0),
    (error) => {
      console.error(error);
      process.exit(1);
    },
  );
} else {
  serve();
}
