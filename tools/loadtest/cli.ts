import { loadtest } from "./main.ts";

/** `npm run loadtest -- …`: a tool of the source checkout, not part of the installed `planto-gateway` CLI. */
process.exitCode = await loadtest(process.argv.slice(2));
// The harness's children (Redis, Postgres) leave handles behind only if teardown failed; do not hang on them.
process.exit();
