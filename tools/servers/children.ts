import { type ChildProcess, type SpawnOptions, spawn } from "node:child_process";

const alive = new Set<ChildProcess>();

/** Signals the child's whole process group (runuser → postgres → its workers). */
function signalGroup(child: ChildProcess, signal: NodeJS.Signals): void {
  try {
    if (child.pid) process.kill(-child.pid, signal);
  } catch {
    child.kill(signal);
  }
}

process.on("exit", () => {
  for (const child of alive) signalGroup(child, "SIGKILL");
});

/** Spawns a server in its own process group that dies with the test run, whatever happens to it. */
export function spawnServer(command: string, args: string[], opts: SpawnOptions = {}): ChildProcess {
  const child = spawn(command, args, { stdio: ["ignore", "ignore", "ignore"], detached: true, ...opts });
  alive.add(child);
  child.once("exit", () => alive.delete(child));
  return child;
}

/** Stops a child's process group with `signal` (SIGKILL after `graceMs`) and waits for it to exit. */
export async function stopChild(
  child: ChildProcess,
  signal: NodeJS.Signals = "SIGTERM",
  graceMs = 5_000,
): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  signalGroup(child, signal);
  const timer = setTimeout(() => signalGroup(child, "SIGKILL"), graceMs);
  await exited;
  clearTimeout(timer);
}
