import { loadtest } from "./main.ts";

/** `npm run loadtest -- …`: the same command as `planto-gateway loadtest …`. */
process.exitCode = await loadtest(process.argv.slice(2));
// The harness's children (Redis, Postgres) leave handles behind only if teardown failed; do not hang on them.
process.exit();
