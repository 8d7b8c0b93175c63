import { spawn } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import type { Report } from "../../../tools/loadtest/report.ts";

export interface ToolRun {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs the load tester as `npm run loadtest -- …` does (tools/loadtest/cli.ts through tsx). */
export function runLoadtest(args: string[], env: Record<string, string> = {}): Promise<ToolRun> {
  const child = spawn(process.execPath, ["--import", "tsx", "tools/loadtest/cli.ts", ...args], {
    env: { ...process.env, PLANTO_API_KEY: "", PLANTO_ADMIN_TOKEN: "", ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let stdout = "";
  let stderr = "";
  child.stdout.setEncoding("utf8").on("data", (s: string) => {
    stdout += s;
  });
  child.stderr.setEncoding("utf8").on("data", (s: string) => {
    stderr += s;
  });
  return new Promise((resolve) => child.once("close", (code) => resolve({ code, stdout, stderr })));
}

/** The report files a run wrote under `base` (a path without extension); both must exist and parse. */
export function readReports(base: string): { report: Report; html: string } {
  if (!existsSync(`${base}.json`)) throw new Error(`no ${base}.json`);
  if (!existsSync(`${base}.html`)) throw new Error(`no ${base}.html`);
  return {
    report: JSON.parse(readFileSync(`${base}.json`, "utf8")) as Report,
    html: readFileSync(`${base}.html`, "utf8"),
  };
}

/** A self-contained page: no scripts, nothing loaded from elsewhere, the charts drawn inline. */
export function expectSelfContainedHtml(html: string): void {
  if (!html.startsWith("<!doctype html>")) throw new Error("not an HTML document");
  if (/<script|<link|src="|@import|url\(/i.test(html)) throw new Error("the report loads or runs something");
  const charts = html.match(/<svg /g)?.length ?? 0;
  if (charts < 3) throw new Error(`expected 3 inline charts, found ${charts}`);
}
