import { describe, expect, it } from "vitest";
import {
  modelSchedule,
  OptionsError,
  parseDuration,
  parseModels,
  parseOptions,
} from "../../../tools/loadtest/options.ts";
import { promptOf } from "../../../tools/loadtest/runner.ts";
import { SseScan } from "../../../tools/loadtest/sse-scan.ts";

describe("loadtest options", () => {
  it("is self-contained without a URL, with the mock knobs on", () => {
    const o = parseOptions([], {});
    expect(o).toMatchObject({
      selfContained: true,
      concurrency: 32,
      durationMs: 10_000,
      requests: undefined,
      stream: true,
      mock: { chunks: 20, delayMs: 0 },
    });
  });

  it("against a URL needs a key or an admin token, and sends no mock knobs unless asked", () => {
    expect(() => parseOptions(["--url", "http://gw:8080"], {})).toThrow(OptionsError);
    const o = parseOptions(["--url", "http://gw:8080/", "--plain", "-n", "500"], { PLANTO_API_KEY: "k" });
    expect(o).toMatchObject({ url: "http://gw:8080", key: "k", selfContained: false, stream: false });
    expect(o).toMatchObject({ requests: 500, durationMs: undefined, mock: undefined });
    const mocked = parseOptions(["--url", "http://gw", "--key", "k", "--mock-chunks", "5"], {});
    expect(mocked).toMatchObject({ mock: { chunks: 5, delayMs: 0 } });
  });

  it("refuses contradictions and bad values", () => {
    expect(() => parseOptions(["--url", "http://gw", "--key", "k", "--self-contained"], {})).toThrow(
      /leave out --url/,
    );
    expect(() => parseOptions(["--stream", "--plain"], {})).toThrow(/one of --stream/);
    expect(() => parseOptions(["--requests", "5", "--duration", "5s"], {})).toThrow(/one of --duration/);
    expect(() => parseOptions(["--concurrency", "0"], {})).toThrow(/--concurrency/);
    expect(() => parseOptions(["--credits", "-1"], {})).toThrow(/--credits/);
    expect(() => parseOptions(["--url", "ftp://x", "--key", "k"], {})).toThrow(/http/);
    expect(() => parseOptions(["--bogus"], {})).toThrow(OptionsError);
  });

  it("reads durations with units", () => {
    expect(parseDuration("30", "d")).toBe(30_000);
    expect(parseDuration("1.5m", "d")).toBe(90_000);
    expect(parseDuration("250ms", "d")).toBe(250);
    expect(() => parseDuration("soon", "d")).toThrow(OptionsError);
  });

  it("mixes models by weight over every window, not only over the run", () => {
    const models = parseModels("gpt-4.1-mini=3, anthropic/claude-sonnet-4=1");
    expect(models).toEqual([
      { model: "gpt-4.1-mini", weight: 3 },
      { model: "anthropic/claude-sonnet-4", weight: 1 },
    ]);
    const schedule = modelSchedule(models);
    expect(schedule).toHaveLength(4);
    expect(schedule.filter((m) => m === "gpt-4.1-mini")).toHaveLength(3);
    const spread = modelSchedule(parseModels("a=1,b=1,c=2"));
    expect(spread.filter((m) => m === "c")).toHaveLength(2);
    expect(spread[0]).toBe("c");
    expect(spread.join(",")).not.toMatch(/c,c/);
    expect(() => parseModels("a=0")).toThrow(OptionsError);
  });

  it("makes prompts of exactly the asked size, different per call", () => {
    const filler = "x".repeat(2000);
    expect(promptOf(1, 256, filler)).toHaveLength(256);
    expect(promptOf(1, 256, filler)).not.toBe(promptOf(2, 256, filler));
  });
});

describe("SseScan", () => {
  const enc = (s: string) => new TextEncoder().encode(s);

  it("finds the first content frame, the usage frame with cost, and [DONE], across chunk splits", () => {
    const stream =
      'data: {"choices":[{"index":0,"delta":{"role":"assistant","content":""}}],"usage":null}\n\n' +
      ": OPENROUTER PROCESSING\n\n" +
      'data: {"choices":[{"index":0,"delta":{"content":" tok"}}],"usage":null}\n\n' +
      'data: {"choices":[{"index":0,"delta":{"content":" tok"}}],"usage":null}\r\n\r\n' +
      'data: {"choices":[],"usage":{"prompt_tokens":70,"completion_tokens":2,"cost":0.000123}}\n\n' +
      "data: [DONE]\n\n";
    const scan = new SseScan();
    const bytes = enc(stream);
    let t = 0;
    for (let i = 0; i < bytes.length; i += 7) scan.push(bytes.subarray(i, i + 7), t++);
    scan.end(t);
    // The role-only frame has no content; the first " tok" arrives in the chunk that completes its line.
    const firstContentLine = stream.indexOf('" tok"}}],"usage":null}\n') + 24;
    expect(scan.firstContentAt).toBe(Math.floor(firstContentLine / 7));
    expect(scan.usage).toEqual({ promptTokens: 70, completionTokens: 2, cost: 0.000123 });
    expect(scan.done).toBe(true);
    expect(scan.error).toBeUndefined();
  });

  it("reads an in-stream error frame's code", () => {
    const scan = new SseScan();
    scan.push(enc('data: {"choices":[{"delta":{"content":"a"}}]}\n\n'), 1);
    scan.push(
      enc(
        'data: {"error":{"message":"upstream failed","type":"upstream_error","code":"upstream_error"}}\n\n',
      ),
      2,
    );
    scan.end(3);
    expect(scan.error).toBe("upstream_error");
    expect(scan.done).toBe(false);
  });

  it("reads the gateway's own mid-stream frame (OpenRouter's shape, numeric code) and a provider's", () => {
    const gateway = new SseScan();
    gateway.push(
      enc(
        'data: {"error":{"code":502,"message":"upstream failed","metadata":{"type":"upstream_error"}}}\n\n',
      ),
      1,
    );
    gateway.end(2);
    expect(gateway.error).toBe("upstream_error");
    const provider = new SseScan();
    provider.push(enc('data: {"error":{"code":503,"message":"Provider disconnected"}}\n\n'), 1);
    provider.end(2);
    expect(provider.error).toBe("upstream_503");
  });

  it("keeps multibyte text split across chunks, and is not fooled by [DONE] or error in content", () => {
    const stream =
      'data: {"choices":[{"delta":{"content":"héllo ✓ [DONE]"}}]}\n\n' +
      'data: {"choices":[{"delta":{"content":"say \\"error\\": data: [DONE]"}}]}\n\n' +
      'data: {"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2,"cost":1.5e-7}}\n\n';
    const bytes = enc(stream);
    for (const size of [1, 2, 3, 5, 64, bytes.length]) {
      const scan = new SseScan();
      for (let i = 0; i < bytes.length; i += size) scan.push(bytes.subarray(i, i + size), i);
      scan.end(bytes.length);
      expect(scan.firstContentAt).toBeDefined();
      expect(scan.usage?.cost).toBe(1.5e-7);
      expect(scan.error).toBeUndefined();
      expect(scan.done).toBe(false); // no [DONE] line: the stream was cut
      scan.push(enc("data: [DONE]\n\n"), 0);
      expect(scan.done).toBe(true);
    }
  });

  it("takes a final line without its newline", () => {
    const scan = new SseScan();
    scan.push(enc('data: {"choices":[{"delta":{"content":"a"}}]}\n\ndata: [DONE]'), 1);
    expect(scan.done).toBe(false);
    scan.end(2);
    expect(scan.done).toBe(true);
  });
});
