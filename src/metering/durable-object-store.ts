import type { DurableObjectNamespace } from "cloudflare:workers";
import type { OrgMeterRpc } from "./org-meter-object.ts";
import type { MeteringStore } from "./store.ts";

/**
 * An object never loses what it acknowledged (its storage is durable), so the epoch never changes
 * and the settle journal never has a reason to replay into it.
 */
export const DURABLE_OBJECT_EPOCH = "durable-object";

/**
 * The Workers metering store: every operation goes to the org's Durable Object (OrgMeter,
 * `idFromName(orgId)`), wherever the call came in, so one org has one balance across isolates and
 * colos. The stream operations are empty: each object writes its own outbox to Postgres on its
 * alarm, and reclaims its own expired holds there, so there is no flusher or reclaimer to run.
 */
export function createDurableObjectStore(namespace: DurableObjectNamespace<OrgMeterRpc>): MeteringStore {
  const org = (orgId: string) => namespace.get(namespace.idFromName(orgId));
  return {
    kind: "durable_object",
    reserve: ({ orgId, ...r }) => org(orgId).opReserve(r),
    admitRate: ({ orgId, ...r }) => org(orgId).opAdmitRate(r),
    settleRate: ({ orgId, ...c }) => org(orgId).opSettleRate(c),
    settle: ({ orgId, ...s }) => org(orgId).opSettle(s),
    clearRebuy: (orgId) => org(orgId).opClearRebuy(),
    release: ({ orgId, ...r }) => org(orgId).opRelease(r),
    credit: ({ orgId, ...c }) => org(orgId).opCredit(c),
    appendEvent: ({ orgId, ...e }) => org(orgId).opAppendEvent(e),
    loadBalance: ({ orgId, ...l }) => org(orgId).opLoadBalance(l),
    getBalance: (orgId) => org(orgId).opGetBalance(),
    holdTrialResponse: ({ orgId, ...t }) => org(orgId).opHoldTrialResponse(t),
    loadTrial: ({ orgId, ...l }) => org(orgId).opLoadTrial(l),
    endTrialResponse: ({ orgId, ...t }) => org(orgId).opEndTrialResponse(t),
    epoch: async () => DURABLE_OBJECT_EPOCH,
    purgeOrg: (orgId) => org(orgId).opPurge(),
    reclaimExpired: async () => 0,
    readLedger: async () => [],
    ackLedger: async () => {},
    claimStaleLedger: async () => [],
    // Each object knows its own outbox only; there is no deployment-wide figure to give.
    ledgerLag: async () => ({ length: 0, oldestMs: null }),
    close: async () => {},
  };
}
