// Types of Tollgate's JavaScript client (src/index.js).

export interface Decision {
  allowed: boolean;
  feature: string;
  reason: string;
  code: "allowed" | "not_in_plan" | "limit_exceeded" | "payment_overdue" | "insufficient_credits";
  limit: number | null;
  used: number | null;
  remaining: number | null;
  warning: string | null;
}

/** A consume answer: the decision (used and remaining after it), stored under `id`. */
export interface Consumed extends Decision {
  id: string;
  customer: string;
  quantity: number;
}

export interface Customer {
  id: string;
  email: string | null;
  name: string | null;
  stripe_customer_id: string | null;
  offline: boolean;
  currency: string;
  plan: string | null;
  status: string;
  metadata: Record<string, string>;
  created: string;
  address?: Record<string, string> | null;
  stripe_account?: string | null;
}

export interface NewCustomer {
  id: string;
  email: string;
  name?: string;
  metadata?: Record<string, string>;
  offline?: boolean;
  plan?: string;
  currency?: string;
  address?: Record<string, string>;
}

export interface Subscription {
  plan: string | null;
  interval: string | null;
  status: string;
  seats: number | null;
  currency: string | null;
  trial_end: string | null;
  current_period_start: string | null;
  current_period_end: string | null;
  cancel_at_period_end: boolean;
  [key: string]: unknown;
}

export interface UsageEvent {
  id: string;
  customer: string;
  meter: string;
  value: number;
  timestamp?: string | number;
}

export interface UsageReport {
  accepted: number;
  duplicates: number;
  rejected: { index: number; id: string | null; error: { code: string; message: string } }[];
}

export interface RequestOptions {
  body?: unknown;
  query?: Record<string, string | number | boolean | null | undefined>;
  idempotencyKey?: string;
}

export interface TollgateOptions {
  fetch?: typeof fetch;
  /** How long a decision is cached, in milliseconds (0: never). Default 1000. */
  decisionTtl?: number;
  /** Per-request timeout in milliseconds. Default 30000. */
  timeout?: number;
}

export class TollgateError extends Error {
  type: string;
  status: number;
  param: string | null;
  constructor(message: string, details?: { type?: string; status?: number; param?: string | null });
}

export class FeatureDenied extends TollgateError {
  decision: Decision;
  constructor(decision: Decision);
}

export class Tollgate {
  constructor(baseUrl: string, apiKey: string, options?: TollgateOptions);
  customers: {
    create(customer: NewCustomer): Promise<Customer>;
    get(id: string): Promise<Customer>;
    update(
      id: string,
      changes: Partial<Pick<NewCustomer, "email" | "name" | "metadata" | "address">>,
      options?: { idempotencyKey?: string },
    ): Promise<Customer>;
  };
  request<T = unknown>(method: string, path: string, options?: RequestOptions): Promise<T>;
  check(customer: string, feature: string, quantity?: number, options?: { inUse?: number }): Promise<Decision>;
  require(customer: string, feature: string, quantity?: number, options?: { inUse?: number }): Promise<Decision>;
  consume(customer: string, feature: string, quantity: number, options: { id: string }): Promise<Consumed>;
  recordUsage(events: UsageEvent[], options?: { enforceLimits?: boolean }): Promise<UsageReport>;
  entitlements(customer: string): Promise<Record<string, unknown>>;
  usage(customer: string): Promise<Record<string, unknown>>;
  forget(customer: string): void;
  checkout(
    customer: string,
    options: {
      plan: string;
      interval: "month" | "year";
      successUrl: string;
      cancelUrl: string;
      trialDays?: number;
      seats?: number;
      idempotencyKey?: string;
    },
  ): Promise<{ session_id: string; url: string }>;
  portal(customer: string, options: { returnUrl: string; idempotencyKey?: string }): Promise<string>;
  billingSession(customer: string): Promise<{ customer: string; url: string; expires_at: string }>;
  subscription(customer: string): Promise<Subscription>;
  changeSubscription(
    customer: string,
    options: { plan: string; interval: "month" | "year"; seats?: number; proration?: string; idempotencyKey?: string },
  ): Promise<Subscription>;
  cancelSubscription(customer: string, options?: { atPeriodEnd?: boolean; idempotencyKey?: string }): Promise<Subscription>;
}

/** Express/Connect-style middleware: `next()` when allowed, else 402/403 with the reason. */
export function requireFeature(
  client: Tollgate,
  feature: string,
  options: { customer: (req: any) => string; quantity?: number },
): (req: any, res: any, next: (error?: unknown) => void) => Promise<void>;

/** The same gate as a Fastify `preHandler` hook. */
export function requireFeatureHook(
  client: Tollgate,
  feature: string,
  options: { customer: (request: any) => string; quantity?: number },
): (request: any, reply: any) => Promise<unknown>;
