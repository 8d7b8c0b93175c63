/**
 * The one error type of the HTTP edge and its renderer. Every error body carries both envelopes at
 * once, OpenAI's `{error:{…}}` and Planto's `{type,status,msg}`, with `Content-Type:
 * application/json` exactly (the Planto CLI parses nothing else).
 */
export const errorStatus = {
  invalid_api_key: 401,
  invalid_request_error: 400,
  model_not_found: 404,
  cloud_insufficient_credits: 402,
  cloud_monthly_max_reached: 402,
  cloud_subscription_paused: 402,
  cloud_subscription_overdue: 402,
  trial_plans_exceeded: 403,
  trial_messages_exceeded: 403,
  rate_limit_exceeded: 429,
  upstream_error: 502,
  /** The provider refused the gateway's own key: the gateway's fault, not the caller's. */
  upstream_auth_error: 502,
  context_length_exceeded: 400,
  not_found: 404,
  forbidden: 403,
  conflict: 409,
  unavailable: 503,
  internal_error: 500,
} as const;

export type ErrorCode = keyof typeof errorStatus;

/** OpenAI SDKs switch on `error.type`; these are the families they know. */
const openAiType: Record<ErrorCode, string> = {
  invalid_api_key: "invalid_request_error",
  invalid_request_error: "invalid_request_error",
  model_not_found: "invalid_request_error",
  cloud_insufficient_credits: "insufficient_quota",
  cloud_monthly_max_reached: "insufficient_quota",
  cloud_subscription_paused: "insufficient_quota",
  cloud_subscription_overdue: "insufficient_quota",
  trial_plans_exceeded: "permission_error",
  trial_messages_exceeded: "permission_error",
  // What OpenAI itself answers for a rate limit; its SDKs raise RateLimitError on the 429 either way.
  rate_limit_exceeded: "requests",
  upstream_error: "upstream_error",
  upstream_auth_error: "upstream_error",
  context_length_exceeded: "invalid_request_error",
  not_found: "invalid_request_error",
  forbidden: "permission_error",
  conflict: "invalid_request_error",
  unavailable: "server_error",
  internal_error: "server_error",
};

export type ErrorExtras = Record<string, unknown>;

export class GatewayError extends Error {
  override name = "GatewayError";
  readonly code: ErrorCode;
  readonly status: number;
  readonly param: string | null;
  readonly extras: ErrorExtras;
  /** Response headers that go with the error (a rate limit's `retry-after` and `x-ratelimit-*`). */
  readonly headers: Readonly<Record<string, string>>;

  constructor(
    code: ErrorCode,
    message: string,
    opts: {
      status?: number;
      param?: string | null;
      extras?: ErrorExtras;
      headers?: Record<string, string>;
    } = {},
  ) {
    super(message);
    this.code = code;
    this.status = opts.status ?? errorStatus[code];
    this.param = opts.param ?? null;
    this.extras = opts.extras ?? {};
    this.headers = opts.headers ?? {};
  }

  /** The error object as OpenAI clients read it (also the payload of a mid-stream error frame). */
  toOpenAi(): { message: string; type: string; code: ErrorCode; param: string | null } {
    return { message: this.message, type: openAiType[this.code], code: this.code, param: this.param };
  }

  toBody(): Record<string, unknown> {
    return {
      error: this.toOpenAi(),
      type: this.code,
      status: this.status,
      msg: this.message,
      ...this.extras,
    };
  }
}

export const JSON_CONTENT_TYPE = "application/json";

export function errorBody(err: GatewayError): string {
  return JSON.stringify(err.toBody());
}

/** Renders any thrown value as a contract error response. */
export function renderError(err: unknown): Response {
  const gw = toGatewayError(err);
  return new Response(errorBody(gw), {
    status: gw.status,
    headers: { ...gw.headers, "content-type": JSON_CONTENT_TYPE },
  });
}

export function toGatewayError(err: unknown): GatewayError {
  if (err instanceof GatewayError) return err;
  return new GatewayError("internal_error", "internal error");
}

/**
 * The final SSE frame sent when a stream fails after its first byte, in OpenRouter's shape: a Go
 * client (the Planto server) decodes `code` as an int, so it is the HTTP-like status, and the
 * contract's code rides in `metadata.type`.
 */
export function errorFrame(err: GatewayError): string {
  const frame = { error: { code: err.status, message: err.message, metadata: { type: err.code } } };
  return `data: ${JSON.stringify(frame)}\n\n`;
}
