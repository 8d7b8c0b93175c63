/** What `cloudflare:test` gives the workerd suite (vitest-pool-workers), typed as this suite uses it. */
declare module "cloudflare:test" {
  import type { DurableObjectNamespace, DurableObjectState, ExecutionContext } from "cloudflare:workers";
  import type { OrgMeterRpc } from "../../src/metering/org-meter-object.ts";
  export const env: {
    ORG_METER: DurableObjectNamespace<OrgMeterRpc>;
    DATABASE_URL: string;
    [name: string]: unknown;
  };
  export const SELF: { fetch(input: string | Request, init?: RequestInit): Promise<Response> };
  export function runDurableObjectAlarm(stub: unknown): Promise<boolean>;
  export function runInDurableObject<O, R>(
    stub: unknown,
    fn: (instance: O, state: DurableObjectState) => R | Promise<R>,
  ): Promise<R>;
  export function createExecutionContext(): ExecutionContext;
  export function waitOnExecutionContext(ctx: ExecutionContext): Promise<void>;
}
