/**
 * The few Workers runtime types the Workers entry and its Durable Object use, declared here rather
 * than by @cloudflare/workers-types, whose globals (Request, Response, …) clash with Node's in this
 * one TypeScript program.
 */
declare module "cloudflare:workers" {
  export interface SqlCursor<T> extends Iterable<T> {
    toArray(): T[];
    one(): T;
    readonly rowsWritten: number;
  }
  export interface SqlStorage {
    exec<T = Record<string, string | number | null>>(
      query: string,
      ...bindings: (string | number | null)[]
    ): SqlCursor<T>;
  }
  export interface DurableObjectStorage {
    readonly sql: SqlStorage;
    transactionSync<T>(fn: () => T): T;
    getAlarm(): Promise<number | null>;
    setAlarm(scheduledTime: number): Promise<void>;
    deleteAlarm(): Promise<void>;
  }
  export interface DurableObjectState {
    readonly storage: DurableObjectStorage;
    blockConcurrencyWhile<T>(fn: () => Promise<T>): Promise<T>;
    waitUntil(p: Promise<unknown>): void;
  }
  export interface DurableObjectId {
    toString(): string;
  }
  export interface DurableObjectNamespace<Stub> {
    idFromName(name: string): DurableObjectId;
    get(id: DurableObjectId): Stub;
  }
  export interface ExecutionContext {
    waitUntil(p: Promise<unknown>): void;
    passThroughOnException(): void;
    readonly props: unknown;
  }
  export abstract class DurableObject<Env = unknown> {
    protected readonly ctx: DurableObjectState;
    protected readonly env: Env;
    constructor(ctx: DurableObjectState, env: Env);
    alarm?(): Promise<void>;
  }
}
