import { readdirSync, readFileSync } from "node:fs";
import { dirname, join, relative, resolve } from "node:path";
import ts from "typescript";
import { describe, expect, it } from "vitest";

/**
 * The layout's two rules, checked on the source itself: no import cycles (no two files import each
 * other, directly or through others, type-only imports included) and the product (src/) never
 * importing the tools (tools/) or the tests.
 */
const root = resolve(import.meta.dirname, "..");

function tsFiles(dir: string): string[] {
  return readdirSync(join(root, dir), { withFileTypes: true, recursive: true })
    .filter((e) => e.isFile() && e.name.endsWith(".ts"))
    .map((e) => relative(root, join(e.parentPath, e.name)));
}

/** Every relative import of a file (static, type-only, re-export and dynamic), as repo paths. */
function relativeImports(file: string): string[] {
  const info = ts.preProcessFile(readFileSync(join(root, file), "utf8"), true, true);
  return info.importedFiles
    .map((f) => f.fileName)
    .filter((spec) => spec.startsWith("."))
    .map((spec) => relative(root, resolve(root, dirname(file), spec)));
}

function importGraph(dirs: string[]): Map<string, string[]> {
  return new Map(dirs.flatMap(tsFiles).map((f) => [f, relativeImports(f)]));
}

/** Each cycle once, as the loop of files (`a → b → a`). */
function findCycles(graph: Map<string, string[]>): string[][] {
  const cycles: string[][] = [];
  const state = new Map<string, "open" | "done">();
  const path: string[] = [];
  const visit = (file: string) => {
    state.set(file, "open");
    path.push(file);
    for (const next of graph.get(file) ?? []) {
      if (!graph.has(next)) continue;
      if (state.get(next) === "open") cycles.push([...path.slice(path.indexOf(next)), next]);
      else if (!state.has(next)) visit(next);
    }
    path.pop();
    state.set(file, "done");
  };
  for (const file of graph.keys()) if (!state.has(file)) visit(file);
  return cycles;
}

describe("layout", () => {
  const graph = importGraph(["src", "tools", "bin"]);

  it("has no import cycles in src/ or tools/", () => {
    expect(graph.size).toBeGreaterThan(50);
    expect(findCycles(graph).map((c) => c.join(" → "))).toEqual([]);
  });

  it("finds a cycle when there is one (the check itself works)", () => {
    const loop = new Map([
      ["a.ts", ["b.ts"]],
      ["b.ts", ["c.ts"]],
      ["c.ts", ["a.ts"]],
      ["d.ts", ["a.ts"]],
    ]);
    expect(findCycles(loop)).toEqual([["a.ts", "b.ts", "c.ts", "a.ts"]]);
    expect(findCycles(new Map([["x.ts", ["x.ts"]]]))).toEqual([["x.ts", "x.ts"]]);
  });

  it("keeps the product apart: nothing in src/ imports tools/ or test/", () => {
    const crossings = [...graph]
      .filter(([file]) => file.startsWith("src/"))
      .flatMap(([file, deps]) => deps.filter((d) => !d.startsWith("src/")).map((d) => `${file} → ${d}`));
    expect(crossings).toEqual([]);
  });
});
