import type { Logger } from "../core/log.ts";

/** One email to an org. */
export interface EmailMessage {
  to: string;
  subject: string;
  text: string;
  /**
   * The same for every attempt at one notification (its outbox row id), so the provider sends it
   * once even when a delivery is repeated after a crash between sending and marking it sent.
   */
  idempotencyKey: string;
}

export type SendResult =
  | { ok: true; messageId: string }
  /** retryable: try again later (rate limit, outage, timeout); else refused for good (a bad address). */
  | { ok: false; retryable: boolean; reason: string };

/**
 * Sends the org notifications: an email provider's transactional API in production
 * (resendNotifier), the log when none is configured (loggingNotifier), a fake provider in tests.
 * A notifier never throws: every outcome is a SendResult.
 */
export interface Notifier {
  readonly kind: "email" | "log";
  send(message: EmailMessage): Promise<SendResult>;
}

/**
 * Resend's `POST /emails` (https://resend.com/docs/api-reference/emails/send-email), with its
 * `Idempotency-Key` header: within 24 hours a request repeated with the same key is answered as the
 * first one was, without sending again. 429 (rate or quota), 409 (the same key still in progress),
 * 401/403 (a key to fix) and 5xx are retried; other 4xx (a bad address or sender) are final.
 */
export function resendNotifier(opts: {
  apiKey: string;
  from: string;
  url: string;
  timeoutMs?: number;
}): Notifier {
  return {
    kind: "email",
    async send(m) {
      let res: Response;
      try {
        res = await fetch(opts.url, {
          method: "POST",
          headers: {
            authorization: `Bearer ${opts.apiKey}`,
            "content-type": "application/json",
            "idempotency-key": m.idempotencyKey,
          },
          body: JSON.stringify({ from: opts.from, to: [m.to], subject: m.subject, text: m.text }),
          signal: AbortSignal.timeout(opts.timeoutMs ?? 10_000),
        });
      } catch (err) {
        return { ok: false, retryable: true, reason: `email provider unreachable: ${errorText(err)}` };
      }
      const body = await res.text().catch(() => "");
      if (res.ok) {
        const id = parseObject(body)?.id;
        return { ok: true, messageId: typeof id === "string" ? id : "" };
      }
      const detail = parseObject(body);
      const name = typeof detail?.name === "string" ? detail.name : "";
      const message = typeof detail?.message === "string" ? detail.message : body.slice(0, 200);
      const retryable = res.status >= 500 || [401, 403, 408, 409, 429].includes(res.status);
      return {
        ok: false,
        retryable,
        reason: `email provider answered ${res.status} ${name}: ${message}`.trim(),
      };
    },
  };
}

/** The embedded default (no EMAIL_API_KEY): each notification is a log line, and counts as delivered. */
export function loggingNotifier(log: Logger): Notifier {
  return {
    kind: "log",
    async send(m) {
      log.info("notification (no EMAIL_API_KEY: logged, not emailed)", {
        to: m.to,
        subject: m.subject,
        text: m.text,
        idempotencyKey: m.idempotencyKey,
      });
      return { ok: true, messageId: `logged:${m.idempotencyKey}` };
    },
  };
}

function errorText(err: unknown): string {
  if (err instanceof Error)
    return err.cause instanceof Error ? `${err.message} (${err.cause.message})` : err.message;
  return String(err);
}

function parseObject(text: string): Record<string, unknown> | undefined {
  try {
    const value: unknown = JSON.parse(text);
    return typeof value === "object" && value !== null && !Array.isArray(value)
      ? (value as Record<string, unknown>)
      : undefined;
  } catch {
    return undefined;
  }
}
