import { Hono } from "hono";
import type Stripe from "stripe";
import { GatewayError } from "../../core/errors.ts";
import { getOrg } from "../../db/orgs.ts";
import { readBody } from "../client-io.ts";
import type { Services } from "../services.ts";

/** Stripe amounts are integer cents; a cent is 10^7 nanodollars. */
const NANOS_PER_CENT = 10_000_000;

/**
 * `POST /billing/stripe/webhook`: credit purchases paid through Stripe. The signature is verified
 * with STRIPE_WEBHOOK_SECRET before anything is read; an event that does not verify gets a 400 and
 * credits nothing. A purchase is a `checkout.session.completed` (paid) or `payment_intent.succeeded`
 * event carrying `metadata.orgId`; its credit id is its PaymentIntent's id (the event id when it has
 * none), so a replayed event, or the auto-recharge that made the PaymentIntent, credits once.
 */
export function stripeRoutes(services: Services): Hono {
  const app = new Hono();
  const secret = services.config.STRIPE_WEBHOOK_SECRET;
  // The SDK's webhook helpers need no API key; the placeholder is never sent anywhere. It is loaded
  // with the first event: 20 MB that a gateway without webhooks never needs.
  let client: Promise<Stripe> | undefined;
  const sdk = () => {
    client ??= import("stripe").then((m) => new m.default(services.config.STRIPE_SECRET_KEY ?? "sk_unused"));
    return client;
  };

  app.post("/webhook", async (c) => {
    if (!secret)
      throw new GatewayError("not_found", "Stripe webhooks are off (STRIPE_WEBHOOK_SECRET is not set)");
    const signature = c.req.header("stripe-signature");
    const payload = Buffer.from(await readBody(c, 1024 * 1024)).toString("utf8");
    let event: Stripe.Event;
    try {
      if (!signature) throw new Error("no Stripe-Signature header");
      event = await (await sdk()).webhooks.constructEventAsync(payload, signature, secret);
    } catch (err) {
      throw new GatewayError("invalid_request_error", `unverifiable Stripe event: ${(err as Error).message}`);
    }
    const purchase = purchaseOf(event);
    if (!purchase) return c.json({ received: true, credited: false });
    const org = await getOrg(services.database.db, purchase.orgId);
    if (!org || org.deletedAt) {
      throw new GatewayError("invalid_request_error", `Stripe event ${event.id} names no live org`);
    }
    const result = await services.meter.credit({
      orgId: org.id,
      id: purchase.creditId ?? `stripe_${event.id}`,
      amount: purchase.cents * NANOS_PER_CENT,
      creditType: "purchase",
      isAutoRebuy: purchase.autoRecharge,
    });
    return c.json({ received: true, credited: result.ok && !result.duplicate });
  });

  return app;
}

/**
 * The credit a purchase event is worth. Its id is the PaymentIntent's id when the event names one,
 * the very id an auto-recharge credits its PaymentIntent under (src/metering/recharge.ts), so a
 * payment is credited once whichever path comes first: the recharge, or its webhook.
 */
function purchaseOf(
  event: Stripe.Event,
): { orgId: string; cents: number; creditId?: string; autoRecharge: boolean } | undefined {
  if (event.type === "checkout.session.completed") {
    const session = event.data.object;
    const orgId = session.metadata?.orgId;
    if (session.payment_status !== "paid" || !orgId || !session.amount_total) return undefined;
    const intent = typeof session.payment_intent === "string" ? session.payment_intent : undefined;
    return { orgId, cents: session.amount_total, creditId: intent, autoRecharge: false };
  }
  if (event.type === "payment_intent.succeeded") {
    const intent = event.data.object;
    const orgId = intent.metadata?.orgId;
    if (!orgId || !intent.amount_received) return undefined;
    return {
      orgId,
      cents: intent.amount_received,
      creditId: intent.id,
      autoRecharge: intent.metadata?.purpose === "auto-recharge",
    };
  }
  return undefined;
}
