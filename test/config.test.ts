import { describe, expect, it } from "vitest";
import { ConfigError, parseConfig } from "../src/config.ts";

describe("configuration of billing notifications", () => {
  it("defaults to Resend's endpoint, and to logging when no EMAIL_API_KEY is set", () => {
    const config = parseConfig({});
    expect(config.EMAIL_API_KEY).toBeUndefined();
    expect(config.EMAIL_API_URL).toBe("https://api.resend.com/emails");
    expect(config.NOTIFY_INTERVAL_MS).toBe(5_000);
    expect(config.NOTIFY_MAX_ATTEMPTS).toBe(10);
  });

  it("an EMAIL_API_KEY without EMAIL_FROM, or a bad EMAIL_API_URL, stops the start naming the variable", () => {
    expect(() => parseConfig({ EMAIL_API_KEY: "re_123" })).toThrow(ConfigError);
    expect(() => parseConfig({ EMAIL_API_KEY: "re_123" })).toThrow(/EMAIL_FROM/);
    expect(() => parseConfig({ EMAIL_API_URL: "not a url" })).toThrow(/EMAIL_API_URL/);
    expect(parseConfig({ EMAIL_API_KEY: "re_123", EMAIL_FROM: "Planto <billing@planto.dev>" })).toMatchObject(
      {
        EMAIL_API_KEY: "re_123",
        EMAIL_FROM: "Planto <billing@planto.dev>",
      },
    );
  });
});
