import { GatewayError } from "../core/errors.ts";
import type { Refusal } from "../metering/meter.ts";
import { rateLimitedError } from "../metering/rate-limit.ts";

/** A metering refusal as the HTTP error the contract gives it (codes, statuses and extras). */
export function refusalError(refusal: Refusal): GatewayError {
  switch (refusal.code) {
    case "trial_plans_exceeded":
      return new GatewayError("trial_plans_exceeded", `trial orgs may use ${refusal.maxPlans} plans`, {
        extras: { trialPlansExceededError: { maxPlans: refusal.maxPlans } },
      });
    case "trial_messages_exceeded":
      return new GatewayError(
        "trial_messages_exceeded",
        `trial orgs may have ${refusal.maxMessages} model responses per plan`,
        { extras: { trialMessagesExceededError: { maxMessages: refusal.maxMessages } } },
      );
    case "rate_limit_exceeded":
      return rateLimitedError(refusal.rate, refusal.tokens);
    case "unavailable":
      return new GatewayError("unavailable", "metering is unavailable; try again shortly");
    default: {
      const extras = { billingError: { hasBillingPermission: true, isTrial: refusal.isTrial } };
      return new GatewayError(refusal.code, BILLING_MESSAGES[refusal.code], { extras });
    }
  }
}

const BILLING_MESSAGES = {
  cloud_subscription_paused: "the subscription is paused",
  cloud_subscription_overdue: "the subscription is overdue",
  cloud_monthly_max_reached: "this call would pass the org's monthly budget",
  cloud_insufficient_credits: "not enough credits for this call",
} as const;
