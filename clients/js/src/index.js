// Tollgate's JavaScript client: the API over `fetch` (Node 18+ and browsers), no dependencies.
//
//   import { Tollgate } from "tollgate-client";
//   const billing = new Tollgate("http://127.0.0.1:8000", process.env.TOLLGATE_API_KEY);
//   if ((await billing.check("acme", "runs")).allowed) { ... }
//
// Errors are TollgateError (with the API's `type`, `status` and `param`); a denied feature in
// `require` and the middleware is FeatureDenied (402 when paying would allow it, 403 when the
// plan lacks it), carrying the decision.

const PAYMENT_CODES = new Set(["limit_exceeded", "payment_overdue", "insufficient_credits"]);

/** An error answer of Tollgate's API: `type`, `message`, `param` and the HTTP `status`. */
export class TollgateError extends Error {
  constructor(message, { type = "api_error", status = 0, param = null } = {}) {
    super(message);
    this.name = "TollgateError";
    this.type = type;
    this.status = status;
    this.param = param;
  }
}

/** The customer may not use the feature now; `decision` says why. */
export class FeatureDenied extends TollgateError {
  constructor(decision) {
    const status = PAYMENT_CODES.has(decision.code) ? 402 : 403;
    super(decision.reason, { type: "feature_denied", status, param: decision.feature });
    this.name = "FeatureDenied";
    this.decision = decision;
  }
}

/** The client: one instance per API key; decisions are cached for `decisionTtl` ms. */
export class Tollgate {
  constructor(baseUrl, apiKey, { fetch: fetchImpl, decisionTtl = 1000, timeout = 30000 } = {}) {
    if (!baseUrl) throw new TypeError("Tollgate: baseUrl is required");
    if (!apiKey) throw new TypeError("Tollgate: apiKey is required");
    this.baseUrl = String(baseUrl).replace(/\/+$/, "");
    this.apiKey = apiKey;
    this.fetch = fetchImpl ?? globalThis.fetch.bind(globalThis);
    this.decisionTtl = decisionTtl;
    this.timeout = timeout;
    this.decisions = new Map();
    this.customers = {
      create: (customer) => this.request("POST", "/v1/customers", { body: customer }),
      get: (id) => this.request("GET", customerPath(id)),
      update: (id, changes, options = {}) =>
        this.request("PATCH", customerPath(id), { body: changes, ...options }),
    };
  }

  /** Send one request; resolve with the JSON answer or reject with a TollgateError. */
  async request(method, path, { body, query, idempotencyKey } = {}) {
    const url = new URL(this.baseUrl + path);
    for (const [name, value] of Object.entries(query ?? {})) {
      if (value !== undefined && value !== null) url.searchParams.set(name, String(value));
    }
    const headers = { Authorization: `Bearer ${this.apiKey}`, Accept: "application/json" };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    if (idempotencyKey) headers["Idempotency-Key"] = idempotencyKey;
    const answer = await this.fetch(url, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      signal: AbortSignal.timeout(this.timeout),
    });
    const text = await answer.text();
    let data = null;
    try {
      data = text ? JSON.parse(text) : null;
    } catch {
      data = null;
    }
    if (answer.ok) return data;
    const error = data && typeof data === "object" ? data.error : null;
    throw new TollgateError(error?.message ?? (text.slice(0, 500) || answer.statusText), {
      type: error?.type ?? "api_error",
      status: answer.status,
      param: error?.param ?? null,
    });
  }

  // -- entitlements and usage ------------------------------------------------------------------

  /** May the customer use `quantity` more of `feature` now? Cached for `decisionTtl` ms. */
  async check(customer, feature, quantity = 1, { inUse } = {}) {
    const key = JSON.stringify([customer, feature, quantity, inUse ?? null]);
    const cached = this.decisions.get(key);
    if (cached && cached.until > Date.now()) return cached.decision;
    const decision = await this.request(
      "GET",
      `${customerPath(customer)}/entitlements/${encodeURIComponent(feature)}`,
      { query: { quantity, in_use: inUse } },
    );
    if (this.decisionTtl > 0) this.decisions.set(key, { until: Date.now() + this.decisionTtl, decision });
    return decision;
  }

  /** The decision if allowed; throws FeatureDenied if not. */
  async require(customer, feature, quantity = 1, options = {}) {
    const decision = await this.check(customer, feature, quantity, options);
    if (!decision.allowed) throw new FeatureDenied(decision);
    return decision;
  }

  /** Check and record in one step, exactly once per `id`: allowed is counted, denied is not. */
  async consume(customer, feature, quantity = 1, { id } = {}) {
    if (!id) throw new TypeError("consume: an `id` is required (it makes a retry count once)");
    const answer = await this.request("POST", `${customerPath(customer)}/consume`, {
      body: { feature, quantity, id },
    });
    this.forget(customer);
    return answer;
  }

  /** Record usage events, each counted once per `id`: {accepted, duplicates, rejected}. */
  async recordUsage(events, { enforceLimits } = {}) {
    const body = { events };
    if (enforceLimits !== undefined) body.enforce_limits = enforceLimits;
    const answer = await this.request("POST", "/v1/usage", { body });
    for (const event of events) this.forget(event.customer);
    return answer;
  }

  /** Every feature the customer has now, with plan and status. */
  entitlements(customer) {
    return this.request("GET", `${customerPath(customer)}/entitlements`);
  }

  /** The customer's usage this period, per meter. */
  usage(customer) {
    return this.request("GET", `${customerPath(customer)}/usage`);
  }

  /** Drop cached decisions of a customer (after this client changed what it may do). */
  forget(customer) {
    const prefix = JSON.stringify([customer]).slice(0, -1) + ",";
    for (const key of this.decisions.keys()) if (key.startsWith(prefix)) this.decisions.delete(key);
  }

  // -- subscriptions and pages -----------------------------------------------------------------

  /** A hosted Checkout page subscribing the customer: {session_id, url}. */
  checkout(customer, { plan, interval, successUrl, cancelUrl, trialDays, seats, idempotencyKey } = {}) {
    const body = given({
      plan,
      interval,
      success_url: successUrl,
      cancel_url: cancelUrl,
      trial_days: trialDays,
      seats,
    });
    return this.request("POST", `${customerPath(customer)}/checkout`, { body, idempotencyKey });
  }

  /** A Customer Portal URL for the customer. */
  async portal(customer, { returnUrl, idempotencyKey } = {}) {
    const answer = await this.request("POST", `${customerPath(customer)}/portal`, {
      body: { return_url: returnUrl },
      idempotencyKey,
    });
    return answer.url;
  }

  /** A short-lived signed link to the customer's billing page: {customer, url, expires_at}.
   * Send the customer there at once; the link is not for keeping. */
  billingSession(customer) {
    return this.request("POST", `${customerPath(customer)}/billing-session`);
  }

  /** The customer's subscription. */
  subscription(customer) {
    return this.request("GET", `${customerPath(customer)}/subscription`);
  }

  /** Subscribe directly, or change plan, interval or seats. */
  changeSubscription(customer, { plan, interval, seats, proration, idempotencyKey } = {}) {
    const body = given({ plan, interval, seats, proration });
    return this.request("PUT", `${customerPath(customer)}/subscription`, { body, idempotencyKey });
  }

  /** Cancel now, or at period end. */
  cancelSubscription(customer, { atPeriodEnd = false, idempotencyKey } = {}) {
    return this.request("DELETE", `${customerPath(customer)}/subscription`, {
      query: { at_period_end: atPeriodEnd ? "true" : "false" },
      idempotencyKey,
    });
  }
}

/**
 * Express/Connect-style middleware gating a route: calls `next()` when the customer may use the
 * feature, else answers 402/403 with the reason. `customer(req)` returns the customer's id.
 *
 *   app.post("/runs", requireFeature(billing, "runs", { customer: (req) => req.user.orgId }), run);
 */
export function requireFeature(client, feature, { customer, quantity = 1 } = {}) {
  if (typeof customer !== "function") {
    throw new TypeError("requireFeature: `customer` must be a function of the request");
  }
  return async function tollgateGate(req, res, next) {
    try {
      const decision = await client.check(customer(req), feature, quantity);
      if (decision.allowed) return next();
      const denied = new FeatureDenied(decision);
      res.statusCode = denied.status;
      res.setHeader("Content-Type", "application/json");
      res.end(JSON.stringify({ error: { type: "feature_denied", message: decision.reason, param: feature }, decision }));
    } catch (error) {
      next(error);
    }
  };
}

/** The same gate as a Fastify `preHandler` hook. */
export function requireFeatureHook(client, feature, { customer, quantity = 1 } = {}) {
  return async function tollgateHook(request, reply) {
    const decision = await client.check(customer(request), feature, quantity);
    if (!decision.allowed) {
      const denied = new FeatureDenied(decision);
      return reply.code(denied.status).send({
        error: { type: "feature_denied", message: decision.reason, param: feature },
        decision,
      });
    }
  };
}

function customerPath(id) {
  if (!id) throw new TypeError("a customer id is required");
  return `/v1/customers/${encodeURIComponent(id)}`;
}

function given(values) {
  return Object.fromEntries(Object.entries(values).filter(([, value]) => value !== undefined));
}
