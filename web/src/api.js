// Talking to the gateway (same origin). Errors are RFC 9457 problem bodies: `detail` is what
// the user gets to read. Nothing secret is ever sent: no file key, no plaintext.

export const API_KEY_STORAGE = "bitcache.apiKey";

/** A failed API call; `message` is the problem's `detail` (or a short fallback). */
export class ApiError extends Error {
  constructor(status, message, body = null) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.body = body;
  }
}

/** Optional path prefix of the gateway (`data-api-base` on #app), "" by default. */
export function apiBase() {
  const base = globalThis.document?.getElementById("app")?.dataset.apiBase ?? "";
  return base.replace(/\/+$/, "");
}

export function getApiKey() {
  try {
    return (globalThis.localStorage?.getItem(API_KEY_STORAGE) ?? "").trim();
  } catch {
    return "";
  }
}

export function setApiKey(key) {
  try {
    if (key) globalThis.localStorage.setItem(API_KEY_STORAGE, key.trim());
    else globalThis.localStorage.removeItem(API_KEY_STORAGE);
  } catch {
    // Private mode without storage: the key lives in the input field only.
  }
}

export const sleep = (ms, signal = undefined) =>
  new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason ?? new DOMException("Aborted", "AbortError"));
    const timer = setTimeout(resolve, ms);
    signal?.addEventListener(
      "abort",
      () => {
        clearTimeout(timer);
        reject(signal.reason ?? new DOMException("Aborted", "AbortError"));
      },
      { once: true },
    );
  });

/** Reads a response body as JSON, or null if it is not JSON. */
export async function jsonOrNull(resp) {
  try {
    return await resp.json();
  } catch {
    return null;
  }
}

/** The user-facing message of an error response: the problem's `detail`. */
export function problemMessage(status, body) {
  if (body && typeof body === "object") {
    if (typeof body.detail === "string" && body.detail) return body.detail;
    if (typeof body.title === "string" && body.title) return body.title;
  }
  if (status === 0) return "the gateway could not be reached; check your connection";
  return `the gateway answered HTTP ${status}`;
}

const RETRYABLE = new Set([429, 502, 503, 504]);

function retryDelay(resp, attempt) {
  const header = Number(resp?.headers?.get("Retry-After"));
  const base = Number.isFinite(header) && header > 0 ? header * 1000 : 500 * 2 ** attempt;
  return Math.min(base, 10_000);
}

/**
 * fetch() with JSON, Bearer auth and retries of transient failures (network error, 429,
 * 502-504) for up to `retries` extra attempts. Returns the Response when its status is in
 * `ok`; otherwise throws ApiError carrying the problem's detail and parsed body.
 */
export async function call(path, opts = {}) {
  const { method = "GET", json, body, headers = {}, apiKey, ok = [200, 201], retries = 2, signal } = opts;
  const h = new Headers(headers);
  let payload = body;
  if (json !== undefined) {
    h.set("Content-Type", "application/json");
    payload = JSON.stringify(json);
  }
  if (apiKey) h.set("Authorization", `Bearer ${apiKey}`);
  if (!h.has("Accept")) h.set("Accept", "application/json, application/problem+json");
  for (let attempt = 0; ; attempt++) {
    let resp;
    try {
      resp = await fetch(apiBase() + path, { method, headers: h, body: payload, signal, credentials: "same-origin" });
    } catch (err) {
      if (err?.name === "AbortError") throw err;
      if (attempt < retries) {
        await sleep(500 * 2 ** attempt, signal);
        continue;
      }
      throw new ApiError(0, problemMessage(0, null));
    }
    if (ok.includes(resp.status)) return resp;
    if (RETRYABLE.has(resp.status) && attempt < retries) {
      await sleep(retryDelay(resp, attempt), signal);
      continue;
    }
    const problem = await jsonOrNull(resp);
    throw new ApiError(resp.status, problemMessage(resp.status, problem), problem);
  }
}

/** call() and parse the JSON answer. */
export async function callJson(path, opts = {}) {
  const resp = await call(path, opts);
  return resp.json();
}
