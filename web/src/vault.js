// The vault format (docs/format.md §14) in the page: the password wrap, the purpose keys, the
// sealed tree objects and the chunk files, byte for byte as storage/vault.py makes them
// (web/test/vault.test.mjs checks docs/vault-test-vectors.json). No network here.
//
// argon2id comes from @noble/hashes (as for the login proof, login.js): libsodium-wrappers'
// crypto_pwhash is only in its separate "sumo" build, and noble's argon2id with p = 1 is
// libsodium's crypto_pwhash ALG_ARGON2ID13. Keyed BLAKE2b is libsodium's crypto_generichash.

import { argon2idAsync } from "@noble/hashes/argon2.js";
import {
  ChunkAuthError,
  FILE_ID_BYTES,
  FormatError,
  KEY_BYTES,
  MIN_CHUNK_SIZE,
  NONCE_BYTES,
  TAG_BYTES,
  b64urlDecode,
  b64urlEncode,
  concatBytes,
  ctEqual,
  decodeFileId,
  encodeFileId,
  hkdfSha256,
  ready,
} from "./format.js";

export const VAULT_VERSION = 1;
export const CHUNK_FILE_FORMAT_VERSION = 1;
export const MASTER_KEY_BYTES = 32;
export const CHUNK_MAC_BYTES = 32;
export const CDC_MAX_SIZE = 4 << 20;
// What this page cuts files into (§16.5): a reader never re-cuts, so any cut is valid.
export const WEB_CHUNK_SIZE = 1 << 20;

const enc = new TextEncoder();
const VAULT_SALT = enc.encode("bitcache/v1/vault");
const INFO = {
  tree: enc.encode("bitcache/v1/vault/tree-key"),
  mac: enc.encode("bitcache/v1/vault/chunk-mac-key"),
  locator: enc.encode("bitcache/v1/vault/chunk-locator-key"),
  file: enc.encode("bitcache/v1/vault/chunk-file-key"),
  manifestNonce: enc.encode("bitcache/v1/vault/chunk-manifest-nonce"),
  kek: enc.encode("bitcache/v1/vault/kek/password"),
  commitment: enc.encode("bitcache/v1/vault/kek-commitment/password"),
};
const PASSWORD_PREHASH_KEY = enc.encode("bitcache/v1/vault/password");
const WRAP_AD_PREFIX = enc.encode("bitcache/v1/vault-wrap");
const OBJECT_AD_PREFIX = enc.encode("bitcache/v1/vault-object");
const WRAP_FIELDS = ["account", "ciphertext", "commitment", "kdf", "nonce", "purpose", "version"];
// The readers' bounds on the argon2id cost (storage/vault.py): a gateway may not make a
// device do trivially cheap work, nor ask for more than it can give.
const MIN_OPSLIMIT = 2;
const MAX_OPSLIMIT = 20;
const MIN_MEMLIMIT = 64 << 20;
const MAX_MEMLIMIT = 1 << 30;

export class VaultAuthError extends ChunkAuthError {
  constructor(message) {
    super(message);
    this.name = "VaultAuthError";
  }
}

export class WrongPasswordError extends VaultAuthError {
  constructor(message = "wrong password") {
    super(message);
    this.name = "WrongPasswordError";
  }
}

// --- canonical JSON (§8: sorted keys, no whitespace, raw UTF-8) ---------------------------------

const byCodePoint = (a, b) => {
  const x = [...a];
  const y = [...b];
  for (let i = 0; i < Math.min(x.length, y.length); i++) {
    const d = x[i].codePointAt(0) - y[i].codePointAt(0);
    if (d) return d;
  }
  return x.length - y.length;
};

/** Python's json.dumps(sort_keys=True, separators=(",", ":"), ensure_ascii=False); BigInt
 *  values are written as exact integers (nanosecond times exceed 2^53). */
export function canonicalJson(value) {
  const write = (v) => {
    if (typeof v === "bigint") return v.toString();
    if (typeof v === "number") {
      if (!Number.isSafeInteger(v)) throw new FormatError("canonical JSON holds integers only");
      return String(v);
    }
    if (v === null || typeof v === "boolean" || typeof v === "string") return JSON.stringify(v);
    if (Array.isArray(v)) return `[${v.map(write).join(",")}]`;
    if (typeof v === "object") {
      const keys = Object.keys(v).sort(byCodePoint);
      return `{${keys.map((k) => `${JSON.stringify(k)}:${write(v[k])}`).join(",")}}`;
    }
    throw new FormatError(`cannot encode ${typeof v} as JSON`);
  };
  return enc.encode(write(value));
}

export { byCodePoint };

/**
 * JSON.parse for the vault's objects that keeps every integer exact: one beyond 2^53 (a
 * nanosecond mtime) becomes a BigInt, so an object read and written back (a rename, a delete)
 * carries the same numbers. Numbers with a fraction or exponent are refused (the format has
 * none). Strings are decoded by JSON.parse itself.
 */
export function parseJsonExact(text) {
  let i = 0;
  const fail = (what) => {
    throw new FormatError(`vault JSON: ${what} at ${i}`);
  };
  const ws = () => {
    while (i < text.length && " \t\n\r".includes(text[i])) i++;
  };
  const value = () => {
    ws();
    const c = text[i];
    if (c === "{") {
      i++;
      const out = {};
      ws();
      if (text[i] === "}") return i++, out;
      for (;;) {
        ws();
        if (text[i] !== '"') fail("expected a key");
        const key = string();
        ws();
        if (text[i++] !== ":") fail("expected ':'");
        if (Object.hasOwn(out, key)) fail("a duplicate key");
        out[key] = value();
        ws();
        const d = text[i++];
        if (d === "}") return out;
        if (d !== ",") fail("expected ',' or '}'");
      }
    }
    if (c === "[") {
      i++;
      const out = [];
      ws();
      if (text[i] === "]") return i++, out;
      for (;;) {
        out.push(value());
        ws();
        const d = text[i++];
        if (d === "]") return out;
        if (d !== ",") fail("expected ',' or ']'");
      }
    }
    if (c === '"') return string();
    for (const [word, v] of [["true", true], ["false", false], ["null", null]]) {
      if (text.startsWith(word, i)) return (i += word.length), v;
    }
    const m = /^-?(0|[1-9][0-9]*)/.exec(text.slice(i, i + 32));
    if (!m) fail("unexpected character");
    i += m[0].length;
    if (i < text.length && ".eE".includes(text[i])) fail("numbers must be integers");
    const n = Number(m[0]);
    return Number.isSafeInteger(n) ? n : BigInt(m[0]);
  };
  const string = () => {
    const start = i++;
    while (i < text.length && text[i] !== '"') i += text[i] === "\\" ? 2 : 1;
    if (i >= text.length) fail("an unterminated string");
    i++;
    return JSON.parse(text.slice(start, i));
  };
  const out = value();
  ws();
  if (i !== text.length) fail("trailing data");
  return out;
}

// --- padding (§14.4) ------------------------------------------------------------------------------

/** Padmé: at most ~12 % overhead, O(log log n) bits of the length leak. */
export function padmeLength(length) {
  if (length < 2) return length;
  const e = Math.floor(Math.log2(length));
  const s = Math.floor(Math.log2(e)) + 1;
  const mask = 2 ** (e - s) - 1;
  // length < 2^53 and mask < 2^(e-1): BigInt keeps the bit operations exact.
  return Number((BigInt(length) + BigInt(mask)) & ~BigInt(mask));
}

/** data ‖ 0x80 ‖ 0x00… up to Padmé(len + 1), at least `minimum` bytes. */
export function pad(data, minimum = 0) {
  const out = new Uint8Array(Math.max(minimum, padmeLength(data.length + 1)));
  out.set(data, 0);
  out[data.length] = 0x80;
  return out;
}

export function unpad(padded) {
  let end = padded.length;
  while (end > 0 && padded[end - 1] === 0) end--;
  if (end === 0 || padded[end - 1] !== 0x80) throw new FormatError("bad padding");
  return padded.subarray(0, end - 1);
}

// --- paths (§14.6) --------------------------------------------------------------------------------

export const MAX_PATH_CHARS = 4096;

/** A relative POSIX path of bare names; throws FormatError otherwise (as vault_tree.check_path). */
export function checkPath(path) {
  // Code points, as the reference counts them (not UTF-16 code units).
  if (typeof path !== "string" || path.length < 1 || [...path].length > MAX_PATH_CHARS) {
    throw new FormatError(`path must be 1-${MAX_PATH_CHARS} characters`);
  }
  for (let i = 0; i < path.length; i++) {
    const c = path.charCodeAt(i);
    if (c < 0x20 || c === 0x7f) throw new FormatError("path must not contain control characters or lone surrogates");
    if (c >= 0xd800 && c <= 0xdbff) {
      const d = path.charCodeAt(i + 1);
      if (!(d >= 0xdc00 && d <= 0xdfff)) throw new FormatError("path must not contain control characters or lone surrogates");
      i++;
    } else if (c >= 0xdc00 && c <= 0xdfff) {
      throw new FormatError("path must not contain control characters or lone surrogates");
    }
  }
  for (const part of path.split("/")) {
    if (part === "" || part === "." || part === ".." || part.includes("\\") || enc.encode(part).length > 255) {
      throw new FormatError("path parts must be bare names of at most 255 bytes");
    }
  }
  return path;
}

// --- keys (§14.2, §14.3) --------------------------------------------------------------------------

async function sodium() {
  return await ready;
}

/** The purpose keys of a vault; the master key itself encrypts nothing. */
export async function deriveVaultKeys(master) {
  if (!(master instanceof Uint8Array) || master.length !== MASTER_KEY_BYTES) {
    throw new FormatError(`master key must be ${MASTER_KEY_BYTES} bytes`);
  }
  const [treeKey, chunkMacKey, chunkLocatorKey, chunkFileKey] = await Promise.all([
    hkdfSha256(master, VAULT_SALT, INFO.tree),
    hkdfSha256(master, VAULT_SALT, INFO.mac),
    hkdfSha256(master, VAULT_SALT, INFO.locator),
    hkdfSha256(master, VAULT_SALT, INFO.file),
  ]);
  return { treeKey, chunkMacKey, chunkLocatorKey, chunkFileKey };
}

function checkCost(opslimit, memlimit) {
  if (!Number.isSafeInteger(opslimit) || opslimit < MIN_OPSLIMIT || opslimit > MAX_OPSLIMIT) {
    throw new FormatError(`argon2id opslimit must be an integer in [${MIN_OPSLIMIT}, ${MAX_OPSLIMIT}]`);
  }
  if (!Number.isSafeInteger(memlimit) || memlimit < MIN_MEMLIMIT || memlimit > MAX_MEMLIMIT) {
    throw new FormatError(`argon2id memlimit must be an integer in [${MIN_MEMLIMIT}, ${MAX_MEMLIMIT}]`);
  }
}

/** BLAKE2b-512 keyed with "bitcache/v1/vault/password": the argon2id input (never the bare password). */
export async function passwordPrehash(password) {
  const s = await sodium();
  return s.crypto_generichash(64, enc.encode(password), PASSWORD_PREHASH_KEY);
}

/** The password KEK and its public commitment (argon2id, then HKDF per purpose). */
export async function passwordKek(password, salt, opslimit, memlimit, { onTick } = {}) {
  if (!(salt instanceof Uint8Array) || salt.length !== 16) throw new FormatError("argon2id salt must be 16 bytes");
  checkCost(opslimit, memlimit);
  const prehash = await passwordPrehash(password);
  const stretched = await argon2idAsync(prehash, salt, {
    t: opslimit,
    m: memlimit / 1024, // KiB
    p: 1,
    dkLen: 32,
    asyncTick: 20, // yield to the page every 20 ms so it stays responsive
    onProgress: onTick,
  });
  const [key, commitment] = await Promise.all([hkdfSha256(stretched, salt, INFO.kek), hkdfSha256(stretched, salt, INFO.commitment)]);
  stretched.fill(0);
  return { key, commitment };
}

/** Validates a wrapped key object (as GET /v1/vault/keys/password returns it). */
export function parseWrappedKey(data) {
  if (data === null || typeof data !== "object" || Array.isArray(data)) throw new FormatError("wrapped key must be an object");
  const keys = Object.keys(data).sort();
  if (keys.join(",") !== WRAP_FIELDS.join(",")) throw new FormatError(`wrapped key must have exactly the fields ${WRAP_FIELDS.join(", ")}`);
  if (data.version !== VAULT_VERSION) throw new FormatError(`unsupported vault version ${String(data.version).slice(0, 8)}`);
  if (data.purpose !== "password") throw new FormatError("this page unlocks password wraps only");
  const kdf = data.kdf;
  if (!kdf || typeof kdf !== "object" || Object.keys(kdf).sort().join(",") !== "memlimit,name,opslimit,salt" || kdf.name !== "argon2id") {
    throw new FormatError("a password wrap needs kdf {name: argon2id, opslimit, memlimit, salt}");
  }
  checkCost(kdf.opslimit, kdf.memlimit);
  return {
    raw: data,
    account: String(data.account),
    salt: b64urlDecode(kdf.salt, 16, "argon2id salt"),
    commitment: b64urlDecode(data.commitment, KEY_BYTES, "commitment"),
    nonce: b64urlDecode(data.nonce, NONCE_BYTES, "nonce"),
    ciphertext: b64urlDecode(data.ciphertext, MASTER_KEY_BYTES + TAG_BYTES, "ciphertext"),
  };
}

function wrapAssociatedData(raw) {
  const header = {
    version: raw.version,
    purpose: raw.purpose,
    account: raw.account,
    kdf: raw.kdf,
    commitment: raw.commitment,
  };
  return concatBytes(WRAP_AD_PREFIX, new Uint8Array([0]), canonicalJson(header));
}

export function newMasterKey() {
  const b = new Uint8Array(MASTER_KEY_BYTES);
  crypto.getRandomValues(b);
  return b;
}

// What the CLI writes (storage/vault.py DEFAULT_OPSLIMIT, DEFAULT_MEMLIMIT).
export const DEFAULT_OPSLIMIT = 3;
export const DEFAULT_MEMLIMIT = 128 << 20;

/**
 * The master key wrapped under the password (§14.3), as storage/vault.py wrap_with_password
 * makes it: a fresh random salt and nonce unless given (the vectors give them).
 */
export async function wrapWithPassword(master, password, account, opts = {}) {
  const { opslimit = DEFAULT_OPSLIMIT, memlimit = DEFAULT_MEMLIMIT, onTick } = opts;
  if (!(master instanceof Uint8Array) || master.length !== MASTER_KEY_BYTES) {
    throw new FormatError(`master key must be ${MASTER_KEY_BYTES} bytes`);
  }
  objectAssociatedData(account, "a".repeat(26)); // the account id rule (printable ASCII)
  const s = await sodium();
  const salt = opts.salt ?? s.randombytes_buf(16);
  const nonce = opts.nonce ?? s.randombytes_buf(NONCE_BYTES);
  const kek = await passwordKek(password, salt, opslimit, memlimit, { onTick });
  const raw = {
    version: VAULT_VERSION,
    purpose: "password",
    account,
    kdf: { name: "argon2id", opslimit, memlimit, salt: b64urlEncode(salt) },
    commitment: b64urlEncode(kek.commitment),
  };
  try {
    const ciphertext = s.crypto_aead_xchacha20poly1305_ietf_encrypt(master, wrapAssociatedData(raw), null, nonce, kek.key);
    return { ...raw, nonce: b64urlEncode(nonce), ciphertext: b64urlEncode(ciphertext) };
  } finally {
    kek.key.fill(0);
  }
}

/** The master key, or WrongPasswordError / VaultAuthError (checks in the order of §14.3). */
export async function unwrapWithPassword(wrappedJson, password, account, opts = {}) {
  const w = parseWrappedKey(wrappedJson);
  if (w.account !== account) throw new VaultAuthError("this wrap belongs to another account");
  const kek = await passwordKek(password, w.salt, w.raw.kdf.opslimit, w.raw.kdf.memlimit, opts);
  // The commitment first: the AEAD is not key-committing (partitioning oracles).
  if (!ctEqual(kek.commitment, w.commitment)) throw new WrongPasswordError();
  const s = await sodium();
  try {
    return s.crypto_aead_xchacha20poly1305_ietf_decrypt(null, w.ciphertext, wrapAssociatedData(w.raw), w.nonce, kek.key);
  } catch {
    throw new VaultAuthError("the wrapped key was tampered with");
  } finally {
    kek.key.fill(0);
  }
}

// --- tree objects (§14.6) -------------------------------------------------------------------------

export function newObjectId() {
  const b = new Uint8Array(FILE_ID_BYTES);
  crypto.getRandomValues(b);
  return encodeFileId(b);
}

export function objectAssociatedData(account, objectId) {
  if (typeof account !== "string" || !/^[\x20-\x7e]{1,64}$/.test(account)) {
    throw new FormatError("account id must be 1-64 printable ASCII chars");
  }
  return concatBytes(OBJECT_AD_PREFIX, new Uint8Array([account.length]), enc.encode(account), decodeFileId(objectId));
}

/** nonce(24) ‖ XChaCha20-Poly1305(tree_key, nonce, AD, pad(canonical JSON, 256)). */
export async function sealObject(keys, account, objectId, body, nonce = undefined) {
  const s = await sodium();
  const n = nonce ?? s.randombytes_buf(NONCE_BYTES);
  const ad = objectAssociatedData(account, objectId);
  const padded = pad(canonicalJson(body), 256);
  return concatBytes(n, s.crypto_aead_xchacha20poly1305_ietf_encrypt(padded, ad, null, n, keys.treeKey));
}

/** The JSON inside a sealed object, as text and parsed; VaultAuthError if it is not ours. */
export async function openObject(keys, account, objectId, sealed) {
  const s = await sodium();
  const ad = objectAssociatedData(account, objectId);
  if (sealed.length < NONCE_BYTES + TAG_BYTES) throw new VaultAuthError("vault object too short");
  let padded;
  try {
    padded = s.crypto_aead_xchacha20poly1305_ietf_decrypt(null, sealed.subarray(NONCE_BYTES), ad, sealed.subarray(0, NONCE_BYTES), keys.treeKey);
  } catch {
    throw new VaultAuthError("vault object failed authentication: tampered, moved, or another vault's");
  }
  const text = new TextDecoder("utf-8", { fatal: true }).decode(unpad(padded));
  return parseEntry(parseJsonExact(text));
}

/**
 * A tree entry, checked enough to display and to use its chunks. Objects are authenticated
 * under the tree key, so only this vault's devices wrote them; still nothing is trusted blindly.
 * Times are Numbers for display (nanoseconds lose precision beyond 2^53, display only);
 * `raw` (and each version's `raw`) is the body exactly as read, which is what a rewrite
 * (rename, delete, restore) starts from, so nothing is lost or rounded on the way back.
 */
export function parseEntry(body) {
  if (!body || typeof body !== "object" || Array.isArray(body)) throw new FormatError("vault entry must be an object");
  const { kind, path, counter, deleted = null, versions = [] } = body;
  if (kind !== "file" && kind !== "dir") throw new FormatError("vault entry kind must be file or dir");
  checkPath(path);
  if (!Number.isSafeInteger(counter) || counter < 0) throw new FormatError("vault entry counter must be an integer");
  if (deleted !== null && !Number.isSafeInteger(deleted)) throw new FormatError("vault entry deleted must be an integer or null");
  if (!Array.isArray(versions) || (kind === "dir" && versions.length)) throw new FormatError("vault entry versions are malformed");
  const parsed = versions.map((v) => {
    if (!v || !Number.isSafeInteger(v.n) || !Number.isSafeInteger(v.size) || !Array.isArray(v.chunks)) {
      throw new FormatError("vault version is malformed");
    }
    const chunks = v.chunks.map((c) => {
      if (!Array.isArray(c) || c.length !== 2 || !Number.isSafeInteger(c[1]) || c[1] <= 0 || c[1] > CDC_MAX_SIZE) {
        throw new FormatError("a chunk is [mac, length] with 0 < length <= 4 MiB");
      }
      return { mac: b64urlDecode(c[0], CHUNK_MAC_BYTES, "chunk mac"), length: c[1] };
    });
    if (chunks.reduce((n, c) => n + c.length, 0) !== v.size) throw new FormatError("a version's chunks do not add up to its size");
    return { n: v.n, size: v.size, mtimeMs: Number(v.mtime_ns) / 1e6, time: Number(v.time), device: String(v.device), chunks, raw: v };
  });
  // The body as read (a field a newer writer adds survives a rewrite by this page).
  const raw = { ...body, deleted, versions };
  return { kind, path, counter, deleted, versions: parsed, current: parsed.length ? parsed[parsed.length - 1] : null, raw };
}

// --- chunks (§14.5) -------------------------------------------------------------------------------

export async function chunkMac(keys, data) {
  const s = await sodium();
  return s.crypto_generichash(CHUNK_MAC_BYTES, data, keys.chunkMacKey);
}

/** The public file id and secret key of the chunk file holding the chunk with this MAC. */
export async function chunkFile(keys, mac) {
  const s = await sodium();
  if (!(mac instanceof Uint8Array) || mac.length !== CHUNK_MAC_BYTES) throw new FormatError("chunk mac must be 32 bytes");
  return {
    fileId: s.crypto_generichash(FILE_ID_BYTES, mac, keys.chunkLocatorKey),
    key: s.crypto_generichash(KEY_BYTES, mac, keys.chunkFileKey),
  };
}

/** The chunk file's plaintext: the chunk, padded (Padmé, at least 4 KiB). */
export function chunkFilePlaintext(data) {
  return pad(data, MIN_CHUNK_SIZE);
}

/** Size of the padded chunk file of a chunk of `length` bytes. */
export function chunkFileSize(length) {
  return Math.max(MIN_CHUNK_SIZE, padmeLength(length + 1));
}

/** Deterministic manifest nonce: re-creating a chunk file gives identical bytes. */
export async function chunkManifestNonce(cf) {
  return await hkdfSha256(cf.key, cf.fileId, INFO.manifestNonce, NONCE_BYTES);
}

/** The fixed manifest of every chunk file: nothing about the chunk but its padded size. */
export function chunkManifest(paddedSize) {
  return {
    chunk_size: Math.max(MIN_CHUNK_SIZE, paddedSize),
    media_type: "application/octet-stream",
    modified: null,
    name: "chunk",
    size: paddedSize,
  };
}

/** The chunk from its opened chunk file, checked against the vault's MAC and length. */
export async function openChunkPlaintext(keys, ref, padded) {
  let data;
  try {
    data = unpad(padded);
  } catch {
    throw new ChunkAuthError("vault chunk has bad padding");
  }
  if (data.length !== ref.length || !ctEqual(await chunkMac(keys, data), ref.mac)) {
    throw new ChunkAuthError("vault chunk does not match its MAC");
  }
  return data;
}

export { b64urlEncode };
