/** A column of a text table: numbers read best right-aligned, so their digits line up. */
export interface Column {
  title: string;
  align?: "left" | "right";
}

/**
 * Lays rows out in columns as wide as their widest cell (title included), two spaces apart, with
 * a rule under the titles. Trailing spaces are trimmed so that a piped table diffs cleanly.
 */
export function renderTable(columns: Column[], rows: string[][]): string[] {
  const widths = columns.map((col, i) =>
    Math.max(width(col.title), ...rows.map((row) => width(row[i] ?? ""))),
  );
  const line = (cells: string[]) =>
    columns
      .map((col, i) => {
        const cell = cells[i] ?? "";
        const pad = " ".repeat((widths[i] ?? 0) - width(cell));
        return col.align === "right" ? pad + cell : cell + pad;
      })
      .join("  ")
      .trimEnd();
  return [line(columns.map((c) => c.title)), widths.map((w) => "-".repeat(w)).join("  "), ...rows.map(line)];
}

/** Label/value pairs, the values starting in one column. */
export function renderPairs(pairs: Array<[string, string]>, indent = ""): string[] {
  const labelWidth = Math.max(0, ...pairs.map(([label]) => width(label)));
  return pairs.map(([label, value]) => `${indent}${label}${" ".repeat(labelWidth - width(label))}  ${value}`);
}

/** Terminal columns a string takes: code points, not UTF-16 units (plan names may hold emoji or accents). */
function width(s: string): number {
  return [...s].length;
}
