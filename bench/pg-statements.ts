import postgres from "postgres";

/**
 * Postgres's own accounting of its statements (pg_stat_statements), for the bench: what each kind of
 * statement cost per request while a target ran. On only with BENCH_PG_STATEMENTS=1 (the extension
 * must be preloaded, see bench/stack.ts). Times are Postgres's execution time (wall, in the backend),
 * which on a busy machine reads high; the counts and their ratios are what to compare.
 */
export type StatementStats = Map<string, { calls: number; ms: number; rows: number }>;

export function pgStatements(url: string | undefined) {
  if (!url || process.env.BENCH_PG_STATEMENTS !== "1") return undefined;
  const sql = postgres(url, { max: 1, onnotice: () => {}, fetch_types: false });
  let ready: Promise<unknown> | undefined;
  const snapshot = async (): Promise<StatementStats> => {
    ready ??= sql`create extension if not exists pg_stat_statements`;
    await ready;
    const rows = await sql<{ query: string; calls: string; ms: number; rows: string }[]>`
      select query, calls::text, total_exec_time + total_plan_time as ms, rows::text
      from pg_stat_statements where query not like '%pg_stat_statements%'`;
    const out: StatementStats = new Map();
    for (const r of rows) {
      const key = r.query.replace(/\s+/g, " ").slice(0, 90);
      const had = out.get(key) ?? { calls: 0, ms: 0, rows: 0 };
      out.set(key, {
        calls: had.calls + Number(r.calls),
        ms: had.ms + r.ms,
        rows: had.rows + Number(r.rows),
      });
    }
    return out;
  };
  return {
    snapshot,
    /** The statements between two snapshots, per request, costliest first. */
    perRequest(before: StatementStats, after: StatementStats, requests: number): string[] {
      const lines: [number, string][] = [];
      for (const [query, a] of after) {
        const b = before.get(query) ?? { calls: 0, ms: 0, rows: 0 };
        const calls = a.calls - b.calls;
        if (calls <= 0) continue;
        const usPerRequest = ((a.ms - b.ms) * 1000) / requests;
        if (usPerRequest < 0.5) continue;
        lines.push([
          usPerRequest,
          `${usPerRequest.toFixed(1)} µs/req  ${(calls / requests).toFixed(3)} calls/req  ${((a.rows - b.rows) / calls).toFixed(0)} rows/call  ${query}`,
        ]);
      }
      return lines.sort((x, y) => y[0] - x[0]).map(([, line]) => line);
    },
    close: () => sql.end({ timeout: 1 }),
  };
}
