/** One JSON line per event on stdout. Never pass keys or prompts. */
export interface Logger {
  debug(msg: string, fields?: Record<string, unknown>): void;
  info(msg: string, fields?: Record<string, unknown>): void;
  warn(msg: string, fields?: Record<string, unknown>): void;
  error(msg: string, fields?: Record<string, unknown>): void;
}

const levels = { debug: 10, info: 20, warn: 30, error: 40, silent: 100 } as const;
export type LogLevel = keyof typeof levels;

/**
 * Lines written to stdout are batched per tick: stdout to a pipe is a synchronous write on Linux,
 * and one call's line should not cost one syscall under load.
 */
let stdoutBuffer: string[] | undefined;
function batchedStdout(line: string): void {
  if (!stdoutBuffer) {
    stdoutBuffer = [];
    process.once("exit", flushStdout);
  }
  if (stdoutBuffer.push(line) === 1) setImmediate(flushStdout);
}
function flushStdout(): void {
  if (stdoutBuffer?.length) process.stdout.write(stdoutBuffer.join(""));
  if (stdoutBuffer) stdoutBuffer.length = 0;
}

export function createLogger(level: LogLevel, write: (line: string) => void = batchedStdout): Logger {
  const min = levels[level];
  const emit = (lvl: Exclude<LogLevel, "silent">, msg: string, fields?: Record<string, unknown>) => {
    if (levels[lvl] < min) return;
    write(`${JSON.stringify({ time: new Date().toISOString(), level: lvl, msg, ...fields })}\n`);
  };
  return {
    debug: (m, f) => emit("debug", m, f),
    info: (m, f) => emit("info", m, f),
    warn: (m, f) => emit("warn", m, f),
    error: (m, f) => emit("error", m, f),
  };
}
