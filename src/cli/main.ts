import { CliError } from "./gateway.ts";
import { usage, usageHelp, usageSummary } from "./usage.ts";

/**
 * `planto-gateway <command>`: the product's command line, compiled to dist/cli/main.js and run by
 * bin/planto-gateway.js. It imports nothing from tools/: the load tester is a development tool of a
 * source checkout (`npm run loadtest`), not part of what ships.
 */
export const mainHelp = `Usage: planto-gateway <command> [options]

Commands:
  usage     ${usageSummary}
  help      this help, or a command's (planto-gateway help usage)

planto-gateway <command> --help shows a command's options. The load tester runs from a
checkout of the gateway's repository: npm run loadtest -- --help.`;

export interface MainIo {
  out(line: string): void;
  err(line: string): void;
  env: Record<string, string | undefined>;
}

/** Runs one command line; resolves with the exit status. */
export async function main(argv: string[], io: MainIo): Promise<number> {
  const [command, ...rest] = argv;
  try {
    switch (command) {
      case undefined:
      case "help":
      case "--help":
      case "-h":
        if (command === "help" && rest[0] === "usage") io.out(usageHelp);
        else if (command === "help" && rest[0] !== undefined)
          throw new CliError(`no command ${rest[0]}\n\n${mainHelp}`, 2);
        else io.out(mainHelp);
        return command === undefined ? 2 : 0;
      case "usage":
        return await usage(rest, io.out, io.env);
      case "loadtest":
        throw new CliError(
          "the load tester is not part of the installed CLI: from a checkout of the gateway's repository, run " +
            "npm run loadtest -- --help",
          2,
        );
      default:
        throw new CliError(`no command ${command}\n\n${mainHelp}`, 2);
    }
  } catch (err) {
    if (err instanceof CliError) {
      io.err(`planto-gateway${command === "usage" ? " usage" : ""}: ${err.message}`);
      return err.exitCode;
    }
    throw err;
  }
}

/**
 * The process around `main`: a reader that goes away early (`planto-gateway usage --log | head -1`)
 * ends the run quietly with status 0, as it does for any Unix filter, instead of an EPIPE trace.
 */
export async function run(argv: string[]): Promise<void> {
  const quietOnEpipe = (err: NodeJS.ErrnoException) => {
    if (err.code === "EPIPE") process.exit(0);
    throw err;
  };
  process.stdout.on("error", quietOnEpipe);
  process.stderr.on("error", quietOnEpipe);
  process.exitCode = await main(argv, {
    out: (line) => process.stdout.write(`${line}\n`),
    err: (line) => process.stderr.write(`${line}\n`),
    env: process.env,
  });
}
