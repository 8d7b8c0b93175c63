import { describe, expect, it } from "vitest";
import { isUsageOnlyFrame, SseTap, type UsageFrameAction } from "../../src/gateway/sse.ts";

const chunk = (i: number) =>
  `data: {"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":" t${i}"}}],"usage":null}\n\n`;
const usageFrame =
  'data: {"id":"c","object":"chat.completion.chunk","choices":[],"usage":{"prompt_tokens":5,"completion_tokens":3}}\n\n';
const done = "data: [DONE]\n\n";

function run(parts: string[], action: (f: Record<string, unknown>) => UsageFrameAction) {
  const tap = new SseTap(action);
  const out: Buffer[] = [];
  for (const p of parts) out.push(...tap.push(Buffer.from(p)));
  out.push(...tap.flush());
  return { tap, text: Buffer.concat(out).toString() };
}

describe("SseTap", () => {
  it("passes complete frames through as the same bytes, without copying", () => {
    const tap = new SseTap(() => ({ kind: "forward" }));
    const input = Buffer.from(chunk(1) + chunk(2));
    const out = tap.push(input);
    expect(out).toHaveLength(1);
    expect(out[0]?.buffer).toBe(input.buffer);
    expect(Buffer.concat(out).equals(input)).toBe(true);
  });

  it("holds back only an unfinished line until its end arrives", () => {
    const tap = new SseTap(() => ({ kind: "forward" }));
    const whole = chunk(1);
    expect(tap.push(Buffer.from(whole.slice(0, 20)))).toEqual([]);
    const out = tap.push(Buffer.from(whole.slice(20)));
    expect(Buffer.concat(out).toString()).toBe(whole);
  });

  it("finds the usage frame even when it is split across chunks, and drops it on request", () => {
    const stream = chunk(1) + usageFrame + done;
    for (let cut = 1; cut < stream.length; cut += 7) {
      const { tap, text } = run([stream.slice(0, cut), stream.slice(cut)], (f) =>
        isUsageOnlyFrame(f) ? { kind: "drop" } : { kind: "forward" },
      );
      expect(text).toBe(chunk(1) + done);
      expect(tap.usageFrame?.usage).toEqual({ prompt_tokens: 5, completion_tokens: 3 });
      expect(tap.done).toBe(true);
    }
  });

  it("replaces the usage frame when asked, leaving every other byte alone", () => {
    const { text } = run([chunk(1), usageFrame, done], (f) => ({
      kind: "replace",
      frame: `data: ${JSON.stringify({ ...f, usage: { ...(f.usage as object), cost: 0.5 } })}\n`,
    }));
    expect(text).toBe(
      `${chunk(1)}data: {"id":"c","object":"chat.completion.chunk","choices":[],"usage":{"prompt_tokens":5,"completion_tokens":3,"cost":0.5}}\n\n${done}`,
    );
  });

  it("keeps what was forwarded until usage arrives, for counting an interrupted stream", () => {
    const { tap } = run([chunk(1), chunk(2).slice(0, 30)], () => ({ kind: "forward" }));
    expect(tap.done).toBe(false);
    expect(tap.usageFrame).toBeUndefined();
    expect(tap.streamedText()).toBe(" t1");
  });

  it("keeps only the generated text of a long stream, not its frames", () => {
    const frames = Array.from({ length: 400 }, (_, i) => chunk(i));
    const { tap } = run(frames, () => ({ kind: "forward" }));
    // The frames themselves are let go past 8 KB (400 of them are ~40 KB): the text stays.
    const kept = (tap as unknown as { windowBytes: number }).windowBytes;
    expect(frames.join("").length).toBeGreaterThan(32 * 1024);
    expect(kept).toBeLessThanOrEqual(8 * 1024);
    expect(tap.streamedText()).toBe(Array.from({ length: 400 }, (_, i) => ` t${i}`).join(""));
  });

  it("keeps a copy of what it forwarded, never the upstream's own buffers", () => {
    const tap = new SseTap(() => ({ kind: "forward" }));
    const input = Buffer.from(chunk(1) + chunk(2));
    expect(tap.push(input)[0]?.buffer).toBe(input.buffer);
    const window = (tap as unknown as { window?: Buffer }).window;
    expect(window?.buffer).not.toBe(input.buffer);
    input.fill(0); // the socket's buffer is reused or freed: what the tap kept is unaffected
    expect(tap.streamedText()).toBe(" t1 t2");
  });

  it("notes an upstream error frame", () => {
    const { tap } = run([chunk(1), 'data: {"error":{"message":"boom","type":"server_error"}}\n\n'], () => ({
      kind: "forward",
    }));
    expect(tap.upstreamError).toEqual({ message: "boom", type: "server_error" });
  });

  it("treats content that mentions usage as content", () => {
    const tricky = `data: {"choices":[{"delta":{"content":"\\"usage\\":{ no"}}],"usage":null}\n\n`;
    const { tap, text } = run([tricky, done], () => ({ kind: "drop" }));
    expect(text).toBe(tricky + done);
    expect(tap.usageFrame).toBeUndefined();
  });

  it("finds a usage object after an error key on the same frame, and in spaced JSON", () => {
    // OpenRouter's chunks may carry "error":null; Python's json.dumps writes ": " after each key.
    const withNullError = 'data: {"id":"c","error":null,"choices":[],"usage":{"prompt_tokens":5}}\n\n';
    const spaced = 'data: {"id": "c", "choices": [], "usage": {"prompt_tokens": 7}}\n\n';
    for (const frame of [withNullError, spaced]) {
      const { tap, text } = run([chunk(1) + frame + done], () => ({ kind: "drop" }));
      expect(text).toBe(chunk(1) + done);
      expect(tap.usageFrame?.usage).toBeTypeOf("object");
      expect(tap.upstreamError).toBeUndefined();
      expect(tap.done).toBe(true);
    }
  });

  it("cuts frames at their bytes when the text before them is not ASCII", () => {
    const accented = `data: {"choices":[{"delta":{"content":"héllo wörld — ✓ 日本"}}],"usage":null}\n\n`;
    const replaced = 'data: {"usage":{"prompt_tokens":5},"cost":1}\n'; // the line; its blank line stays
    const { tap, text } = run([accented + usageFrame + accented + done], () => ({
      kind: "replace",
      frame: replaced,
    }));
    expect(text).toBe(`${accented}${replaced}\n${accented}${done}`);
    expect(tap.done).toBe(true);
  });

  it("tells a stream that ended with [DONE] from one that stopped", () => {
    expect(run([chunk(1), usageFrame, done], () => ({ kind: "forward" })).tap.done).toBe(true);
    expect(run([chunk(1), usageFrame], () => ({ kind: "forward" })).tap.done).toBe(false);
  });
});
