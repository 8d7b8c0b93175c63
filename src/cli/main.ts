import { loadtest } from "../../tools/loadtest/main.ts";
import { loadtestHelp } from "../../tools/loadtest/options.ts";
import { usage, usageHelp } from "./usage.ts";

/** `planto-gateway <command>`: the project's command line. */
const [command, ...rest] = process.argv.slice(2);
const out = (line: string) => process.stdout.write(`${line}\n`);

if (command === "usage") {
  try {
    process.exitCode = await usage(rest, out);
  } catch (err) {
    process.stderr.write(`usage: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exitCode = 1;
  }
} else if (command === "loadtest") {
  process.exitCode = await loadtest(rest);
  process.exit();
} else {
  out(`planto-gateway commands:\n  ${usageHelp}\n  ${loadtestHelp}`);
  process.exitCode = command ? 2 : 0;
}
