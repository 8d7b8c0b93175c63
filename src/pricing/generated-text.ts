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
  if (typeof obj.type === "string") {
    collectResponsesText(obj, out);
    return;
  }
  if (obj.object === "response") {
    collectResponseOutput(obj.output, out);
    return;
  }
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

/**
 * A Responses API stream event: the generated text arrives in `*.delta` events (output text,
 * refusals, reasoning summaries, function-call arguments); the other events repeat it or carry none.
 */
function collectResponsesText(event: JsonObject, out: string[]): void {
  if (!String(event.type).endsWith(".delta")) return;
  if (typeof event.delta === "string") out.push(event.delta);
}

/** A plain Responses API body's `output` items: message text, reasoning summaries, call arguments. */
function collectResponseOutput(output: unknown, out: string[]): void {
  if (!Array.isArray(output)) return;
  for (const item of output as JsonObject[]) {
    if (typeof item?.arguments === "string") out.push(item.arguments);
    for (const key of ["content", "summary"] as const) {
      const parts = item?.[key];
      if (!Array.isArray(parts)) continue;
      for (const part of parts as JsonObject[]) if (typeof part?.text === "string") out.push(part.text);
    }
  }
}
