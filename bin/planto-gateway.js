#!/usr/bin/env node
// The installed CLI runs the compiled JavaScript (npm's `prepare` builds it on `npm install`):
// no TypeScript loader at run time.
import { existsSync } from "node:fs";
import { fileURLToPath } from "node:url";

const entry = new URL("../dist/cli/main.js", import.meta.url);
if (!existsSync(entry)) {
  const root = fileURLToPath(new URL("..", import.meta.url));
  process.stderr.write(`planto-gateway is not built yet: run \`npm run build\` in ${root}\n`);
  process.exit(1);
}
const { run } = await import(entry.href);
await run(process.argv.slice(2));
