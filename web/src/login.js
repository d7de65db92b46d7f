// Logging in with a username and password (docs/api.md "Login"), in the browser.
//
// proof = argon2id(password, salt) over the bare password, at the cost the gateway names,
// computed here with @noble/hashes (pure JS, already a dependency): libsodium-wrappers'
// crypto_pwhash is only in the separate "sumo" build, and noble's argon2id with p = 1 is the
// same function as libsodium's crypto_pwhash ALG_ARGON2ID13 (test/login.test.mjs checks a
// vector made with PyNaCl). The password leaves the browser once only: at the first login
// of an account restored from the old service, to be checked against its old hash.

import { argon2idAsync } from "@noble/hashes/argon2.js";
import { ApiError, callJson } from "./api.js";

// The vault's bounds (storage/vault.py): a gateway may not make a device do trivially cheap
// work, nor ask for more than it can give.
const MIN_OPSLIMIT = 2;
const MAX_OPSLIMIT = 20;
const MIN_MEMLIMIT = 64 << 20;
const MAX_MEMLIMIT = 1 << 30;

const hex = (bytes) => Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");

function fromHex(text) {
  if (!/^([0-9a-f]{2})+$/i.test(text)) throw new Error("the gateway's login salt is not hex");
  return Uint8Array.from(text.match(/../g), (b) => parseInt(b, 16));
}

/** argon2id(password, salt) as hex, refusing a cost outside the vault's bounds. */
export async function deriveProof(password, salt, kdf) {
  const { name, opslimit, memlimit } = kdf ?? {};
  if (name !== "argon2id" || !Number.isInteger(opslimit) || !Number.isInteger(memlimit)) {
    throw new Error("the gateway named a login key derivation this page does not know");
  }
  if (opslimit < MIN_OPSLIMIT || opslimit > MAX_OPSLIMIT || memlimit < MIN_MEMLIMIT || memlimit > MAX_MEMLIMIT) {
    throw new Error("the gateway asked for a login key derivation cost out of bounds");
  }
  if (salt.length !== 16) throw new Error("the gateway's login salt is not 16 bytes");
  const out = await argon2idAsync(new TextEncoder().encode(password), salt, {
    t: opslimit,
    m: memlimit / 1024, // KiB
    p: 1,
    dkLen: 32,
    asyncTick: 20, // yield to the page every 20 ms so it stays responsive
  });
  return hex(out);
}

/** A new API key for `username` (not yet stored). Throws ApiError 401 on a wrong password. */
export async function login(username, password) {
  const answer = await callJson("/v1/login/salt", { method: "POST", json: { username }, retries: 1 });
  const proof = await deriveProof(password, fromHex(String(answer.salt)), answer.kdf);
  try {
    return await callJson("/v1/login", { method: "POST", json: { username, proof }, ok: [200], retries: 0 });
  } catch (err) {
    if (!(err instanceof ApiError) || err.status !== 401) throw err;
  }
  // Refused: perhaps an account restored from the old service, whose first login must
  // check the password against its old hash (and replaces that hash with this proof).
  return await callJson("/v1/login", { method: "POST", json: { username, proof, password }, ok: [200], retries: 0 });
}
