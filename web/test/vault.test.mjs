// The vault in the page (web/src/vault.js) against docs/vault-test-vectors.json, made by the
// Python reference (storage/vault_vectors.py): password unwrap, purpose keys, tree objects and
// chunk files, byte for byte.
import { test, before } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";

import * as f from "../src/format.js";
import * as v from "../src/vault.js";

const V = JSON.parse(readFileSync(new URL("../../docs/vault-test-vectors.json", import.meta.url), "utf8"));
const hex = f.fromHex;

before(async () => {
  await f.ready;
});

test("purpose keys", async () => {
  const keys = await v.deriveVaultKeys(hex(V.master_key_hex));
  assert.equal(f.toHex(keys.treeKey), V.subkeys.tree_key_hex);
  assert.equal(f.toHex(keys.chunkMacKey), V.subkeys.chunk_mac_key_hex);
  assert.equal(f.toHex(keys.chunkLocatorKey), V.subkeys.chunk_locator_key_hex);
  assert.equal(f.toHex(keys.chunkFileKey), V.subkeys.chunk_file_key_hex);
});

test("password wrap: prehash, KEK, unwrap; a wrong password or account is refused", async () => {
  const w = V.password_wrap;
  assert.equal(f.toHex(await v.passwordPrehash(w.password)), w.prehash_hex);
  const kek = await v.passwordKek(w.password, hex(w.salt_hex), w.opslimit, w.memlimit);
  assert.equal(f.toHex(kek.key), w.kek_hex);
  assert.equal(f.toHex(kek.commitment), w.commitment_hex);
  const master = await v.unwrapWithPassword(w.wrapped, w.password, V.account);
  assert.equal(f.toHex(master), V.master_key_hex);
  await assert.rejects(v.unwrapWithPassword(w.wrapped, "wrong", V.account), v.WrongPasswordError);
  await assert.rejects(v.unwrapWithPassword(w.wrapped, w.password, "acct_other"), v.VaultAuthError);
  // Any change to the header (here: the account inside the AD) fails authentication.
  const tampered = { ...w.wrapped, ciphertext: w.wrapped.ciphertext.replace(/^./, (c) => (c === "A" ? "B" : "A")) };
  await assert.rejects(v.unwrapWithPassword(tampered, w.password, V.account), v.VaultAuthError);
  // A gateway may not lower the cost below the floor.
  await assert.rejects(
    v.unwrapWithPassword({ ...w.wrapped, kdf: { ...w.wrapped.kdf, memlimit: 1 << 20 } }, w.password, V.account),
    f.FormatError,
  );
});

test("password wrap made in the page is the reference's, byte for byte, and opens again", async () => {
  const w = V.password_wrap;
  const wrapped = await v.wrapWithPassword(hex(V.master_key_hex), w.password, V.account, {
    opslimit: w.opslimit,
    memlimit: w.memlimit,
    salt: hex(w.salt_hex),
    nonce: hex(w.nonce_hex),
  });
  assert.deepEqual(wrapped, w.wrapped);
  // What the page writes for real: the CLI's cost, a fresh salt and nonce each time.
  assert.equal(v.DEFAULT_OPSLIMIT, 3);
  assert.equal(v.DEFAULT_MEMLIMIT, 128 << 20);
  const master = v.newMasterKey();
  const fresh = await v.wrapWithPassword(master, "pw", V.account, { opslimit: 2, memlimit: 64 << 20 });
  assert.notEqual(fresh.kdf.salt, w.wrapped.kdf.salt);
  assert.deepEqual(await v.unwrapWithPassword(fresh, "pw", V.account), master);
  await assert.rejects(v.unwrapWithPassword(fresh, "pw!", V.account), v.WrongPasswordError);
  await assert.rejects(v.wrapWithPassword(master.subarray(1), "pw", V.account), f.FormatError);
});

test("vault JSON keeps big integers exact and refuses floats", () => {
  const text = '{"a":[1,-2,1700000000123456789,"x\\"y\\u00e9"],"b":null,"c":true,"d":{}}';
  const got = v.parseJsonExact(text);
  assert.deepEqual(got, { a: [1, -2, 1700000000123456789n, 'x"y\u00e9'], b: null, c: true, d: {} });
  assert.equal(new TextDecoder().decode(v.canonicalJson(got)), text.replace("\\u00e9", "\u00e9"));
  for (const bad of ['{"a":1.5}', '{"a":1e3}', '{"a":1', '{"a":1}x', '{"a":1,"a":2}', "[01]", '{"a":"x}']) {
    assert.throws(() => v.parseJsonExact(bad), f.FormatError, bad);
  }
});

test("an object opened and sealed again is the same body (nanosecond times included)", async () => {
  const keys = await v.deriveVaultKeys(hex(V.master_key_hex));
  const o = V.object;
  const entry = await v.openObject(keys, V.account, o.object_id, hex(o.sealed_hex));
  assert.equal(typeof entry.raw.versions[0].mtime_ns, "bigint");
  const again = await v.sealObject(keys, V.account, o.object_id, entry.raw, hex(o.nonce_hex));
  assert.equal(f.toHex(again), o.sealed_hex);
});

test("wrap associated data is the reference's canonical JSON", () => {
  const w = V.password_wrap;
  const header = { version: 1, purpose: "password", account: V.account, kdf: w.wrapped.kdf, commitment: w.wrapped.commitment };
  const ad = f.concatBytes(new TextEncoder().encode("bitcache/v1/vault-wrap"), new Uint8Array([0]), v.canonicalJson(header));
  assert.equal(f.toHex(ad), w.associated_data_hex);
});

test("Padmé lengths", () => {
  for (const [n, want] of V.padme) assert.equal(v.padmeLength(n), want, String(n));
});

test("tree object: seal gives the reference bytes, open gives the entry", async () => {
  const keys = await v.deriveVaultKeys(hex(V.master_key_hex));
  const o = V.object;
  assert.equal(f.toHex(v.objectAssociatedData(V.account, o.object_id)), o.associated_data_hex);
  // mtime_ns is beyond 2^53: written as an exact BigInt.
  const body = structuredClone(o.body);
  body.versions[0].mtime_ns = BigInt("1700000000123456789");
  const sealed = await v.sealObject(keys, V.account, o.object_id, body, hex(o.nonce_hex));
  assert.equal(f.toHex(sealed), o.sealed_hex);
  const entry = await v.openObject(keys, V.account, o.object_id, hex(o.sealed_hex));
  assert.equal(entry.path, o.body.path);
  assert.equal(entry.current.size, o.body.versions[0].size);
  await assert.rejects(v.openObject(keys, V.account, "aaaaaaaaaaaaaaaaaaaaaaaaaa", hex(o.sealed_hex)), v.VaultAuthError);
});

test("chunk file: MAC, id, key, sealed bytes and manifest as the reference", async () => {
  const keys = await v.deriveVaultKeys(hex(V.master_key_hex));
  const c = V.chunk;
  const data = hex(c.plaintext_hex);
  const mac = await v.chunkMac(keys, data);
  assert.equal(f.toHex(mac), c.mac_hex);
  const cf = await v.chunkFile(keys, mac);
  assert.equal(f.toHex(cf.fileId), c.file_id_hex);
  assert.equal(f.toHex(cf.key), c.file_key_hex);
  const padded = v.chunkFilePlaintext(data);
  assert.equal(padded.length, c.padded_size);
  assert.equal(v.chunkFileSize(data.length), c.padded_size);
  const enc = await f.FileEncryptor.create(cf.key, cf.fileId, padded.length, Math.max(4096, padded.length), v.CHUNK_FILE_FORMAT_VERSION);
  assert.deepEqual(enc.headerJson(), c.header);
  assert.equal(f.toHex(enc.seal(0, padded)), c.sealed_hex);
  const nonce = await v.chunkManifestNonce(cf);
  assert.equal(f.toHex(nonce), c.manifest_nonce_hex);
  assert.equal(new TextDecoder().decode(f.manifestToJson(v.chunkManifest(padded.length))), c.manifest_json);
  assert.equal(f.b64urlEncode(enc.sealManifest(v.chunkManifest(padded.length), nonce)), c.sealed_manifest);
  const dec = await f.FileDecryptor.create(cf.key, c.header);
  const back = await v.openChunkPlaintext(keys, { mac, length: data.length }, dec.open(0, hex(c.sealed_hex)));
  assert.equal(f.toHex(back), c.plaintext_hex);
  await assert.rejects(v.openChunkPlaintext(keys, { mac, length: data.length - 1 }, padded), f.ChunkAuthError);
});

test("paths: the vault's rule", () => {
  // 4096 code points is the limit, counted as Python counts them (an emoji is one, not two).
  const emojiParts = Array.from({ length: 64 }, () => "📄".repeat(63)).join("/");
  assert.equal([...emojiParts].length, 64 * 63 + 63);
  for (const ok of ["a", "a/b", "Zürich/📄.txt", "x".repeat(255), emojiParts]) v.checkPath(ok);
  assert.throws(() => v.checkPath(`${emojiParts}/${"y".repeat(32)}`), f.FormatError);
  for (const bad of ["", "/a", "a/", "a//b", "..", "a/../b", "./a", "a\u0000b", "a\\b", "x".repeat(256), "a\ud800"]) {
    assert.throws(() => v.checkPath(bad), f.FormatError, JSON.stringify(bad));
  }
});
