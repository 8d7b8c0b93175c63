import { readdirSync, readFileSync } from "node:fs";

/**
 * CPU time of processes from /proc (Linux): what a load cost each part of the system, in CPU
 * seconds rather than wall time. On a shared 2-core machine a throughput number moves with
 * whatever else runs; CPU per request moves much less, so it is what shows where the time goes.
 */
const TICKS_PER_SECOND = 100; // USER_HZ on Linux

interface Stat {
  pid: number;
  ppid: number;
  /** utime + stime + reaped children's cutime + cstime, in ms. */
  cpuMs: number;
}

function readStat(pid: number): Stat | undefined {
  try {
    const text = readFileSync(`/proc/${pid}/stat`, "utf8");
    // The command name (field 2) may hold spaces and parentheses: split after its last ')'.
    const fields = text.slice(text.lastIndexOf(")") + 2).split(" ");
    const n = (i: number) => Number(fields[i - 3] ?? 0);
    return { pid, ppid: n(4), cpuMs: ((n(14) + n(15) + n(16) + n(17)) * 1000) / TICKS_PER_SECOND };
  } catch {
    return undefined; // gone
  }
}

function allStats(): Stat[] {
  const out: Stat[] = [];
  for (const name of readdirSync("/proc")) {
    if (!/^\d+$/.test(name)) continue;
    const s = readStat(Number(name));
    if (s) out.push(s);
  }
  return out;
}

/** The pid whose command line contains every one of `parts` (e.g. a server and its port). */
export function findPid(parts: string[]): number | undefined {
  for (const name of readdirSync("/proc")) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const cmd = readFileSync(`/proc/${name}/cmdline`, "utf8").split("\0").join(" ");
      if (cmd.startsWith("runuser") || Number(name) === process.pid) continue;
      if (parts.every((p) => cmd.includes(p))) return Number(name);
    } catch {
      // gone
    }
  }
  return undefined;
}

/** CPU ms of a process and all its live descendants (plus what its reaped children used). */
export function treeCpuMs(root: number): number {
  const stats = allStats();
  const children = new Map<number, Stat[]>();
  for (const s of stats) children.set(s.ppid, [...(children.get(s.ppid) ?? []), s]);
  let total = 0;
  const visit = (pid: number) => {
    const s = stats.find((x) => x.pid === pid);
    if (s) total += s.cpuMs;
    for (const c of children.get(pid) ?? []) visit(c.pid);
  };
  visit(root);
  return total;
}

/** Samples the CPU of named process trees; `since()` gives the ms each used since the sample. */
export function cpuSample(groups: Record<string, number | undefined>): () => Record<string, number> {
  const self = process.cpuUsage();
  const before = Object.fromEntries(
    Object.entries(groups).map(([name, pid]) => [name, pid === undefined ? 0 : treeCpuMs(pid)]),
  );
  return () => {
    const out: Record<string, number> = {};
    for (const [name, pid] of Object.entries(groups)) {
      out[name] = pid === undefined ? 0 : treeCpuMs(pid) - (before[name] ?? 0);
    }
    const used = process.cpuUsage(self);
    out["load generator"] = (used.user + used.system) / 1000;
    return out;
  };
}

/**
 * CPU ms of each process of a tree by its title (/proc/PID/cmdline), for servers that name their
 * processes: Postgres's backends ("postgres: user db host(port) idle") are summed as "backend", and
 * what exited children used (autovacuum workers, closed connections) counts under their parent.
 */
export function treeCpuByTitle(root: number): Map<string, number> {
  const stats = allStats();
  const children = new Map<number, Stat[]>();
  for (const s of stats) children.set(s.ppid, [...(children.get(s.ppid) ?? []), s]);
  const out = new Map<string, number>();
  const visit = (pid: number) => {
    const s = stats.find((x) => x.pid === pid);
    if (s) {
      let title = "?";
      try {
        title = readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0").join(" ").trim();
      } catch {
        // gone
      }
      if (/^postgres: \S+ \S+ [\d.]+\(\d+\)/.test(title)) title = "backend";
      else if (pid === root) title = "postmaster (and exited children)";
      else title = title.replace(/^postgres: /, "").slice(0, 40);
      out.set(title, (out.get(title) ?? 0) + s.cpuMs);
    }
    for (const c of children.get(pid) ?? []) visit(c.pid);
  };
  visit(root);
  return out;
}
