#!/usr/bin/env node
/**
 * `npm run build`: compiles src/ to dist/ (tsc, no type check: `npm run typecheck` does that) and
 * copies what tsc does not (the Lua scripts, the migrations). `--if-stale` builds only when a source
 * is newer than the last build, so `npm install` (prepare) builds once and `npm start` (prestart)
 * starts at once after it, yet never runs yesterday's code after an edit.
 *
 * Plain JavaScript: it runs where tsx is not installed, and where TypeScript is not either when dist/
 * is already up to date (a production install with --omit=dev of a built tree).
 */
import { execFileSync } from "node:child_process";
import { cpSync, existsSync, readdirSync, statSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

const root = fileURLToPath(new URL("..", import.meta.url));
const stamp = join(root, "dist", ".built");
const inputs = ["src", "tsconfig.json", "tsconfig.build.json", "package.json"];

function newestInput() {
  let newest = 0;
  const visit = (path) => {
    const st = statSync(path);
    if (st.isDirectory()) for (const name of readdirSync(path)) visit(join(path, name));
    else newest = Math.max(newest, st.mtimeMs);
  };
  for (const input of inputs) visit(join(root, input));
  return newest;
}

if (process.argv.includes("--if-stale") && existsSync(stamp) && statSync(stamp).mtimeMs >= newestInput()) {
  process.exit(0);
}

let tsc;
try {
  tsc = createRequire(import.meta.url).resolve("typescript/bin/tsc");
} catch {
  process.stderr.write(
    "build: dist/ is missing or older than src/, and TypeScript is not installed (an install with --omit=dev).\n" +
      "Build with the dev dependencies installed (npm ci && npm run build), then prune them.\n",
  );
  process.exit(1);
}
const started = Date.now();
execFileSync(process.execPath, [tsc, "-p", "tsconfig.build.json", "--noCheck"], {
  cwd: root,
  stdio: "inherit",
});
for (const dir of ["metering/lua", "db/migrations"]) {
  cpSync(join(root, "src", dir), join(root, "dist", dir), { recursive: true });
}
writeFileSync(stamp, `${new Date(started).toISOString()}\n`);
process.stderr.write(`build: dist/ compiled from src/ in ${((Date.now() - started) / 1000).toFixed(1)} s\n`);
