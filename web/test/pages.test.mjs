// Pure helpers of the pages, and the bundles: three self-contained ESM files with no remote loads.
import { test } from "node:test";
import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import path from "node:path";
import { build } from "esbuild";

import { parsePrice, safeName } from "../src/upload.js";
import { formatBytes, formatSats } from "../src/ui.js";
import { manifestToJson } from "../src/format.js";
import { problemMessage } from "../src/api.js";

const web = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");

test("file names become valid manifest names", () => {
  const manifest = (name) => ({ chunk_size: 1 << 20, media_type: "application/octet-stream", modified: null, name, size: 0 });
  for (const [input, expected] of [
    ["photo.jpg", "photo.jpg"],
    ["a/b\\c", "a_b_c"],
    ["tab\there\u0000", "tab_here_"],
    ["", "file"],
    [".", "file"],
    ["..", "file"],
    ["x\ud800y", "x_y"],
  ]) {
    assert.equal(safeName(input), expected);
    manifestToJson(manifest(safeName(input)));
  }
  const long = safeName("📄".repeat(300));
  assert.equal([...long].length, 255);
  manifestToJson(manifest(long));
});

test("price input: sats with up to 3 decimals, blank for the default", () => {
  assert.equal(parsePrice(""), null);
  assert.equal(parsePrice(" 2 "), 2000);
  assert.equal(parsePrice("0"), 0);
  assert.equal(parsePrice("0.001"), 1);
  assert.equal(parsePrice("1.5"), 1500);
  assert.equal(parsePrice("100000"), 100_000_000);
  for (const bad of ["-1", "1.0001", "1e3", "abc", "100001"]) assert.throws(() => parsePrice(bad), Error, bad);
});

test("formatting", () => {
  assert.equal(formatSats(0), "0 sats");
  assert.equal(formatSats(1000), "1 sat");
  assert.equal(formatSats(6000), "6 sats");
  assert.equal(formatSats(1500), "1.5 sats");
  assert.equal(formatSats(123_456), "123.456 sats");
  assert.equal(formatSats(20_000_000n), "20,000 sats");
  assert.equal(formatBytes(999), "999 B");
  assert.equal(formatBytes(2_621_457), "2.62 MB");
  assert.equal(problemMessage(404, { title: "Not found", detail: "no file x" }), "no file x");
  assert.equal(problemMessage(500, null), "the gateway answered HTTP 500");
});

test("bundles: three self-contained ESM files, nothing loaded from elsewhere", async () => {
  const result = await build({
    absWorkingDir: web,
    entryPoints: { upload: "src/upload.js", download: "src/download.js", account: "src/account.js" },
    outdir: "out",
    write: false,
    bundle: true,
    format: "esm",
    platform: "browser",
    minify: true,
    external: ["crypto"],
    metafile: true,
    logLevel: "silent",
  });
  const files = Object.fromEntries(result.outputFiles.map((f) => [path.basename(f.path), f.text]));
  assert.deepEqual(Object.keys(files).sort(), ["account.js", "download.js", "upload.js"]);
  for (const [name, text] of Object.entries(files)) {
    assert.doesNotMatch(text, /\bimport\s*\(\s*["'`]https?:|\bfrom\s*["'`]https?:|importScripts/, name);
    assert.doesNotMatch(text, /^import[\s{*"]/m, `${name} must not import other files`);
  }
  // The account page needs no cryptography: it stays small.
  assert.ok(files["account.js"].length < 100_000, "account.js bundles libsodium");
});
