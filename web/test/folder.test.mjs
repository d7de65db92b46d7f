// Folder links and manifests (web/src/folder.js) against docs/folder-link-vectors.json, made by
// the Python reference (storage/folder_vectors.py): the same bytes both ways, and every
// hostile manifest the reference refuses is refused here too.
import { test, before } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";

import * as f from "../src/format.js";
import * as folder from "../src/folder.js";

const V = JSON.parse(readFileSync(new URL("../../docs/folder-link-vectors.json", import.meta.url), "utf8"));

before(async () => {
  await f.ready;
});

test("the link: exact form and round trip", () => {
  const { gateway, file_id_hex, key_hex, url } = V.link;
  assert.equal(folder.buildFolderLink(gateway, f.fromHex(file_id_hex), f.fromHex(key_hex)), url);
  const parsed = folder.parseFolderLink(url);
  assert.equal(parsed.gateway, gateway);
  assert.equal(f.toHex(parsed.fileId), file_id_hex);
  assert.equal(f.toHex(parsed.key), key_hex);
});

test("bad links are refused without echoing the key", () => {
  const keyText = V.link.url.split(".").pop();
  for (const url of V.bad_links) {
    assert.throws(() => folder.parseFolderLink(url), (err) => err instanceof f.FormatError && !err.message.includes(keyText), url);
  }
});

test("the manifest: canonical bytes and padding, as the reference writes them", () => {
  const m = V.manifest;
  const files = m.files.map((x) => ({ path: x.path, size: x.size, fileId: f.decodeFileId(x.file_id), key: f.decodeKey(x.key) }));
  assert.equal(new TextDecoder().decode(folder.folderManifestToJson(m.name, files)), m.json);
  assert.equal(f.toHex(folder.folderManifestToPlaintext(m.name, files)), m.plaintext_hex);
  const back = folder.folderManifestFromPlaintext(f.fromHex(m.plaintext_hex));
  assert.equal(back.name, m.name);
  assert.deepEqual(
    back.files.map((x) => x.path).sort(),
    m.files.map((x) => x.path).sort(),
  );
});

test("the manifest file written by Python opens here", async () => {
  const key = f.fromHex(V.link.key_hex);
  const dec = await f.FileDecryptor.create(key, V.file.header);
  const parts = V.file.chunks_hex.map((c, i) => dec.open(i, f.fromHex(c)));
  const plaintext = f.concatBytes(...parts);
  assert.equal(f.toHex(plaintext), V.manifest.plaintext_hex);
  const manifest = dec.openManifest(f.fromHex(V.file.sealed_manifest_hex));
  assert.equal(manifest.media_type, folder.FOLDER_MEDIA_TYPE);
  assert.equal(new TextDecoder().decode(f.manifestToJson(manifest)), V.file.manifest_json);
});

test("every hostile manifest of the vectors is refused", () => {
  assert.ok(V.bad_manifests.length >= 20);
  for (const c of V.bad_manifests) {
    assert.throws(() => folder.parseFolderManifestJson(c.json), f.FormatError, c.why);
  }
});

test("a refused path is shown with its control characters escaped", () => {
  const c = V.bad_manifests.find((x) => x.why === "control character");
  assert.throws(() => folder.parseFolderManifestJson(c.json), (err) => !err.message.includes("\n"));
});

test("an empty folder round-trips", () => {
  const back = folder.folderManifestFromPlaintext(folder.folderManifestToPlaintext("empty", []));
  assert.deepEqual(back, { name: "empty", files: [] });
});
