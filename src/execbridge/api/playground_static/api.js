// The gateway's public API, as the page uses it: the same requests any Anthropic client sends.
// The key lives in sessionStorage (gone when the tab closes) and travels only as x-api-key.

import { readEvents } from "./sse.js";

const KEY_ITEM = "execbridge.playground.key";
const API_VERSION = "2023-06-01";

// An error answered in the API's own envelope: {"type": "error", "error": {"type", "message"}}.
export class ApiError extends Error {
  constructor(status, type, message, requestId) {
    super(message);
    this.status = status;
    this.type = type;
    this.requestId = requestId;
  }

  describe() {
    const where = this.requestId ? ` (request ${this.requestId})` : "";
    const status = this.status ? `${this.status} ` : "";
    return `${status}${this.type}: ${this.message}${where}`;
  }
}

export function storedKey() {
  return sessionStorage.getItem(KEY_ITEM) || "";
}

export function storeKey(key) {
  if (key) sessionStorage.setItem(KEY_ITEM, key);
  else sessionStorage.removeItem(KEY_ITEM);
}

function headers(extra = {}) {
  const all = { "anthropic-version": API_VERSION, ...extra };
  const key = storedKey();
  if (key) all["x-api-key"] = key;
  return all;
}

async function failure(response) {
  const requestId = response.headers.get("request-id");
  let body = null;
  try {
    body = await response.json();
  } catch {
    // not JSON: fall through to the status line
  }
  const error = body && body.error;
  if (error && typeof error.message === "string") {
    return new ApiError(response.status, String(error.type), error.message, body.request_id || requestId);
  }
  return new ApiError(response.status, "http_error", response.statusText || "request failed", requestId);
}

async function call(path, options = {}) {
  const response = await fetch(path, { ...options, headers: headers(options.headers), credentials: "omit" });
  if (!response.ok) throw await failure(response);
  return response;
}

export async function session() {
  const response = await fetch("/playground/session", { credentials: "omit" });
  if (!response.ok) throw await failure(response);
  return response.json();
}

export async function listModels() {
  const response = await call("/v1/models?limit=1000");
  return (await response.json()).data;
}

export async function uploadFile(file) {
  const form = new FormData();
  form.append("file", file, file.name);
  const response = await call("/v1/files", { method: "POST", body: form });
  return response.json();
}

export async function fileMetadata(fileId) {
  const response = await call(`/v1/files/${encodeURIComponent(fileId)}`);
  return response.json();
}

export async function fileBytes(fileId) {
  const response = await call(`/v1/files/${encodeURIComponent(fileId)}/content`);
  return new Uint8Array(await response.arrayBuffer());
}

// POST /v1/messages with stream: true; yields the stream's events. An error event becomes an ApiError.
export async function* streamMessage(body, signal) {
  const response = await call("/v1/messages", {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ ...body, stream: true }),
    signal,
  });
  const requestId = response.headers.get("request-id");
  for await (const event of readEvents(response)) {
    if (event.type === "error") {
      const error = event.error || {};
      throw new ApiError(0, String(error.type), String(error.message), event.request_id || requestId);
    }
    yield event;
  }
}
