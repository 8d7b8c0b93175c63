/**
 * How the CLI talks to a gateway: one place that turns every way a request can go wrong (nothing
 * listening, a URL that is not a gateway, a refused key, an error envelope) into one sentence that
 * says what to fix.
 */

/** An error the CLI prints as it is (no stack), exiting with `exitCode`: 2 the command line, 1 the gateway. */
export class CliError extends Error {
  override name = "CliError";
  constructor(
    message: string,
    readonly exitCode: 1 | 2 = 1,
  ) {
    super(message);
  }
}

export const DEFAULT_GATEWAY_URL = "http://localhost:8080";
const TIMEOUT_MS = 30_000;

/**
 * The gateway's root from what a user may paste: the SDK base URL (`…/v1`, `…/openai/v1`, …) they
 * already have, with or without a trailing slash. Only those suffixes go: a gateway mounted under a
 * path prefix (`https://host/llm`) keeps it.
 */
export function gatewayRoot(raw: string): string {
  let url: URL;
  try {
    url = new URL(raw.trim());
  } catch {
    throw new CliError(
      `PLANTO_GATEWAY_URL ${JSON.stringify(raw)} is not a URL (e.g. ${DEFAULT_GATEWAY_URL})`,
      2,
    );
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") {
    throw new CliError(`PLANTO_GATEWAY_URL ${JSON.stringify(raw)} must start with http:// or https://`, 2);
  }
  const path = url.pathname.replace(/\/+$/, "").replace(/(\/(openai|openrouter|relace))?\/v1$/, "");
  return `${url.origin}${path}`;
}

type Json = Record<string, unknown>;

const isObject = (v: unknown): v is Json => typeof v === "object" && v !== null && !Array.isArray(v);

/**
 * What went wrong under fetch's "fetch failed": the system error's code (ECONNREFUSED, ENOTFOUND,
 * …) a cause or two down, else the innermost message (fetch's own refusals, e.g. "bad port").
 */
function networkReason(err: unknown): string {
  let reason = err instanceof Error ? err.message : String(err);
  let e: unknown = err;
  for (let depth = 0; depth < 4 && e instanceof Error; depth++) {
    const { code } = e as NodeJS.ErrnoException;
    if (depth > 0 && typeof code === "string") return code;
    if (depth > 0) reason = e.message;
    e = e.cause ?? (e instanceof AggregateError ? e.errors[0] : undefined);
  }
  return reason;
}

export interface GatewayClient {
  root: string;
  get(path: string): Promise<Json>;
  post(path: string, body: Json): Promise<Json>;
}

export function gatewayClient(rootUrl: string, key: string): GatewayClient {
  const root = gatewayRoot(rootUrl);
  const notAGateway = (url: string, what: string) =>
    new CliError(
      `${root} does not look like a planto-gateway: ${url} ${what}. Set PLANTO_GATEWAY_URL (or --url) to the ` +
        `gateway's address, e.g. https://gateway.example.com (a trailing /v1 is fine).`,
    );

  const request = async (method: "GET" | "POST", path: string, body?: Json): Promise<Json> => {
    const url = `${root}${path}`;
    let res: Response;
    try {
      res = await fetch(url, {
        method,
        headers: {
          authorization: `Bearer ${key}`,
          ...(body ? { "content-type": "application/json" } : {}),
        },
        body: body ? JSON.stringify(body) : undefined,
        signal: AbortSignal.timeout(TIMEOUT_MS),
      });
    } catch (err) {
      if (err instanceof Error && err.name === "TimeoutError") {
        throw new CliError(
          `the gateway at ${root} did not answer ${method} ${path} within ${TIMEOUT_MS / 1000} s`,
        );
      }
      throw new CliError(
        `cannot reach the gateway at ${root} (${networkReason(err)}): is it running, and is PLANTO_GATEWAY_URL (or --url) its address?`,
      );
    }
    const text = await res.text();
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch {
      json = undefined;
    }
    const envelope = isObject(json) && isObject(json.error) ? json.error : undefined;
    if (res.status === 404) {
      // Every gateway serves the billing routes: a 404 there is another server, or a path in the URL.
      throw notAGateway(url, `answered 404${envelope ? ` (${String(envelope.message)})` : ""}`);
    }
    if (!isObject(json)) {
      throw notAGateway(
        url,
        `answered ${res.status} with ${res.headers.get("content-type") ?? "no content type"}, not JSON`,
      );
    }
    if (!res.ok) {
      const code = String(envelope?.code ?? envelope?.type ?? res.status);
      const message = String(envelope?.message ?? text.slice(0, 200));
      if (res.status === 401) {
        throw new CliError(
          `the gateway at ${root} refused the api key (${code}: ${message}); check PLANTO_API_KEY`,
        );
      }
      throw new CliError(`${method} ${url} failed with ${res.status} ${code}: ${message}`);
    }
    return json;
  };

  return {
    root,
    get: (path) => request("GET", path),
    post: (path, body) => request("POST", path, body),
  };
}
