// Bundles the pages into ../gateway/static/ (build output, not committed):
//   upload.js, download.js, account.js, vault.js (ESM, browser, minified) and style.css.
// Everything the pages need is in these files: no CDN, no external URL is ever loaded.
import { build } from "esbuild";
import { copyFile, mkdir, readFile, stat } from "node:fs/promises";
import { fileURLToPath } from "node:url";
import path from "node:path";

const here = path.dirname(fileURLToPath(import.meta.url));
const outdir = path.resolve(here, "../gateway/static");
const pages = ["upload", "download", "account", "vault"];

await mkdir(outdir, { recursive: true });

const result = await build({
  absWorkingDir: here,
  // The vault page's source is vaultpage.js (vault.js is the vault format).
  entryPoints: Object.fromEntries(pages.map((p) => [p, p === "vault" ? "src/vaultpage.js" : `src/${p}.js`])),
  outdir,
  bundle: true,
  format: "esm",
  platform: "browser",
  target: ["es2022", "chrome105", "firefox110", "safari16"],
  minify: true,
  sourcemap: false,
  legalComments: "eof",
  charset: "utf8",
  metafile: true,
  logLevel: "warning",
  // libsodium's Node fallback for randomness (never reached in a browser, which has
  // crypto.getRandomValues) must not pull in a Node module.
  external: ["crypto"],
  define: { "process.env.NODE_ENV": '"production"' },
});

await copyFile(path.join(here, "src/style.css"), path.join(outdir, "style.css"));

// Guard the promise that every script is served by the gateway: no remote imports or loads.
const remote = /\bimport\s*\(\s*["'`]https?:|\bfrom\s*["'`]https?:|\bimportScripts\s*\(|["'`]\/\/[a-z0-9.-]+\.[a-z]{2,}\//i;
for (const name of [...pages.map((p) => `${p}.js`), "style.css"]) {
  const file = path.join(outdir, name);
  const text = await readFile(file, "utf8");
  if (remote.test(text) || (name.endsWith(".css") && /url\(\s*["']?(https?:)?\/\//i.test(text))) {
    throw new Error(`${name} references a remote resource`);
  }
  const { size } = await stat(file);
  console.log(`${path.relative(path.resolve(here, ".."), file).padEnd(28)} ${(size / 1024).toFixed(1).padStart(7)} KiB`);
}
if (Object.keys(result.metafile.outputs).length !== pages.length) {
  throw new Error(`expected ${pages.length} bundles, got ${Object.keys(result.metafile.outputs).join(", ")}`);
}
