import { execFile, execFileSync } from "node:child_process";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { creditTransactions } from "../../src/db/schema/credit-transactions.ts";
import { startGateway, type TestGateway, type TestOrg } from "../harness/gateway.ts";

/**
 * The installed CLI as a user runs it: bin/planto-gateway.js (compiled JavaScript, no tsx) in its
 * own process, against a gateway with real tagged calls and ledger rows.
 */
const BIN = "bin/planto-gateway.js";

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

function cli(args: string[], env: Record<string, string | undefined> = {}): Promise<Run> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [BIN, ...args],
      { env: { PATH: process.env.PATH, ...env } },
      (err, stdout, stderr) => {
        const code = err ? (typeof err.code === "number" ? err.code : 1) : 0;
        resolve({ code, stdout, stderr });
      },
    );
  });
}

/** The cells of an aligned table: each column starts where its dashes in the rule start. */
function checkAligned(lines: string[]): void {
  const ruleAt = lines.findIndex((l) => /^-+( +-+)+$/.test(l));
  expect(ruleAt).toBeGreaterThan(0);
  const rule = lines[ruleAt] as string;
  const spans = [...rule.matchAll(/-+/g)].map((m) => ({ start: m.index, end: m.index + m[0].length }));
  const table = [lines[ruleAt - 1] as string, ...lines.slice(ruleAt + 1).filter((l) => /^\d{4}-/.test(l))];
  expect(table.length).toBeGreaterThan(3);
  for (const line of table) {
    expect(line.length, line).toBeLessThanOrEqual(rule.length);
    for (const { start, end } of spans) {
      // Between columns there are always two spaces; a cell never spills past its dashes.
      if (start > 0 && start < line.length)
        expect(line.slice(start - 2, start), `${line}\n${rule}`).toBe("  ");
      if (end < line.length) expect(line[end], `${line}\n${rule}`).toBe(" ");
    }
  }
}

async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  await new Promise((resolve) => server.close(resolve));
  return port;
}

describe("planto-gateway usage", () => {
  let gw: TestGateway;
  let org: TestOrg;
  let other: TestOrg;
  let notAGateway: Server;
  let notAGatewayUrl: string;
  const env = (over: Record<string, string> = {}) => ({
    PLANTO_API_KEY: org.key,
    PLANTO_GATEWAY_URL: gw.url,
    ...over,
  });
  const usage = (...args: string[]) => cli(["usage", ...args], env());

  beforeAll(async () => {
    // The bin runs dist/: build it if src/ changed since the last build (npm install built it once).
    execFileSync(process.execPath, ["tools/build.mjs", "--if-stale"], { stdio: "inherit" });
    // The harness's orgs are paid: keep the monthly grant job from adding a $20 row mid-test.
    gw = await startGateway({ env: { GRANT_INTERVAL_MS: String(24 * 3600_000) } });
    org = await gw.org({ credits: "2" });
    other = await gw.org({ credits: "1" });
    const call = (plan: string, planName: string, purpose: string, cached = 0) =>
      gw.post(
        "/v1/chat/completions",
        org.key,
        {
          model: "gpt-4.1",
          messages: [{ role: "user", content: "x" }],
          mock: { usage: { prompt_tokens: 1000, cached_tokens: cached, completion_tokens: 500 } },
        },
        { "x-planto-plan-id": plan, "x-planto-plan-name": planName, "x-planto-purpose": purpose },
      );
    expect((await call("p9", "Refactor", "coding")).status).toBe(200);
    expect((await call("p10", "A much longer plan name", "chat", 800)).status).toBe(200);
    expect((await call("p9", "Refactor", "coding")).status).toBe(200);
    await gw.services.flusher.drain();

    notAGateway = createServer((_req, res) => {
      res.writeHead(404, { "content-type": "text/html" }).end("<h1>Not Found</h1>");
    });
    await new Promise<void>((resolve) => notAGateway.listen(0, "127.0.0.1", resolve));
    notAGatewayUrl = `http://127.0.0.1:${(notAGateway.address() as AddressInfo).port}`;
  }, 180_000);
  afterAll(async () => {
    notAGateway?.close();
    await gw?.close();
  });

  it("--help exits 0, for the CLI and for the command", async () => {
    const mains = await Promise.all([["--help"], ["-h"], ["help"]].map((args) => cli(args)));
    for (const r of mains) {
      expect(r.code).toBe(0);
      expect(r.stdout).toContain("Usage: planto-gateway <command>");
      expect(r.stdout).toMatch(/usage\s+the org's balance/);
    }
    const commands = await Promise.all(
      [
        ["usage", "--help"],
        ["usage", "-h"],
        ["help", "usage"],
      ].map((args) => cli(args)),
    );
    for (const r of commands) {
      expect(r.code).toBe(0);
      expect(r.stdout).toContain("Usage: planto-gateway usage");
      for (const option of [
        "--today",
        "--month",
        "--plan",
        "--session",
        "--log",
        "--page",
        "PLANTO_API_KEY",
      ]) {
        expect(r.stdout).toContain(option);
      }
    }
    const bad = await cli(["usage", "--bogus"], env());
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain("--bogus");
    expect((await cli(["frobnicate"])).code).toBe(2);
    const loadtest = await cli(["loadtest"]);
    expect(loadtest.code).toBe(2);
    expect(loadtest.stderr).toContain("npm run loadtest");
  });

  it("reads the org from the key: no --org, and the org is named", async () => {
    const r = await usage("--month");
    expect(r.stderr).toBe("");
    expect(r.code).toBe(0);
    expect(r.stdout).toContain(`Org test org (${org.id})`);
    expect(r.stdout).toMatch(/^Balance\s+\$1\.98\d*$/m);
    expect(r.stdout).toMatch(/^Spend, this billing month\s+\$0\.01\d*$/m);
    expect(r.stdout).toMatch(/^ {2}Refactor \(p9\)\s+\$0\.012$/m);
    expect(r.stdout).toMatch(/^ {2}coding\s+\$0\.012$/m);
    expect(r.stdout).toMatch(/^ {2}openai\/gpt-4\.1\s+\$0\.01\d*$/m);
    expect(r.stdout).toMatch(/^Saved by cached input tokens\s+\$0\.0012$/m);
    // The other org's key shows the other org: nothing of this one.
    const theirs = await cli(["usage", "--log"], env({ PLANTO_API_KEY: other.key }));
    expect(theirs.code).toBe(0);
    expect(theirs.stdout).toContain(other.id);
    expect(theirs.stdout).not.toContain("Refactor");
  });

  it("--org must be the key's org when given", async () => {
    expect((await usage("--org", org.id)).code).toBe(0);
    expect((await usage("--org", "test org")).code).toBe(0);
    const wrong = await usage("--org", other.id, "--log");
    expect(wrong.code).toBe(2);
    expect(wrong.stdout).toBe("");
    expect(wrong.stderr).toContain(`--org ${other.id} is not this key's org`);
    expect(wrong.stderr).toContain(org.id);
  });

  it("lines the log up in columns sized to their content, and labels cached tokens", async () => {
    const r = await usage("--log");
    expect(r.code).toBe(0);
    const lines = r.stdout.trimEnd().split("\n");
    expect(lines[0]).toBe(`Org test org (${org.id}) · Transactions, all time, newest first`);
    expect(lines[1]).toMatch(/^page 1 of 1\b/);
    expect(lines[2]).toMatch(
      /^when \(UTC\)\s+type\s+amount\s+balance after\s+model\s+input tokens\s+cached tokens\s+output tokens\s+input \$\/1M\s+output \$\/1M\s+purpose\s+plan$/,
    );
    checkAligned(lines);
    const rows = lines.filter((l) => /^\d{4}-/.test(l));
    expect(rows).toHaveLength(4);
    // The debit with 800 cached tokens, then the plain ones and the admin credit.
    const cachedRow = rows.find((l) => l.includes("A much longer plan name (p10)"));
    // Input tokens are the whole prompt (as OpenAI's prompt_tokens), the cached part has its own column,
    // and an OpenAI model is shown bare, as the Planto CLI shows it.
    expect(cachedRow).toMatch(/-\$0\.0048\s+\$1\.9892\s+gpt-4\.1\s+1,000\s+800\s+500\s+\$2\s+\$8\s+chat\s/);
    expect(rows.filter((l) => /\s1,000\s+0\s+500\s/.test(l))).toHaveLength(2);
    expect(rows[3]).toMatch(/credit \(grant\)\s+\+\$2\s+\$2$/);
  });

  it("tolerates an SDK base URL (…/v1, …/openai/v1/) as the gateway's address", async () => {
    const suffixes = ["/v1", "/v1/", "/openai/v1/", "/"];
    const runs = await Promise.all(
      suffixes.map((suffix) =>
        cli(["usage", "--log", "--debits"], env({ PLANTO_GATEWAY_URL: gw.url + suffix })),
      ),
    );
    for (const r of runs) {
      expect(r.stderr).toBe("");
      expect(r.code).toBe(0);
      expect(r.stdout).toContain("Debits, all time");
    }
  });

  it("says when nothing listens at the URL, naming it", async () => {
    const url = `http://127.0.0.1:${await freePort()}`;
    const r = await cli(["usage"], env({ PLANTO_GATEWAY_URL: `${url}/v1` }));
    expect(r.code).toBe(1);
    expect(r.stdout).toBe("");
    expect(r.stderr).toBe(
      `planto-gateway usage: cannot reach the gateway at ${url} (ECONNREFUSED): is it running, and is PLANTO_GATEWAY_URL (or --url) its address?\n`,
    );
    expect(r.stderr).not.toContain("    at ");
  });

  it("says when the URL is not a gateway, or has a wrong path", async () => {
    const stranger = await cli(["usage"], env({ PLANTO_GATEWAY_URL: notAGatewayUrl }));
    expect(stranger.code).toBe(1);
    expect(stranger.stderr).toContain(`${notAGatewayUrl} does not look like a planto-gateway`);
    expect(stranger.stderr).toContain(`${notAGatewayUrl}/billing/balance answered 404`);
    const wrongPath = await cli(["usage"], env({ PLANTO_GATEWAY_URL: `${gw.url}/api/` }));
    expect(wrongPath.code).toBe(1);
    expect(wrongPath.stderr).toContain(`${gw.url}/api does not look like a planto-gateway`);
    expect(wrongPath.stderr).toContain("no such route");
    const badKey = await cli(["usage"], env({ PLANTO_API_KEY: "pk_not_a_key" }));
    expect(badKey.code).toBe(1);
    expect(badKey.stderr).toContain("refused the api key (invalid_api_key");
    const noKey = await cli(["usage"], { PLANTO_GATEWAY_URL: gw.url });
    expect(noKey.code).toBe(2);
    expect(noKey.stderr).toContain("PLANTO_API_KEY is not set");
  });

  it("checks page bounds", async () => {
    const page2 = await usage("--log", "--page-size", "3", "--page", "2");
    expect(page2.code).toBe(0);
    expect(page2.stdout).toMatch(/^page 2 of 2\b/m);
    expect(page2.stdout.split("\n").filter((l) => /^\d{4}-/.test(l))).toHaveLength(1);
    const beyond = await usage("--log", "--page-size", "3", "--page", "99");
    expect(beyond.code).toBe(2);
    expect(beyond.stdout).toBe("");
    expect(beyond.stderr).toContain(
      "there is no page 99: the transactions, all time fill 2 pages of 3 (--page 1 to 2)",
    );
    for (const bad of ["0", "-1", "two", "1.5"]) {
      const r = await usage("--log", `--page=${bad}`);
      expect(r.code, bad).toBe(2);
      expect(r.stderr).toContain("--page must be a whole number");
    }
    const all = await usage("--log", "--page-size", "3", "--all");
    expect(all.code).toBe(0);
    expect(all.stdout.split("\n").filter((l) => /^\d{4}-/.test(l))).toHaveLength(4);
  });

  it("exits quietly when the reader goes away (| head -1)", async () => {
    // Enough rows that the output cannot fit in the pipe (64 KB), so the CLI must be writing when
    // head leaves. Written to the ledger table directly: 2,000 credits through the API take minutes.
    const big = await gw.org({ credits: "1" });
    const at = Date.now() - 3_600_000;
    await gw.services.database.db.insert(creditTransactions).values(
      Array.from({ length: 2_000 }, (_, i) => ({
        id: `epipe-${big.id}-${i}`,
        orgId: big.id,
        transactionType: "credit" as const,
        creditType: "purchase" as const,
        amount: 10_000_000,
        startBalance: i * 10_000_000,
        endBalance: (i + 1) * 10_000_000,
        createdAt: new Date(at + i * 1000),
      })),
    );
    const shell = execFile(
      "bash",
      [
        "--norc",
        "--noprofile",
        "-c",
        `set -o pipefail; "${process.execPath}" ${BIN} usage --log --all --page-size 500 | head -1`,
      ],
      { env: { PATH: process.env.PATH, PLANTO_API_KEY: big.key, PLANTO_GATEWAY_URL: gw.url } },
    );
    let stdout = "";
    let stderr = "";
    shell.stdout?.on("data", (d) => {
      stdout += d;
    });
    shell.stderr?.on("data", (d) => {
      stderr += d;
    });
    const code = await new Promise((resolve) => shell.on("close", resolve));
    expect(stderr).toBe("");
    expect(code).toBe(0);
    expect(stdout).toBe(`Org test org (${big.id}) · Transactions, all time, newest first\n`);
  });
});
