// Checks web/src/format.js against docs/test-vectors.json byte for byte, plus the negative
// cases of docs/format.md §6.4 and the strict decoders of §2.
import { test, describe, before } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";

import sodium from "libsodium-wrappers";
import * as f from "../src/format.js";

const V = JSON.parse(readFileSync(new URL("../../docs/test-vectors.json", import.meta.url), "utf8"));
const hex = f.fromHex;
const toHex = f.toHex;

function plaintextOf(size) {
  const out = new Uint8Array(size);
  for (let i = 0; i < size; i++) out[i] = (7 * i + 3) % 256;
  return out;
}

function flipped(bytes, at) {
  const copy = Uint8Array.from(bytes);
  copy[at] ^= 0x01;
  return copy;
}

before(async () => {
  await f.ready;
});

describe("vectors", () => {
  test("format version", () => {
    // The reference (Python) writer's version; this writer may write an older one.
    assert.ok(f.READABLE_VERSIONS.includes(V.format_version));
    assert.ok(f.READABLE_VERSIONS.includes(f.FORMAT_VERSION));
    assert.deepEqual(V.readable_versions, [...f.READABLE_VERSIONS]);
    assert.deepEqual([...new Set(V.files.map((file) => file.version))], [1, 2]);
  });

  test("HKDF-SHA256 RFC 5869 case 1", async () => {
    const c = V.hkdf_sha256_rfc5869_case1;
    const okm = await f.hkdfSha256(hex(c.ikm_hex), hex(c.salt_hex), hex(c.info_hex), c.length);
    assert.equal(toHex(okm), c.okm_hex);
  });

  for (const [n, file] of V.files.entries()) {
    describe(`files[${n}] (${file.description}, v${file.version})`, () => {
      const key = hex(file.key_hex);
      const fileId = hex(file.file_id_hex);
      const version = file.version;

      test("text forms of key and file id", () => {
        assert.equal(f.encodeKey(key), file.key_text);
        assert.equal(f.encodeFileId(fileId), file.file_id_text);
        assert.deepEqual(f.decodeKey(file.key_text), key);
        assert.deepEqual(f.decodeFileId(file.file_id_text), fileId);
      });

      test("subkeys and commitment", async () => {
        assert.equal(file.header.version, version);
        const keys = await f.deriveKeys(key, fileId, version);
        assert.equal(toHex(keys.chunkKey), file.subkeys.chunk_key_hex);
        assert.equal(toHex(keys.nonceKey), file.subkeys.nonce_key_hex);
        assert.equal(toHex(keys.manifestKey), file.subkeys.manifest_key_hex);
        assert.equal(toHex(keys.commitment), file.subkeys.commitment_hex);
      });

      test("header JSON, byte for byte", async () => {
        const enc = await f.FileEncryptor.create(key, fileId, file.plaintext_size, file.chunk_size, version);
        assert.equal(JSON.stringify(enc.headerJson()), JSON.stringify(file.header));
        assert.equal(enc.chunkCount, file.chunks.length);
        const parsed = f.parseHeader(file.header);
        assert.deepEqual(parsed.fileId, fileId);
        assert.equal(parsed.chunkCount, file.chunks.length);
        assert.equal(JSON.stringify(f.headerToJson(parsed)), JSON.stringify(file.header));
      });

      test("every chunk: plaintext, associated data, nonce, sealed bytes, opening", async () => {
        const keys = await f.deriveKeys(key, fileId, version);
        const whole = plaintextOf(file.plaintext_size);
        const enc = await f.FileEncryptor.create(key, fileId, file.plaintext_size, file.chunk_size, version);
        const dec = await f.FileDecryptor.create(key, file.header);
        for (const c of file.chunks) {
          const [start, end] = enc.chunkRange(c.index);
          const plaintext = whole.subarray(start, end);
          assert.equal(toHex(plaintext), c.plaintext_hex, `plaintext ${c.index}`);
          assert.equal(c.last, c.index === file.chunks.length - 1);
          assert.equal(toHex(f.chunkAssociatedData(fileId, c.index, c.last)), c.associated_data_hex);
          const sealed = f.sealChunk(keys, fileId, c.index, c.last, plaintext);
          assert.equal(toHex(sealed), c.sealed_hex, `sealed ${c.index}`);
          assert.equal(toHex(sealed.subarray(0, 24)), c.nonce_hex);
          assert.equal(toHex(f.syntheticNonce(keys, hex(c.associated_data_hex), plaintext)), c.nonce_hex);
          assert.equal(toHex(enc.seal(c.index, plaintext)), c.sealed_hex);
          assert.equal(sealed.length, dec.sealedSize(c.index));
          assert.equal(toHex(f.openChunk(keys, fileId, c.index, c.last, hex(c.sealed_hex))), c.plaintext_hex);
          assert.equal(toHex(dec.open(c.index, hex(c.sealed_hex))), c.plaintext_hex);
        }
      });
    });
  }

  test("manifest: canonical JSON, associated data, sealed bytes, opening", async () => {
    const m = V.manifest;
    const fileId = hex(m.file_id_hex);
    const keys = await f.deriveKeys(hex(m.key_hex), fileId);
    assert.equal(toHex(f.manifestToJson(m.manifest)), m.plaintext_hex);
    assert.equal(toHex(f.manifestAssociatedData(fileId)), m.associated_data_hex);
    const sealed = f.sealManifest(keys, fileId, m.manifest, hex(m.nonce_hex));
    assert.equal(toHex(sealed), m.sealed_hex);
    const opened = f.openManifest(keys, fileId, hex(m.sealed_hex));
    assert.deepEqual({ ...opened }, { ...m.manifest });
    // Also from its base64url text, as the gateway serves it, and through FileDecryptor.
    const file = V.files[0];
    const dec = await f.FileDecryptor.create(hex(file.key_hex), file.header);
    assert.equal(dec.openManifest(f.b64urlEncode(hex(m.sealed_hex))).name, m.manifest.name);
    // A random nonce each time it is sealed; both open.
    const a = f.sealManifest(keys, fileId, m.manifest);
    const b = f.sealManifest(keys, fileId, m.manifest);
    assert.notEqual(toHex(a), toHex(b));
    assert.equal(f.openManifest(keys, fileId, a).name, m.manifest.name);
  });

  test("share link", () => {
    const s = V.share_link;
    assert.equal(f.buildShareLink(s.gateway, hex(s.file_id_hex), hex(s.key_hex)), s.url);
    const parsed = f.parseShareLink(`  ${s.url}\n`);
    assert.equal(parsed.gateway, s.gateway);
    assert.equal(toHex(parsed.fileId), s.file_id_hex);
    assert.equal(toHex(parsed.key), s.key_hex);
  });
});

describe("tampering (§6.4)", () => {
  const file = V.files[0];
  const key = hex(file.key_hex);
  const fileId = hex(file.file_id_hex);
  let keys;
  before(async () => {
    keys = await f.deriveKeys(key, fileId, file.version);
  });

  test("a flipped byte in nonce, ciphertext or tag fails", () => {
    for (const c of file.chunks) {
      const sealed = hex(c.sealed_hex);
      for (const at of [0, 23, 24, Math.floor(sealed.length / 2), sealed.length - 1]) {
        assert.throws(() => f.openChunk(keys, fileId, c.index, c.last, flipped(sealed, at)), f.ChunkAuthError);
      }
    }
    const empty = V.files[1];
    const ekeys = f.deriveKeys(hex(empty.key_hex), hex(empty.file_id_hex));
    return ekeys.then((k) => {
      assert.throws(() => f.openChunk(k, hex(empty.file_id_hex), 0, true, flipped(hex(empty.chunks[0].sealed_hex), 30)), f.ChunkAuthError);
    });
  });

  test("wrong index fails (chunk 0 opened at index 1, chunks swapped)", () => {
    const [c0, c1] = file.chunks;
    assert.throws(() => f.openChunk(keys, fileId, 1, false, hex(c0.sealed_hex)), f.ChunkAuthError);
    assert.throws(() => f.openChunk(keys, fileId, 0, false, hex(c1.sealed_hex)), f.ChunkAuthError);
    assert.throws(() => f.openChunk(keys, fileId, 2 ** 40, false, hex(c0.sealed_hex)), f.ChunkAuthError);
  });

  test("wrong last flag fails (truncation and extension)", () => {
    const [, c1, c2] = file.chunks;
    assert.throws(() => f.openChunk(keys, fileId, 1, true, hex(c1.sealed_hex)), f.ChunkAuthError);
    assert.throws(() => f.openChunk(keys, fileId, 2, false, hex(c2.sealed_hex)), f.ChunkAuthError);
  });

  test("a lying header is caught by the length check or the last flag", async () => {
    // Truncation: header claims 2 full chunks, so chunk 1 is "last".
    const short = { ...file.header, plaintext_size: 8192 };
    const dec = await f.FileDecryptor.create(key, short);
    assert.equal(toHex(dec.open(0, hex(file.chunks[0].sealed_hex))), file.chunks[0].plaintext_hex);
    assert.throws(() => dec.open(1, hex(file.chunks[1].sealed_hex)), f.ChunkAuthError);
    // Wrong size: the last chunk would have to be 4096 bytes.
    const wrong = await f.FileDecryptor.create(key, { ...file.header, plaintext_size: 12288 });
    assert.throws(() => wrong.open(2, hex(file.chunks[2].sealed_hex)), /expected 4136 sealed bytes/);
  });

  test("chunk from another file (same key) fails", async () => {
    const otherId = hex(V.files[1].file_id_hex);
    const otherKeys = await f.deriveKeys(key, otherId);
    const c = file.chunks[0];
    assert.throws(() => f.openChunk(otherKeys, otherId, 0, false, hex(c.sealed_hex)), f.ChunkAuthError);
    // Even with this file's keys, the AD names the file.
    assert.throws(() => f.openChunk(keys, otherId, 0, false, hex(c.sealed_hex)), f.ChunkAuthError);
  });

  test("too short fails", () => {
    assert.throws(() => f.openChunk(keys, fileId, 0, false, new Uint8Array(39)), f.ChunkAuthError);
  });

  test("readers do not recompute the nonce (§6.4); without chunkKey no nonce can be chosen", async () => {
    const c = file.chunks[0];
    const ad = f.chunkAssociatedData(fileId, 0, false);
    const nonce = new Uint8Array(24).fill(9);
    const body = sodium.crypto_aead_xchacha20poly1305_ietf_encrypt(hex(c.plaintext_hex), ad, null, nonce, keys.chunkKey);
    assert.equal(toHex(f.openChunk(keys, fileId, 0, false, f.concatBytes(nonce, body))), c.plaintext_hex);
    assert.notEqual(toHex(f.syntheticNonce(keys, ad, hex(c.plaintext_hex))), toHex(nonce));
    const stranger = await f.deriveKeys(f.newFileKey(), fileId);
    const forged = sodium.crypto_aead_xchacha20poly1305_ietf_encrypt(hex(c.plaintext_hex), ad, null, nonce, stranger.chunkKey);
    assert.throws(() => f.openChunk(keys, fileId, 0, false, f.concatBytes(nonce, forged)), f.ChunkAuthError);
  });

  test("v1 and v2 chunks of the same file open with either version's keys", async () => {
    const v2 = V.files.find((x) => x.version === 2 && x.file_id_hex === file.file_id_hex);
    const keys2 = await f.deriveKeys(key, fileId, 2);
    assert.notEqual(toHex(keys2.nonceKey), toHex(keys.nonceKey));
    assert.equal(toHex(keys2.chunkKey), toHex(keys.chunkKey));
    for (const [i, c] of file.chunks.entries()) {
      const c2 = v2.chunks[i];
      assert.notEqual(c.nonce_hex, c2.nonce_hex);
      for (const k of [keys, keys2]) {
        assert.equal(toHex(f.openChunk(k, fileId, i, c.last, hex(c.sealed_hex))), c.plaintext_hex);
        assert.equal(toHex(f.openChunk(k, fileId, i, c.last, hex(c2.sealed_hex))), c.plaintext_hex);
      }
    }
  });

  test("a v2 chunk with a flipped byte fails", async () => {
    const v2 = V.files.find((x) => x.version === 2 && x.file_id_hex === file.file_id_hex);
    const keys2 = await f.deriveKeys(key, fileId, 2);
    for (const c of v2.chunks) {
      const sealed = hex(c.sealed_hex);
      for (const at of [0, 23, 24, sealed.length - 1]) {
        assert.throws(() => f.openChunk(keys2, fileId, c.index, c.last, flipped(sealed, at)), f.ChunkAuthError);
      }
    }
  });

  test("wrong key is detected by the commitment before any chunk", async () => {
    const wrongKey = flipped(key, 5);
    await assert.rejects(() => f.FileDecryptor.create(wrongKey, file.header), f.WrongKeyError);
    const wrongKeys = await f.deriveKeys(wrongKey, fileId);
    assert.throws(() => f.checkKey(wrongKeys, hex(file.subkeys.commitment_hex)), f.WrongKeyError);
    f.checkKey(keys, hex(file.subkeys.commitment_hex));
    // Without the commitment the AEAD alone would also fail (but only after paying).
    assert.throws(() => f.openChunk(wrongKeys, fileId, 0, false, hex(file.chunks[0].sealed_hex)), f.ChunkAuthError);
  });

  test("manifest: flipped byte, wrong key, other file fail", async () => {
    const m = V.manifest;
    const sealed = hex(m.sealed_hex);
    for (const at of [0, 30, sealed.length - 1]) {
      assert.throws(() => f.openManifest(keys, fileId, flipped(sealed, at)), f.ChunkAuthError);
    }
    const wrongKeys = await f.deriveKeys(flipped(key, 0), fileId);
    assert.throws(() => f.openManifest(wrongKeys, fileId, sealed), f.ChunkAuthError);
    assert.throws(() => f.openManifest(keys, hex(V.files[1].file_id_hex), sealed), f.ChunkAuthError);
    assert.throws(() => f.openManifest(keys, fileId, sealed.subarray(0, 39)), f.ChunkAuthError);
  });
});

describe("strict encodings (§2)", () => {
  const keyText = V.files[0].key_text;
  const idText = V.files[0].file_id_text;

  test("key: padding, length, alphabet, trailing bits", () => {
    for (const bad of [
      `${keyText}=`,
      keyText.slice(0, 42),
      `${keyText}A`,
      `${keyText.slice(0, 10)}+${keyText.slice(11)}`,
      `${keyText.slice(0, 10)}/${keyText.slice(11)}`,
      `${keyText.slice(0, 42)}9`, // "9" has non-zero low bits in the last character
      `${keyText.slice(0, 42)} `,
      "",
    ]) {
      assert.throws(() => f.decodeKey(bad), f.FormatError, JSON.stringify(bad));
    }
    assert.throws(() => f.encodeKey(new Uint8Array(31)), f.FormatError);
  });

  test("file id: case, padding, length, alphabet, trailing bits", () => {
    for (const bad of [
      idText.toUpperCase(),
      `${idText}======`,
      idText.slice(0, 25),
      `${idText}a`,
      idText.replace("m", "1"),
      `${idText.slice(0, 25)}n`, // last char must have its 2 low bits zero
    ]) {
      assert.throws(() => f.decodeFileId(bad), f.FormatError, JSON.stringify(bad));
    }
  });

  test("base64url and base32 round trips for every length", () => {
    for (let len = 0; len < 40; len++) {
      const bytes = Uint8Array.from({ length: len }, (_, i) => (i * 37 + len) & 0xff);
      const text = f.b64urlEncode(bytes);
      assert.equal(text, Buffer.from(bytes).toString("base64url"));
      assert.deepEqual(f.b64urlDecode(text), bytes);
    }
    for (let i = 0; i < 50; i++) {
      const id = f.newFileId();
      const text = f.encodeFileId(id);
      assert.match(text, /^[a-z2-7]{26}$/);
      assert.deepEqual(f.decodeFileId(text), id);
      const key = f.newFileKey();
      assert.deepEqual(f.decodeKey(f.encodeKey(key)), key);
    }
  });

  test("share link parsing rejects malformed links", () => {
    const url = V.share_link.url;
    const cases = [
      url.split("#")[0], // no fragment
      `${url.split("#")[0]}#`, // empty fragment
      url.replace("/f/", "/g/"),
      url.replace("https://gateway.example", "ftp://gateway.example"),
      url.replace("https://gateway.example", "https://gateway.example/"),
      url.replace("/f/", "/f/?x=1/f/"),
      url.replace("/f/mrsw", "/f/MRSW"),
      `${url}#extra`,
      url.replace("#", "/#"),
      url.replace("https://gateway.example", "https://gate way.example"),
      url.replace("https://gateway.example", "https://"),
    ];
    for (const bad of cases) assert.throws(() => f.parseShareLink(bad), f.FormatError, bad);
    // Errors never echo the key.
    try {
      f.parseShareLink(`${url.slice(0, -1)}9`);
      assert.fail("accepted a bad key");
    } catch (e) {
      assert.ok(!e.message.includes(V.files[0].key_text.slice(0, 20)));
    }
    // A path prefix is fine.
    const withPrefix = f.parseShareLink(url.replace("gateway.example", "gateway.example:8443/base"));
    assert.equal(withPrefix.gateway, "https://gateway.example:8443/base");
  });

  test("header parsing is strict", () => {
    const good = V.files[0].header;
    const bad = [
      null,
      [],
      "x",
      { ...good, extra: 1 },
      (({ commitment, ...rest }) => rest)(good),
      { ...good, version: 3 },
      { ...good, version: 0 },
      { ...good, version: true },
      { ...good, chunk_size: "4096" },
      { ...good, chunk_size: 4096.5 },
      { ...good, chunk_size: 4095 },
      { ...good, chunk_size: 16 * 1024 * 1024 + 1 },
      { ...good, plaintext_size: -1 },
      { ...good, plaintext_size: 2 ** 53 },
      { ...good, file_id: good.file_id.toUpperCase() },
      { ...good, commitment: `${good.commitment}=` },
    ];
    for (const h of bad) assert.throws(() => f.parseHeader(h), f.FormatError, JSON.stringify(h));
    assert.throws(() => f.parseHeader({ ...good, version: 3 }), /unsupported format version 3; this reader supports 1 and 2/);
    assert.equal(f.parseHeader({ ...good, version: 1 }).version, 1);
    assert.equal(f.parseHeader({ ...good, version: 2 }).version, 2);
    assert.throws(() => f.parseJsonIntegersOnly('{"chunk_size":4096.0}'), f.FormatError);
    assert.throws(() => f.parseJsonIntegersOnly('{"chunk_size":4e3}'), f.FormatError);
    assert.deepEqual(f.parseJsonIntegersOnly('{"a":"1.5e3","b":true,"c":false,"d":-3}'), { a: "1.5e3", b: true, c: false, d: -3 });
  });

  test("keys and encryptors refuse unknown versions", async () => {
    const key = hex(V.files[0].key_hex);
    const id = hex(V.files[0].file_id_hex);
    for (const bad of [0, 3, "2", true]) {
      await assert.rejects(() => f.deriveKeys(key, id, bad), f.FormatError);
      await assert.rejects(() => f.FileEncryptor.create(key, id, 10, 4096, bad), f.FormatError);
    }
    assert.throws(() => f.syntheticNonce({ nonceKey: new Uint8Array(32) }, new Uint8Array(42), new Uint8Array(1)), f.FormatError);
  });

  test("chunk geometry", () => {
    assert.equal(f.chunkCount(10240, 4096), 3);
    assert.deepEqual([0, 1, 2].map((i) => f.sealedChunkSize(i, 10240, 4096)), [4136, 4136, 2088]);
    assert.equal(f.chunkCount(0, 4096), 1);
    assert.equal(f.sealedChunkSize(0, 0, 4096), 40);
    assert.equal(f.chunkCount(8192, 4096), 2);
    assert.equal(f.chunkCount(2 ** 53 - 1, 1 << 20), Math.ceil((2 ** 53 - 1) / 2 ** 20));
    assert.equal(f.plaintextChunkSize(f.chunkCount(2 ** 53 - 1, 1 << 20) - 1, 2 ** 53 - 1, 1 << 20), 2 ** 20 - 1);
    assert.throws(() => f.plaintextChunkSize(3, 10240, 4096), f.FormatError);
  });
});

describe("manifest validation (§8)", () => {
  const file = V.files[0];
  const base = V.manifest.manifest;
  let keys;
  const fileId = hex(file.file_id_hex);
  before(async () => {
    keys = await f.deriveKeys(hex(file.key_hex), fileId);
  });

  const sealRaw = (text) => {
    const nonce = new Uint8Array(24).fill(1);
    const body = sodium.crypto_aead_xchacha20poly1305_ietf_encrypt(
      new TextEncoder().encode(text), f.manifestAssociatedData(fileId), null, nonce, keys.manifestKey);
    return f.concatBytes(nonce, body);
  };

  test("bad names and types are refused when sealing", () => {
    for (const name of ["", ".", "..", "a/b", "a\\b", "a\u0000b", "tab\there", "del\u007f", "x\ud800y", "n".repeat(256)]) {
      assert.throws(() => f.manifestToJson({ ...base, name }), f.FormatError, JSON.stringify(name));
    }
    assert.throws(() => f.manifestToJson({ ...base, size: "1" }), f.FormatError);
    assert.throws(() => f.manifestToJson({ ...base, modified: 1.5 }), f.FormatError);
    assert.throws(() => f.manifestToJson({ ...base, extra: 1 }), f.FormatError);
    assert.throws(() => f.manifestToJson({ ...base, media_type: "" }), f.FormatError);
    // 255 code points, most of them 4-byte UTF-8 (two UTF-16 units each), is fine.
    f.manifestToJson({ ...base, name: "📄".repeat(255) });
    f.manifestToJson({ ...base, modified: null });
  });

  test("readers accept any key order and whitespace, and defaults", () => {
    const text = ' { "size" : 10240, "name": "a \\"b\\" \\u00e9 c", "chunk_size": 4096 } ';
    const m = f.openManifest(keys, fileId, sealRaw(text));
    assert.equal(m.name, 'a "b" é c');
    assert.equal(m.media_type, "application/octet-stream");
    assert.equal(m.modified, null);
  });

  test("readers reject unknown fields, floats, bad UTF-8, lone surrogates", () => {
    const good = new TextDecoder().decode(f.manifestToJson(base));
    for (const text of [
      good.replace("{", '{"x":1,'),
      good.replace("4096", "4096.0"),
      good.replace('"size":10240', '"size":"10240"'),
      good.replace("Zürich", "\\ud800"),
      "[]",
      "not json",
    ]) {
      assert.throws(() => f.openManifest(keys, fileId, sealRaw(text)), f.FormatError, text);
    }
    const nonce = new Uint8Array(24);
    const badUtf8 = sodium.crypto_aead_xchacha20poly1305_ietf_encrypt(
      Uint8Array.of(0x7b, 0xff, 0x7d), f.manifestAssociatedData(fileId), null, nonce, keys.manifestKey);
    assert.throws(() => f.openManifest(keys, fileId, f.concatBytes(nonce, badUtf8)), /UTF-8/);
  });

  test("the manifest must agree with the header", async () => {
    const dec = await f.FileDecryptor.create(hex(file.key_hex), file.header);
    const other = f.sealManifest(keys, fileId, { ...base, size: 10 });
    assert.throws(() => dec.openManifest(other), /do not match/);
  });
});

describe("round trip with the default chunk size", () => {
  test("1.5 MiB in format v2", async () => {
    const size = 1.5 * 1024 * 1024;
    const data = plaintextOf(size);
    const key = f.newFileKey();
    const enc = await f.FileEncryptor.create(key, f.newFileId(), size, undefined, 2);
    assert.equal(enc.headerJson().version, 2);
    const dec = await f.FileDecryptor.create(key, enc.headerJson());
    for (let i = 0; i < enc.chunkCount; i++) {
      const [s, e] = enc.chunkRange(i);
      assert.deepEqual(dec.open(i, enc.seal(i, data.subarray(s, e))), data.subarray(s, e));
    }
  });

  test("3.5 MiB through FileEncryptor and FileDecryptor", async () => {
    const size = 3.5 * 1024 * 1024;
    const data = plaintextOf(size);
    const key = f.newFileKey();
    const id = f.newFileId();
    const enc = await f.FileEncryptor.create(key, id, size);
    assert.equal(enc.chunkCount, 4);
    assert.equal(enc.headerJson().version, f.FORMAT_VERSION);
    const dec = await f.FileDecryptor.create(key, enc.headerJson());
    const out = new Uint8Array(size);
    for (let i = 0; i < enc.chunkCount; i++) {
      const [s, e] = enc.chunkRange(i);
      const sealed = enc.seal(i, data.subarray(s, e));
      out.set(dec.open(i, sealed), s);
    }
    assert.deepEqual(out, data);
    assert.throws(() => enc.seal(0, data.subarray(0, 10)), f.FormatError);
  });
});
