// Run by tests/e2e/test_js_client.py against a running Tollgate (with the Stripe simulator):
// TOLLGATE_URL and TOLLGATE_API_KEY (a write key) come from there.
import assert from "node:assert/strict";
import http from "node:http";
import { test } from "node:test";

import { FeatureDenied, Tollgate, TollgateError, requireFeature } from "../src/index.js";

const url = process.env.TOLLGATE_URL;
const key = process.env.TOLLGATE_API_KEY;
const run = Date.now().toString(36);

function client(options) {
  assert.ok(url && key, "set TOLLGATE_URL and TOLLGATE_API_KEY");
  return new Tollgate(url, key, options);
}

test("customers are created, read and updated", async () => {
  const billing = client();
  const id = `js-org-${run}`;
  const created = await billing.customers.create({ id, email: "owner@js.example", offline: true });
  assert.equal(created.id, id);
  assert.equal(created.plan, "free");
  const again = await billing.customers.create({ id, email: "owner@js.example", offline: true });
  assert.equal(again.id, id); // a repeat of the same create is harmless
  const updated = await billing.customers.update(id, { name: "JS Org" });
  assert.equal(updated.name, "JS Org");
  assert.equal((await billing.customers.get(id)).name, "JS Org");
});

test("errors carry the API's type, status and param", async () => {
  const billing = client();
  await assert.rejects(billing.customers.get(`nobody-${run}`), (error) => {
    assert.ok(error instanceof TollgateError);
    assert.equal(error.type, "not_found");
    assert.equal(error.status, 404);
    return true;
  });
  await assert.rejects(new Tollgate(url, "tg_read_wrong_wrong_wrong").customers.get("x"), (error) => {
    assert.equal(error.status, 401);
    assert.equal(error.type, "authentication_error");
    return true;
  });
});

test("checks follow usage recorded through this client, and a hard limit denies", async () => {
  const billing = client({ decisionTtl: 60_000 });
  const id = `js-limit-${run}`;
  await billing.customers.create({ id, email: "limit@js.example", offline: true });
  const first = await billing.check(id, "runs", 1);
  assert.equal(first.allowed, true);
  const events = Array.from({ length: 1000 }, (_, n) => ({
    id: `${id}-run-${n}`,
    customer: id,
    meter: "runs",
    value: 1,
  }));
  const report = await billing.recordUsage(events);
  assert.equal(report.accepted, 1000);
  // The cached decision was dropped when this client recorded usage.
  const after = await billing.check(id, "runs", 1);
  assert.equal(after.allowed, false);
  assert.equal(after.code, "limit_exceeded");
  await assert.rejects(billing.require(id, "runs", 1), (error) => {
    assert.ok(error instanceof FeatureDenied);
    assert.equal(error.status, 402);
    assert.equal(error.decision.used, 1000);
    return true;
  });
  await assert.rejects(billing.require(id, "marketplace"), (error) => error.status === 403);
});

test("the middleware gates a route of the app's own server", async () => {
  const billing = client();
  const id = `js-gate-${run}`;
  await billing.customers.create({ id, email: "gate@js.example", offline: true });
  const gate = requireFeature(billing, "marketplace", { customer: (req) => req.headers["x-org"] });
  const server = http.createServer((req, res) => gate(req, res, () => res.end("published")));
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  try {
    const { port } = server.address();
    const answer = await fetch(`http://127.0.0.1:${port}/publish`, { headers: { "x-org": id } });
    assert.equal(answer.status, 403);
    const body = await answer.json();
    assert.equal(body.error.type, "feature_denied");
    assert.equal(body.decision.code, "not_in_plan");
  } finally {
    server.close();
  }
});

test("checkout opens a hosted page for an online customer", async () => {
  const billing = client();
  const id = `js-buyer-${run}`;
  await billing.customers.create({ id, email: "buyer@js.example" });
  const session = await billing.checkout(id, {
    plan: "pro",
    interval: "month",
    successUrl: "https://app.example/ok",
    cancelUrl: "https://app.example/cancel",
  });
  assert.match(session.session_id, /^cs_/);
  assert.match(session.url, /^http/);
  const portal = await billing.portal(id, { returnUrl: "https://app.example/billing" });
  assert.match(portal, /^http/);
  const link = await billing.billingSession(id);
  assert.equal(link.customer, id);
  assert.match(link.url, /\/billing\/session\//);
  assert.ok(Date.parse(link.expires_at) > Date.now());
  const page = await fetch(link.url, { redirect: "manual" });
  assert.equal(page.status, 303); // the link opens a page session and goes to /billing
});

test("consume checks and records in one step, once per id", async () => {
  const billing = client();
  const id = `js-consume-${run}`;
  await billing.customers.create({ id, email: "consume@js.example", offline: true });
  const first = await billing.consume(id, "runs", 995, { id: `${id}-a` });
  assert.equal(first.allowed, true);
  assert.equal(first.used, 995);
  const retried = await billing.consume(id, "runs", 995, { id: `${id}-a` });
  assert.deepEqual(retried, first); // the first answer, counted once
  const denied = await billing.consume(id, "runs", 6, { id: `${id}-b` });
  assert.equal(denied.allowed, false);
  assert.equal(denied.code, "limit_exceeded");
  const fits = await billing.consume(id, "runs", 5, { id: `${id}-c` });
  assert.equal(fits.remaining, 0);
  await assert.rejects(billing.consume(id, "runs", 1), TypeError);
});
