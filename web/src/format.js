// Bitcache encryption format, versions 1 and 2 (docs/format.md), for the browser and Node >= 20.
// Opens both (they differ only in the writer's nonce hash); writes v1 unless told otherwise.
//
// Everything secret stays in this process: keys, subkeys and plaintext never leave the page.
// Primitives: libsodium-wrappers (XChaCha20-Poly1305-IETF, keyed BLAKE2b-192 for v1),
// @noble/hashes (keyed BLAKE3 for v2) and WebCrypto HKDF-SHA256. Checked byte for byte against
// docs/test-vectors.json by test/vectors.test.mjs.
//
// Call `await ready` once before the synchronous functions (sealChunk, openChunk, ...).

import { blake3 } from "@noble/hashes/blake3.js";
import sodium from "libsodium-wrappers";

// --- constants (§3) ---------------------------------------------------------------------------

/**
 * What this writer produces unless asked for another version; readers accept every version in
 * READABLE_VERSIONS. v1, not v2, here: v1's keyed BLAKE2b runs in libsodium's WebAssembly, and
 * sealing a 1 MiB chunk in Node 20 measured ~210 MiB/s with it against ~45 MiB/s with BLAKE3
 * from @noble/hashes (pure JS) and no faster with hash-wasm's BLAKE3 (docs/format.md §15).
 */
export const FORMAT_VERSION = 1;
export const READABLE_VERSIONS = Object.freeze([1, 2]);
export const KEY_BYTES = 32;
export const FILE_ID_BYTES = 16;
export const NONCE_BYTES = 24;
export const TAG_BYTES = 16;
export const CHUNK_OVERHEAD = NONCE_BYTES + TAG_BYTES;
export const DEFAULT_CHUNK_SIZE = 1 << 20;
export const MIN_CHUNK_SIZE = 4096;
export const MAX_CHUNK_SIZE = 16 << 20;
export const MAX_PLAINTEXT_SIZE = Number.MAX_SAFE_INTEGER; // 2^53 - 1
const MAX_INDEX = (1n << 64n) - 1n;

const encoder = new TextEncoder();
const ascii = (s) => encoder.encode(s);

const CHUNK_AD_PREFIX = ascii("bitcache/v1/chunk");
const MANIFEST_AD_PREFIX = ascii("bitcache/v1/manifest");
const INFO_CHUNK_KEY = ascii("bitcache/v1/chunk-key");
const INFO_NONCE_KEY = ascii("bitcache/v1/nonce-key");
const INFO_NONCE_KEY_V2 = ascii("bitcache/v2/nonce-key");
const INFO_MANIFEST_KEY = ascii("bitcache/v1/manifest-key");
const INFO_KEY_COMMITMENT = ascii("bitcache/v1/key-commitment");

/** Resolves (to the sodium object) once libsodium's WebAssembly is loaded. */
export const ready = sodium.ready.then(() => sodium);

// --- errors -----------------------------------------------------------------------------------

/** Malformed input: bad encoding, header, manifest, link or sizes. */
export class FormatError extends Error {
  constructor(message) {
    super(message);
    this.name = "FormatError";
  }
}

/** A sealed chunk or manifest failed authentication; its plaintext is discarded. */
export class ChunkAuthError extends Error {
  constructor(message) {
    super(message);
    this.name = "ChunkAuthError";
  }
}

/** The key does not match the file's key commitment (§5.3). */
export class WrongKeyError extends Error {
  constructor(message = "the key does not match this file (key commitment mismatch)") {
    super(message);
    this.name = "WrongKeyError";
  }
}

// --- small helpers ----------------------------------------------------------------------------

export function concatBytes(...parts) {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let offset = 0;
  for (const p of parts) {
    out.set(p, offset);
    offset += p.length;
  }
  return out;
}

function requireBytes(value, length, what) {
  if (!(value instanceof Uint8Array)) {
    throw new FormatError(`${what} must be ${length} bytes (Uint8Array)`);
  }
  if (value.length !== length) {
    throw new FormatError(`${what} must be ${length} bytes, got ${value.length} bytes`);
  }
  return value;
}

function isInt(value) {
  return typeof value === "number" && Number.isSafeInteger(value);
}

function requireVersion(version) {
  if (!isInt(version)) throw new FormatError("format version must be an integer");
  if (!READABLE_VERSIONS.includes(version)) {
    throw new FormatError(
      `unsupported format version ${version}; this reader supports ${READABLE_VERSIONS.join(" and ")}`,
    );
  }
  return version;
}

function requireInt(value, low, high, what) {
  if (!isInt(value)) throw new FormatError(`${what} must be an integer`);
  if (value < low || value > high) {
    throw new FormatError(`${what} must be in [${low}, ${high}], got ${value}`);
  }
  return value;
}

/** Constant-time equality (lengths are not secret). */
export function ctEqual(a, b) {
  if (a.length !== b.length) return false;
  if (a.length === 0) return true;
  return sodium.memcmp(a, b);
}

export function toHex(bytes) {
  let s = "";
  for (const b of bytes) s += b.toString(16).padStart(2, "0");
  return s;
}

export function fromHex(text) {
  if (typeof text !== "string" || text.length % 2 !== 0 || !/^[0-9a-f]*$/.test(text)) {
    throw new FormatError("hex must be an even number of lowercase hex digits");
  }
  const out = new Uint8Array(text.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(text.slice(2 * i, 2 * i + 2), 16);
  return out;
}

// --- base64url (RFC 4648 §5, no padding) ------------------------------------------------------

const B64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
const B64URL_RE = /^[A-Za-z0-9_-]*$/;

export function b64urlEncode(bytes) {
  let out = "";
  let i = 0;
  for (; i + 3 <= bytes.length; i += 3) {
    const n = (bytes[i] << 16) | (bytes[i + 1] << 8) | bytes[i + 2];
    out += B64URL[n >> 18] + B64URL[(n >> 12) & 63] + B64URL[(n >> 6) & 63] + B64URL[n & 63];
  }
  const rest = bytes.length - i;
  if (rest === 1) {
    const n = bytes[i] << 16;
    out += B64URL[n >> 18] + B64URL[(n >> 12) & 63];
  } else if (rest === 2) {
    const n = (bytes[i] << 16) | (bytes[i + 1] << 8);
    out += B64URL[n >> 18] + B64URL[(n >> 12) & 63] + B64URL[(n >> 6) & 63];
  }
  return out;
}

/**
 * Strictly decode unpadded base64url. With `length`, the text must decode to exactly that many
 * bytes. Rejects padding, other alphabets, impossible lengths and non-zero trailing bits.
 */
export function b64urlDecode(text, length = undefined, what = "base64url value") {
  if (typeof text !== "string" || !B64URL_RE.test(text) || text.length % 4 === 1) {
    throw new FormatError(`${what} must be base64url characters without padding`);
  }
  const out = new Uint8Array(Math.floor((text.length * 3) / 4));
  let bits = 0;
  let acc = 0;
  let o = 0;
  for (const ch of text) {
    acc = (acc << 6) | B64URL.indexOf(ch);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out[o++] = (acc >> bits) & 0xff;
    }
    acc &= (1 << bits) - 1;
  }
  if (length !== undefined && out.length !== length) {
    const chars = Math.ceil((length * 4) / 3);
    throw new FormatError(`${what} must be ${chars} base64url characters without padding`);
  }
  // Non-zero trailing bits would give one value several spellings.
  if (b64urlEncode(out) !== text) {
    throw new FormatError(`${what} is not canonical base64url (non-zero trailing bits)`);
  }
  return out;
}

// --- base32 file ids (RFC 4648 §6, lowercase, no padding) -------------------------------------

const B32 = "abcdefghijklmnopqrstuvwxyz234567";
const B32_ID_RE = /^[a-z2-7]{26}$/;

export function base32Encode(bytes) {
  let out = "";
  let acc = 0;
  let bits = 0;
  for (const b of bytes) {
    acc = ((acc << 8) | b) & 0xffff;
    bits += 8;
    while (bits >= 5) {
      bits -= 5;
      out += B32[(acc >> bits) & 31];
    }
  }
  if (bits > 0) out += B32[(acc << (5 - bits)) & 31];
  return out;
}

export function encodeFileId(fileId) {
  return base32Encode(requireBytes(fileId, FILE_ID_BYTES, "file id"));
}

export function decodeFileId(text) {
  if (typeof text !== "string" || !B32_ID_RE.test(text)) {
    throw new FormatError("file id must be 26 lowercase base32 characters (a-z, 2-7)");
  }
  const out = new Uint8Array(FILE_ID_BYTES);
  let acc = 0;
  let bits = 0;
  let o = 0;
  for (const ch of text) {
    acc = ((acc << 5) | B32.indexOf(ch)) & 0xffff;
    bits += 5;
    if (bits >= 8) {
      bits -= 8;
      out[o++] = (acc >> bits) & 0xff;
    }
  }
  if (encodeFileId(out) !== text) {
    throw new FormatError("file id is not canonical base32 (non-zero trailing bits)");
  }
  return out;
}

export function encodeKey(key) {
  return b64urlEncode(requireBytes(key, KEY_BYTES, "file key"));
}

export function decodeKey(text) {
  return b64urlDecode(text, KEY_BYTES, "file key");
}

function randomBytes(n) {
  const out = new Uint8Array(n);
  globalThis.crypto.getRandomValues(out);
  return out;
}

/** A fresh random 32-byte file key. */
export function newFileKey() {
  return randomBytes(KEY_BYTES);
}

/** A fresh random 16-byte file id. */
export function newFileId() {
  return randomBytes(FILE_ID_BYTES);
}

// --- keys (§5) --------------------------------------------------------------------------------

/** HKDF-SHA256 (RFC 5869) through WebCrypto. */
export async function hkdfSha256(ikm, salt, info, length = 32) {
  if (!(length > 0 && length <= 255 * 32)) {
    throw new RangeError("HKDF-SHA256 output length must be in [1, 8160]");
  }
  const subtle = globalThis.crypto?.subtle;
  if (!subtle) {
    throw new Error("WebCrypto is unavailable (the page must be served over https or localhost)");
  }
  const base = await subtle.importKey("raw", ikm, "HKDF", false, ["deriveBits"]);
  const bits = await subtle.deriveBits({ name: "HKDF", hash: "SHA-256", salt, info }, base, 8 * length);
  return new Uint8Array(bits);
}

/** The four subkeys of file `fileId` (§5.2). Only `commitment` is public. */
export async function deriveKeys(key, fileId, version = FORMAT_VERSION) {
  requireBytes(key, KEY_BYTES, "file key");
  requireBytes(fileId, FILE_ID_BYTES, "file id");
  requireVersion(version);
  await ready;
  // Only the nonce key depends on the version: one key is never used with two hashes.
  const [chunkKey, nonceKey, manifestKey, commitment] = await Promise.all([
    hkdfSha256(key, fileId, INFO_CHUNK_KEY),
    hkdfSha256(key, fileId, version === 1 ? INFO_NONCE_KEY : INFO_NONCE_KEY_V2),
    hkdfSha256(key, fileId, INFO_MANIFEST_KEY),
    hkdfSha256(key, fileId, INFO_KEY_COMMITMENT),
  ]);
  return { chunkKey, nonceKey, manifestKey, commitment, version };
}

/** Throws WrongKeyError unless `keys` match the header's commitment (constant time). */
export function checkKey(keys, expectedCommitment) {
  if (!ctEqual(keys.commitment, expectedCommitment)) throw new WrongKeyError();
}

// --- chunk geometry (§6.1) --------------------------------------------------------------------

function checkSizes(plaintextSize, chunkSize) {
  requireInt(chunkSize, MIN_CHUNK_SIZE, MAX_CHUNK_SIZE, "chunk_size");
  requireInt(plaintextSize, 0, MAX_PLAINTEXT_SIZE, "plaintext_size");
}

/** Number of chunks; an empty file is one empty chunk. */
export function chunkCount(plaintextSize, chunkSize) {
  checkSizes(plaintextSize, chunkSize);
  const rest = plaintextSize % chunkSize; // exact for safe integers
  const full = (plaintextSize - rest) / chunkSize; // exact: a multiple of chunkSize
  return Math.max(1, full + (rest > 0 ? 1 : 0));
}

export function plaintextChunkSize(index, plaintextSize, chunkSize) {
  const count = chunkCount(plaintextSize, chunkSize);
  if (!isInt(index) || index < 0 || index >= count) {
    throw new FormatError(`chunk index ${index} out of range for a file of ${count} chunks`);
  }
  return index < count - 1 ? chunkSize : plaintextSize - (count - 1) * chunkSize;
}

export function sealedChunkSize(index, plaintextSize, chunkSize) {
  return plaintextChunkSize(index, plaintextSize, chunkSize) + CHUNK_OVERHEAD;
}

// --- chunks (§6) ------------------------------------------------------------------------------

/** AD = "bitcache/v1/chunk" ‖ F ‖ uint64_be(index) ‖ uint8(last): 42 bytes. */
export function chunkAssociatedData(fileId, index, last) {
  requireBytes(fileId, FILE_ID_BYTES, "file id");
  let big;
  if (typeof index === "bigint") big = index;
  else if (isInt(index)) big = BigInt(index);
  else throw new FormatError("chunk index must be an integer");
  if (big < 0n || big > MAX_INDEX) throw new FormatError("chunk index out of range");
  const ad = new Uint8Array(42);
  ad.set(CHUNK_AD_PREFIX, 0);
  ad.set(fileId, 17);
  new DataView(ad.buffer).setBigUint64(33, big, false);
  ad[41] = last ? 1 : 0;
  return ad;
}

/**
 * The writer's nonce (§6.3): keyed hash of AD ‖ plaintext, BLAKE2b-192 in v1, BLAKE3 (first 24
 * output bytes) in v2. AD has a fixed length, so AD ‖ plaintext is unambiguous; streamed to
 * avoid a copy.
 */
export function syntheticNonce(keys, ad, plaintext) {
  if (requireVersion(keys.version) === 1) {
    const state = sodium.crypto_generichash_init(keys.nonceKey, NONCE_BYTES);
    sodium.crypto_generichash_update(state, ad);
    sodium.crypto_generichash_update(state, plaintext);
    return sodium.crypto_generichash_final(state, NONCE_BYTES);
  }
  return blake3.create({ key: keys.nonceKey, dkLen: NONCE_BYTES }).update(ad).update(plaintext).digest();
}

/** nonce(24) ‖ XChaCha20-Poly1305(chunk_key, nonce, AD, plaintext). Deterministic. */
export function sealChunk(keys, fileId, index, last, plaintext) {
  const ad = chunkAssociatedData(fileId, index, last);
  const nonce = syntheticNonce(keys, ad, plaintext);
  const body = sodium.crypto_aead_xchacha20poly1305_ietf_encrypt(plaintext, ad, null, nonce, keys.chunkKey);
  return concatBytes(nonce, body);
}

/**
 * Opens one sealed chunk of either version; ChunkAuthError if it is not chunk `index` (with
 * `last`) of this file. The nonce is not recomputed (§6.4): the tag authenticates it under
 * chunkKey, which only holders of the file key have.
 */
export function openChunk(keys, fileId, index, last, sealed) {
  const ad = chunkAssociatedData(fileId, index, last);
  const where = `chunk ${index}${last ? " (last)" : ""}`;
  if (!(sealed instanceof Uint8Array) || sealed.length < CHUNK_OVERHEAD) {
    throw new ChunkAuthError(`${where}: shorter than the ${CHUNK_OVERHEAD}-byte minimum`);
  }
  const nonce = sealed.subarray(0, NONCE_BYTES);
  let plaintext;
  try {
    plaintext = sodium.crypto_aead_xchacha20poly1305_ietf_decrypt(
      null,
      sealed.subarray(NONCE_BYTES),
      ad,
      nonce,
      keys.chunkKey,
    );
  } catch {
    throw new ChunkAuthError(
      `${where} failed authentication: tampered, from another position or file, or the file was truncated`,
    );
  }
  return plaintext;
}

// --- header (§7) ------------------------------------------------------------------------------

const HEADER_FIELDS = ["version", "file_id", "chunk_size", "plaintext_size", "commitment"];

/** The header object, in the reference implementation's field order. */
export function headerToJson(header) {
  return {
    version: header.version,
    file_id: encodeFileId(header.fileId),
    chunk_size: header.chunkSize,
    plaintext_size: header.plaintextSize,
    commitment: b64urlEncode(header.commitment),
  };
}

function validateHeader(h) {
  requireVersion(h.version);
  requireBytes(h.fileId, FILE_ID_BYTES, "file id");
  checkSizes(h.plaintextSize, h.chunkSize);
  requireBytes(h.commitment, KEY_BYTES, "key commitment");
  return Object.freeze({ ...h, chunkCount: chunkCount(h.plaintextSize, h.chunkSize) });
}

export function makeHeader({ fileId, chunkSize, plaintextSize, commitment, version = FORMAT_VERSION }) {
  return validateHeader({ version, fileId, chunkSize, plaintextSize, commitment });
}

/** Parse and validate a header object (e.g. from GET /v1/files/<id>); FormatError otherwise. */
export function parseHeader(data) {
  if (data === null || typeof data !== "object" || Array.isArray(data)) {
    throw new FormatError("file header must be a JSON object");
  }
  const keys = Object.keys(data);
  const missing = HEADER_FIELDS.filter((k) => !Object.hasOwn(data, k));
  const unknown = keys.filter((k) => !HEADER_FIELDS.includes(k));
  if (missing.length) throw new FormatError(`file header is missing field(s): ${missing.join(", ")}`);
  if (unknown.length) throw new FormatError(`file header has unknown field(s): ${unknown.sort().join(", ")}`);
  if (!isInt(data.version)) throw new FormatError("file header version must be an integer");
  return validateHeader({
    version: requireVersion(data.version),
    fileId: decodeFileId(data.file_id),
    chunkSize: data.chunk_size,
    plaintextSize: data.plaintext_size,
    commitment: b64urlDecode(data.commitment, KEY_BYTES, "key commitment"),
  });
}

/**
 * JSON.parse that refuses number literals with a fraction or exponent (`4096.0`, `1e3`): the
 * format only has integers, and the reference implementation rejects floats for them.
 */
export function parseJsonIntegersOnly(text) {
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (inString) {
      if (c === "\\") i++;
      else if (c === '"') inString = false;
    } else if (c === '"') {
      inString = true;
    } else if (c === "." || c === "e" || c === "E") {
      // Outside strings these only occur in numbers (after a digit) or in true/false.
      if (i > 0 && /[0-9]/.test(text[i - 1])) throw new FormatError("JSON numbers must be integers");
    }
  }
  return JSON.parse(text);
}

// --- whole-file helpers -----------------------------------------------------------------------

/** Seals the chunks of one file, checking each chunk has the length its index requires. */
export class FileEncryptor {
  /** Use `await FileEncryptor.create(key, fileId, plaintextSize, chunkSize)`. */
  constructor(keys, header) {
    this.keys = keys;
    this.header = header;
  }

  static async create(key, fileId, plaintextSize, chunkSize = DEFAULT_CHUNK_SIZE, version = FORMAT_VERSION) {
    const keys = await deriveKeys(key, fileId, version);
    const header = makeHeader({ fileId, chunkSize, plaintextSize, commitment: keys.commitment, version });
    return new FileEncryptor(keys, header);
  }

  get chunkCount() {
    return this.header.chunkCount;
  }

  headerJson() {
    return headerToJson(this.header);
  }

  /** Plaintext byte range [start, end) of chunk `index`. */
  chunkRange(index) {
    const h = this.header;
    const len = plaintextChunkSize(index, h.plaintextSize, h.chunkSize);
    return [index * h.chunkSize, index * h.chunkSize + len];
  }

  seal(index, plaintext) {
    const h = this.header;
    const expected = plaintextChunkSize(index, h.plaintextSize, h.chunkSize);
    if (plaintext.length !== expected) {
      throw new FormatError(`chunk ${index} must be ${expected} bytes, got ${plaintext.length}`);
    }
    return sealChunk(this.keys, h.fileId, index, index === h.chunkCount - 1, plaintext);
  }

  sealManifest(manifest, nonce = undefined) {
    return sealManifest(this.keys, this.header.fileId, manifest, nonce);
  }
}

/** Opens the chunks of one file; rejects a wrong key before any chunk is fetched. */
export class FileDecryptor {
  constructor(keys, header) {
    checkKey(keys, header.commitment);
    this.keys = keys;
    this.header = header;
  }

  /** `header` is a parsed header (parseHeader) or a header JSON object. WrongKeyError on mismatch. */
  static async create(key, header) {
    const h = header && header.fileId instanceof Uint8Array ? header : parseHeader(header);
    return new FileDecryptor(await deriveKeys(key, h.fileId, h.version), h);
  }

  get chunkCount() {
    return this.header.chunkCount;
  }

  sealedSize(index) {
    return sealedChunkSize(index, this.header.plaintextSize, this.header.chunkSize);
  }

  open(index, sealed) {
    const h = this.header;
    const expected = this.sealedSize(index);
    if (sealed.length !== expected) {
      throw new ChunkAuthError(
        `chunk ${index}: expected ${expected} sealed bytes, got ${sealed.length} ` +
          "(truncated, spliced or the header's sizes are wrong)",
      );
    }
    return openChunk(this.keys, h.fileId, index, index === h.chunkCount - 1, sealed);
  }

  openManifest(sealed) {
    const m = openManifest(this.keys, this.header.fileId, sealed);
    if (m.size !== this.header.plaintextSize || m.chunk_size !== this.header.chunkSize) {
      throw new FormatError("the file header's sizes do not match the encrypted manifest");
    }
    return m;
  }
}

// --- manifest (§8) ----------------------------------------------------------------------------

const MANIFEST_FIELDS = ["chunk_size", "media_type", "modified", "name", "size"];

function badChars(text) {
  for (const ch of text) {
    const cp = ch.codePointAt(0);
    if (cp < 0x20 || cp === 0x7f || (cp >= 0xd800 && cp <= 0xdfff)) return true;
  }
  return false;
}

function codePoints(text) {
  let n = 0;
  for (const _ of text) n++;
  return n;
}

/** Validates a manifest object and returns a frozen copy with the canonical key order. */
export function validateManifest(m) {
  if (m === null || typeof m !== "object" || Array.isArray(m)) {
    throw new FormatError("manifest must be a JSON object");
  }
  const unknown = Object.keys(m).filter((k) => !MANIFEST_FIELDS.includes(k));
  if (unknown.length) throw new FormatError(`manifest has unknown field(s): ${unknown.sort().join(", ")}`);
  for (const k of ["name", "size", "chunk_size"]) {
    if (!Object.hasOwn(m, k)) throw new FormatError(`manifest is missing field: ${k}`);
  }
  const { name, size, chunk_size } = m;
  const media_type = Object.hasOwn(m, "media_type") ? m.media_type : "application/octet-stream";
  const modified = Object.hasOwn(m, "modified") ? m.modified : null;
  if (typeof name !== "string") throw new FormatError("manifest name must be a string");
  const nameLen = codePoints(name);
  if (nameLen < 1 || nameLen > 255) throw new FormatError("manifest name must be 1 to 255 characters");
  if (name === "." || name === ".." || name.includes("/") || name.includes("\\") || badChars(name)) {
    throw new FormatError(
      "manifest name must be a bare file name: no '/', '\\', NUL, control characters or lone surrogates, and not '.' or '..'",
    );
  }
  requireInt(size, 0, MAX_PLAINTEXT_SIZE, "manifest size");
  if (typeof media_type !== "string") throw new FormatError("manifest media_type must be a string");
  const mtLen = codePoints(media_type);
  if (mtLen < 1 || mtLen > 255 || badChars(media_type)) {
    throw new FormatError("manifest media_type must be 1 to 255 characters without control characters");
  }
  requireInt(chunk_size, MIN_CHUNK_SIZE, MAX_CHUNK_SIZE, "manifest chunk_size");
  if (modified !== null) requireInt(modified, -MAX_PLAINTEXT_SIZE, MAX_PLAINTEXT_SIZE, "manifest modified");
  return Object.freeze({ chunk_size, media_type, modified, name, size });
}

/** Canonical manifest bytes: compact UTF-8 JSON, keys sorted, every field present. */
export function manifestToJson(manifest) {
  const m = validateManifest(manifest);
  return encoder.encode(
    JSON.stringify({
      chunk_size: m.chunk_size,
      media_type: m.media_type,
      modified: m.modified,
      name: m.name,
      size: m.size,
    }),
  );
}

/** AD_m = "bitcache/v1/manifest" ‖ F (36 bytes). */
export function manifestAssociatedData(fileId) {
  return concatBytes(MANIFEST_AD_PREFIX, requireBytes(fileId, FILE_ID_BYTES, "file id"));
}

/** nonce(24) ‖ XChaCha20-Poly1305(manifest_key, nonce, AD_m, JSON). Random nonce by default. */
export function sealManifest(keys, fileId, manifest, nonce = undefined) {
  const n = nonce === undefined ? sodium.randombytes_buf(NONCE_BYTES) : requireBytes(nonce, NONCE_BYTES, "manifest nonce");
  const ad = manifestAssociatedData(fileId);
  const body = sodium.crypto_aead_xchacha20poly1305_ietf_encrypt(manifestToJson(manifest), ad, null, n, keys.manifestKey);
  return concatBytes(n, body);
}

/** Decrypts and validates a sealed manifest (bytes, or its base64url text). */
export function openManifest(keys, fileId, sealed) {
  const data = typeof sealed === "string" ? b64urlDecode(sealed, undefined, "manifest") : sealed;
  const ad = manifestAssociatedData(fileId);
  if (data.length < NONCE_BYTES + TAG_BYTES) {
    throw new ChunkAuthError(`manifest: shorter than the ${NONCE_BYTES + TAG_BYTES}-byte minimum`);
  }
  let plaintext;
  try {
    plaintext = sodium.crypto_aead_xchacha20poly1305_ietf_decrypt(
      null,
      data.subarray(NONCE_BYTES),
      ad,
      data.subarray(0, NONCE_BYTES),
      keys.manifestKey,
    );
  } catch {
    throw new ChunkAuthError("manifest failed authentication: tampered, wrong key, or another file's manifest");
  }
  let text;
  try {
    text = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true }).decode(plaintext);
  } catch {
    throw new FormatError("manifest is not valid UTF-8");
  }
  let obj;
  try {
    obj = parseJsonIntegersOnly(text);
  } catch (e) {
    throw new FormatError(`manifest is not valid JSON: ${e.message}`);
  }
  return validateManifest(obj);
}

// --- share links (§9) -------------------------------------------------------------------------

const LINK_SHAPE = "<gateway>/f/<file-id>#<key>";

export function checkGateway(gateway) {
  if (typeof gateway !== "string" || !(gateway.startsWith("http://") || gateway.startsWith("https://"))) {
    throw new FormatError("gateway must start with http:// or https://");
  }
  for (const ch of gateway) {
    const cp = ch.codePointAt(0);
    if (/\s/u.test(ch) || cp < 0x20 || cp === 0x7f || (cp >= 0x80 && cp <= 0x9f)) {
      throw new FormatError("gateway must not contain whitespace or control characters");
    }
  }
  if (gateway.includes("?") || gateway.includes("#")) {
    throw new FormatError("gateway must not contain a query ('?') or fragment ('#')");
  }
  if (gateway.endsWith("/")) throw new FormatError("gateway must not end with '/'");
  let host;
  try {
    host = new URL(gateway).hostname;
  } catch {
    throw new FormatError("gateway is not a valid URL");
  }
  if (!host) throw new FormatError("gateway has no host");
}

/** `<gateway>/f/<file id>#<key>`: the key only ever in the fragment. */
export function buildShareLink(gateway, fileId, key) {
  checkGateway(gateway);
  return `${gateway}/f/${encodeFileId(fileId)}#${encodeKey(key)}`;
}

/** Parses a share link; FormatError says what is wrong (never echoing the key). */
export function parseShareLink(url) {
  if (typeof url !== "string") throw new FormatError("share link must be a string");
  const trimmed = url.trim();
  const hash = trimmed.indexOf("#");
  const fragment = hash < 0 ? "" : trimmed.slice(hash + 1);
  if (hash < 0 || !fragment) {
    throw new FormatError(
      `share link has no '#<key>' fragment (expected ${LINK_SHAPE}); the key travels only in the fragment, so the link was probably cut off when copied`,
    );
  }
  const base = trimmed.slice(0, hash);
  const marker = base.lastIndexOf("/f/");
  if (marker < 0) throw new FormatError(`share link has no '/f/' path (expected ${LINK_SHAPE})`);
  const gateway = base.slice(0, marker);
  let fileId;
  let key;
  try {
    fileId = decodeFileId(base.slice(marker + 3));
  } catch (e) {
    throw new FormatError(`share link has a bad file id: ${e.message}`);
  }
  try {
    key = decodeKey(fragment);
  } catch (e) {
    throw new FormatError(`share link has a bad key: ${e.message}`);
  }
  try {
    checkGateway(gateway);
  } catch (e) {
    throw new FormatError(`share link has a bad gateway: ${e.message}`);
  }
  return { gateway, fileId, key };
}
