import type { JsonObject } from "../core/usage.ts";

/** The generated text in a chunk or response: content, reasoning, tool-call arguments, merged code. */
export function collectGeneratedText(payload: string, out: string[]): void {
  let value: unknown;
  try {
    value = JSON.parse(payload);
  } catch {
    return;
  }
  if (typeof value !== "object" || value === null) return;
  const obj = value as JsonObject;
  if (typeof obj.mergedCode === "string") out.push(obj.mergedCode);
  if (!Array.isArray(obj.choices)) return;
  for (const choice of obj.choices as JsonObject[]) {
    const part = (choice?.delta ?? choice?.message) as JsonObject | undefined;
    if (!part) continue;
    if (typeof part.content === "string") out.push(part.content);
    if (typeof part.reasoning === "string") out.push(part.reasoning);
    if (typeof part.reasoning_content === "string") out.push(part.reasoning_content);
    if (Array.isArray(part.tool_calls)) {
      for (const call of part.tool_calls as JsonObject[]) {
        const fn = call?.function as JsonObject | undefined;
        if (typeof fn?.arguments === "string") out.push(fn.arguments);
      }
    }
  }
}
