import type Stripe from "stripe";

/** An off-session charge for an auto-recharge. */
export interface ChargeRequest {
  orgId: string;
  customerId: string | null;
  paymentMethodId: string | null;
  amountCents: number;
  /** The same key for a retried request, so the provider charges once. */
  idempotencyKey: string;
}

export type ChargeResult = { ok: true; paymentId: string } | { ok: false; reason: string };

/** Takes money for auto-recharges. Stripe in production; a recording fake in tests. */
export interface Payments {
  charge(request: ChargeRequest): Promise<ChargeResult>;
}

/** Off-session PaymentIntents on the org's saved customer and payment method. */
export function stripePayments(secretKey: string): Payments {
  // The SDK is loaded with the first charge: it is 20 MB that a gateway without recharges never needs.
  let client: Promise<Stripe> | undefined;
  return {
    async charge(r) {
      if (!r.customerId || !r.paymentMethodId) return { ok: false, reason: "no saved Stripe payment method" };
      try {
        client ??= import("stripe").then((m) => new m.default(secretKey));
        const stripe = await client;
        const intent = await stripe.paymentIntents.create(
          {
            amount: r.amountCents,
            currency: "usd",
            customer: r.customerId,
            payment_method: r.paymentMethodId,
            off_session: true,
            confirm: true,
            metadata: { orgId: r.orgId, purpose: "auto-recharge" },
          },
          { idempotencyKey: r.idempotencyKey },
        );
        return intent.status === "succeeded"
          ? { ok: true, paymentId: intent.id }
          : { ok: false, reason: `payment ${intent.status}` };
      } catch (err) {
        return { ok: false, reason: err instanceof Error ? err.message : String(err) };
      }
    },
  };
}

/** Without a payment provider every recharge fails, which after 3 tries turns auto-recharge off. */
export const noPayments: Payments = {
  async charge() {
    return { ok: false, reason: "no payment provider configured (STRIPE_SECRET_KEY)" };
  },
};
