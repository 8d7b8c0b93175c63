/** Start of the billing month that contains `now`, anchored on the org's cycle start day. */
export function billingMonthStart(anchor: Date, now: Date): Date {
  const day = anchor.getUTCDate();
  const at = (y: number, m: number) => {
    const last = new Date(Date.UTC(y, m + 1, 0)).getUTCDate();
    return new Date(
      Date.UTC(
        y,
        m,
        Math.min(day, last),
        anchor.getUTCHours(),
        anchor.getUTCMinutes(),
        anchor.getUTCSeconds(),
      ),
    );
  };
  let start = at(now.getUTCFullYear(), now.getUTCMonth());
  if (start > now) start = at(now.getUTCFullYear(), now.getUTCMonth() - 1);
  return start;
}

/**
 * Start of the billing month after the one that starts at `monthStart`. Months run 28 to 31 days,
 * so 32 days on is always inside the next month and never past it.
 */
export function nextBillingMonthStart(anchor: Date, monthStart: Date): Date {
  return billingMonthStart(anchor, new Date(monthStart.getTime() + 32 * 24 * 3600_000));
}
