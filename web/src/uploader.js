// Encrypting and uploading one file from the page (shared by the upload page and the vault
// page's share button). Only ciphertext leaves the page; the key goes into the share link.

import { ApiError, apiBase, call, callJson } from "./api.js";
import { DEFAULT_CHUNK_SIZE, FileEncryptor, b64urlEncode, buildShareLink, encodeFileId, newFileId, newFileKey, ready } from "./format.js";

const PUT_IN_FLIGHT = 3;
const CHUNK_RETRIES = 5;

// --- manifest fields from a File ---------------------------------------------------------------

/** A bare, valid manifest name (§8) from whatever the browser reports. */
export function safeName(name) {
  let out = "";
  let count = 0;
  for (const ch of String(name ?? "")) {
    const cp = ch.codePointAt(0);
    const bad = cp < 0x20 || cp === 0x7f || (cp >= 0xd800 && cp <= 0xdfff) || ch === "/" || ch === "\\";
    out += bad ? "_" : ch;
    if (++count === 255) break;
  }
  if (out === "" || out === "." || out === "..") out = "file";
  return out;
}

function mediaType(file) {
  const t = String(file.type || "");
  const ok = t.length > 0 && t.length <= 255 && !/[\u0000-\u001f\u007f\ud800-\udfff]/.test(t);
  return ok ? t : "application/octet-stream";
}

function modifiedSeconds(file) {
  const ms = Number(file.lastModified);
  return Number.isFinite(ms) && ms > 0 ? Math.floor(ms / 1000) : null;
}

// --- the upload of one file --------------------------------------------------------------------

async function readChunk(file, start, end) {
  // File.slice reads only this range: the whole file is never in memory.
  const data = new Uint8Array(await file.slice(start, end).arrayBuffer());
  if (data.length !== end - start) throw new Error(`${file.name} changed while it was being read`);
  return data;
}

export async function putChunk(fileIdText, index, sealed, apiKey) {
  for (let attempt = 0; ; attempt++) {
    try {
      return await call(`/v1/files/${fileIdText}/chunks/${index}`, {
        method: "PUT",
        body: sealed,
        headers: { "Content-Type": "application/octet-stream" },
        apiKey,
        ok: [200, 201],
        retries: 2,
      });
    } catch (err) {
      // PUT is idempotent (identical bytes → 200): retry transient failures a few more times.
      const transient = err instanceof ApiError && (err.status === 0 || err.status >= 500 || err.status === 429);
      if (!transient || attempt >= CHUNK_RETRIES) throw err;
      await new Promise((r) => setTimeout(r, 1000 * 2 ** Math.min(attempt, 4)));
    }
  }
}

/** Encrypts and uploads one file; returns its share link. `onProgress(doneBytes, totalBytes)`. */
export async function uploadFile(file, { apiKey, priceMsat, onProgress }) {
  await ready;
  const key = newFileKey();
  const fileId = newFileId();
  const idText = encodeFileId(fileId);
  const enc = await FileEncryptor.create(key, fileId, file.size, DEFAULT_CHUNK_SIZE);
  const manifest = {
    chunk_size: DEFAULT_CHUNK_SIZE,
    media_type: mediaType(file),
    modified: modifiedSeconds(file),
    name: safeName(file.name),
    size: file.size,
  };
  const body = { header: enc.headerJson(), manifest: b64urlEncode(enc.sealManifest(manifest)) };
  if (priceMsat !== null) body.price_msat = priceMsat;
  const state = await callJson("/v1/files", { method: "POST", json: body, apiKey, ok: [200, 201], retries: 2 });
  if (state.file_id !== idText) throw new Error("the gateway answered for another file id");

  const count = enc.chunkCount;
  const total = file.size + 40 * count;
  let done = 0;
  onProgress(0, total);

  const uploadRange = async (indexes) => {
    const inFlight = new Set();
    let failure = null;
    for (const i of indexes) {
      if (failure) break;
      const [start, end] = enc.chunkRange(i);
      const plaintext = await readChunk(file, start, end);
      const sealed = enc.seal(i, plaintext);
      plaintext.fill(0);
      const p = putChunk(idText, i, sealed, apiKey)
        .then(() => {
          done += sealed.length;
          onProgress(done, total);
        })
        .catch((err) => {
          failure ??= err;
        })
        .finally(() => inFlight.delete(p));
      inFlight.add(p);
      if (inFlight.size >= PUT_IN_FLIGHT) await Promise.race(inFlight);
    }
    await Promise.all(inFlight);
    if (failure) throw failure;
  };

  await uploadRange(Array.from({ length: count }, (_, i) => i));
  try {
    await call(`/v1/files/${idText}/complete`, { method: "POST", apiKey, ok: [200], retries: 2 });
  } catch (err) {
    // 409 with `missing`: put those once more, then complete again.
    const missing = err instanceof ApiError && err.status === 409 ? err.body?.missing : null;
    if (!Array.isArray(missing) || missing.length === 0) throw err;
    await uploadRange(missing.filter((i) => Number.isInteger(i) && i >= 0 && i < count));
    await call(`/v1/files/${idText}/complete`, { method: "POST", apiKey, ok: [200], retries: 2 });
  }
  onProgress(total, total);
  return { link: buildShareLink(shareBase(state, idText), fileId, key), idText, manifest };
}

/** The page's origin (and API prefix); the gateway's `link_base` only for an opaque origin. */
export function shareBase(state, idText) {
  const origin = window.location.origin;
  if (/^https?:\/\//.test(origin)) return origin + apiBase();
  const suffix = `/f/${idText}`;
  const base = typeof state.link_base === "string" ? state.link_base : "";
  if (base.endsWith(suffix)) return base.slice(0, -suffix.length);
  throw new Error("cannot tell this gateway's address to build the share link");
}

