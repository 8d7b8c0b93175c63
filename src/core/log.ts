/** One JSON line per event on stdout. Never pass keys or prompts. */
export interface Logger {
  debug(msg: string, fields?: Record<string, unknown>): void;
  info(msg: string, fields?: Record<string, unknown>): void;
  warn(msg: string, fields?: Record<string, unknown>): void;
  error(msg: string, fields?: Record<string, unknown>): void;
}

const levels = { debug: 10, info: 20, warn: 30, error: 40, silent: 100 } as const;
export type LogLevel = keyof typeof levels;

/** Lines buffered past this many characters are written at once rather than at the next flush. */
const FLUSH_CHARS = 64 * 1024;
/** How long a line may wait in the buffer. */
const FLUSH_MS = 25;

/**
 * Lines written to stdout are batched: stdout to a pipe is a synchronous write on Linux, and one
 * call's line should not cost one syscall under load. A batch per event-loop turn still cost about
 * one write per call (calls end in different turns), so lines wait up to FLUSH_MS, or until
 * FLUSH_CHARS are buffered; what is buffered is written at exit. A kill -9 loses at most the last
 * FLUSH_MS of lines (never money: the ledger does not depend on them).
 */
let stdoutBuffer: string[] | undefined;
let bufferedChars = 0;
let flushTimer: ReturnType<typeof setTimeout> | undefined;
function batchedStdout(line: string): void {
  if (!stdoutBuffer) {
    stdoutBuffer = [];
    process.once("exit", flushStdout);
  }
  stdoutBuffer.push(line);
  bufferedChars += line.length;
  if (bufferedChars >= FLUSH_CHARS) flushStdout();
  else if (!flushTimer) {
    flushTimer = setTimeout(flushStdout, FLUSH_MS);
    flushTimer.unref();
  }
}
function flushStdout(): void {
  clearTimeout(flushTimer);
  flushTimer = undefined;
  if (stdoutBuffer?.length) process.stdout.write(stdoutBuffer.join(""));
  if (stdoutBuffer) stdoutBuffer.length = 0;
  bufferedChars = 0;
}

/** The ISO time of the last line, reused while the clock stays on the same millisecond. */
let lastMs = 0;
let lastIso = "";
function isoNow(): string {
  const now = Date.now();
  if (now !== lastMs) {
    lastMs = now;
    lastIso = new Date(now).toISOString();
  }
  return lastIso;
}

export function createLogger(level: LogLevel, write: (line: string) => void = batchedStdout): Logger {
  const min = levels[level];
  const emit = (lvl: Exclude<LogLevel, "silent">, msg: string, fields?: Record<string, unknown>) => {
    if (levels[lvl] < min) return;
    // The fixed fields are written as text and the caller's appended to them: spreading them into
    // a new object first cost a copy of every field of every call's line.
    const head = `{"time":"${isoNow()}","level":"${lvl}","msg":${JSON.stringify(msg)}`;
    const rest = fields ? JSON.stringify(fields) : "{}";
    write(rest.length > 2 ? `${head},${rest.slice(1)}\n` : `${head}}\n`);
  };
  return {
    debug: (m, f) => emit("debug", m, f),
    info: (m, f) => emit("info", m, f),
    warn: (m, f) => emit("warn", m, f),
    error: (m, f) => emit("error", m, f),
  };
}
