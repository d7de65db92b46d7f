// The browser's login proof is libsodium's crypto_pwhash (argon2id13), as the CLI derives it.
import { test } from "node:test";
import assert from "node:assert/strict";
import { deriveProof } from "../src/login.js";

const KDF = { name: "argon2id", opslimit: 3, memlimit: 64 << 20 };
const SALT = Uint8Array.from({ length: 16 }, (_, i) => i);

test("proof matches PyNaCl's argon2id kdf", async () => {
  // python -c "import nacl.pwhash.argon2id as a; print(a.kdf(32, 'pässword'.encode(),
  //            bytes(range(16)), 3, 64 << 20).hex())"
  assert.equal(
    await deriveProof("pässword", SALT, KDF),
    "720d606917ff45ff09599a78d07610f9ec6e37bd2838d6a65a049be606fc752d",
  );
});

test("a cost out of bounds is refused", async () => {
  await assert.rejects(deriveProof("x", SALT, { ...KDF, memlimit: 1 << 20 }), /out of bounds/);
  await assert.rejects(deriveProof("x", SALT, { ...KDF, opslimit: 1 }), /out of bounds/);
  await assert.rejects(deriveProof("x", SALT, { ...KDF, name: "scrypt" }), /does not know/);
});
