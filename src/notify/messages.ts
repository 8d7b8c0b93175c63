import type { NotificationKind } from "../db/schema/notifications.ts";
import { formatUsd } from "../pricing/money.ts";

/**
 * The email of a notification, from the outbox row's payload only (fixed when the fact happened),
 * so every attempt at one notification sends the very same message.
 */
export function renderNotification(
  kind: NotificationKind,
  payload: Record<string, unknown>,
): { subject: string; text: string } {
  const org = text(payload.orgName) || "Your organization";
  if (kind === "spend_threshold") {
    const month = text(payload.monthStart).slice(0, 10);
    const budget = nanos(payload.maxThresholdPerMonth);
    return {
      subject: `${org}: this month's Planto spend passed $${usd(payload.notifyThreshold)}`,
      text: [
        `${org} has spent $${usd(payload.spend)} on Planto in the billing month that started on ${month}, past the notification threshold of $${usd(payload.notifyThreshold)}.`,
        budget === null
          ? "No monthly budget is set: calls go on while there are credits."
          : `The monthly budget is $${formatUsd(budget)}: calls are refused once this month's spend reaches it.`,
        "This notice is sent once per billing month. The threshold and the budget are in the billing settings.",
      ].join("\n\n"),
    };
  }
  const threshold = nanos(payload.autoRebuyMinThreshold);
  const target = nanos(payload.autoRebuyToBalance);
  return {
    subject: `${org}: Planto auto-recharge is turned off`,
    text: [
      `The last ${nanos(payload.failures) ?? 3} auto-recharge payments of ${org} failed (the last one: ${text(payload.reason) || "declined"}), so auto-recharge has turned itself off.`,
      threshold !== null && target !== null
        ? `It was set to top the balance up to $${formatUsd(target)} when it fell below $${formatUsd(threshold)}. Until it is on again, calls are refused once the credits run out.`
        : "Until it is on again, calls are refused once the credits run out.",
      "Update the payment method, then turn auto-recharge on again in the billing settings.",
    ].join("\n\n"),
  };
}

function text(v: unknown): string {
  return typeof v === "string" ? v : "";
}

function nanos(v: unknown): number | null {
  return typeof v === "number" && Number.isSafeInteger(v) ? v : null;
}

function usd(v: unknown): string {
  return formatUsd(nanos(v) ?? 0);
}
