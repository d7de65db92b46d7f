// The vault page (/vault): log in, unlock the vault with the same password (the derivation of
// docs/format.md §14.3, in this page), browse the tree decrypted here, download (the owner's
// traffic is free), upload into the current folder, and share a file or a folder.
//
// The master key lives in this page's memory only: never in storage, never sent anywhere.
// Writes use the vault's compare-and-set (POST /v1/vault/objects with if_counter), exactly
// as the CLI's sync, so a `bitcache sync` on any device picks up what was uploaded here.

import { ApiError, call, callJson, getApiKey, setApiKey, sleep } from "./api.js";
import { FileDecryptor, FileEncryptor, MIN_CHUNK_SIZE, b64urlDecode, b64urlEncode, encodeFileId, parseShareLink, ready } from "./format.js";
import { FOLDER_MEDIA_TYPE, buildFolderLink, folderManifestToPlaintext } from "./folder.js";
import { login } from "./login.js";
import { appRoot, copyButton, el, errorText, formatBytes, qrCanvas, setStatus, statusLine } from "./ui.js";
import { putChunk, safeName, shareBase, uploadFile } from "./uploader.js";
import {
  CHUNK_FILE_FORMAT_VERSION,
  WEB_CHUNK_SIZE,
  WrongPasswordError,
  checkPath,
  chunkFile,
  chunkFileSize,
  chunkFilePlaintext,
  chunkMac,
  chunkManifest,
  chunkManifestNonce,
  deriveVaultKeys,
  newObjectId,
  openChunkPlaintext,
  openObject,
  sealObject,
  unwrapWithPassword,
} from "./vault.js";

const DEVICE = "web";
const WRITE_ATTEMPTS = 5;
const LONG_POLL_S = 25;

// The unlocked vault (memory only) and what the page shows.
const vault = {
  apiKey: "",
  account: "",
  keys: null,
  counter: 0,
  entries: new Map(), // object id → entry (live and trash)
  dir: "", // the folder shown, "" for the top
  busy: false,
  generation: 0, // bumps on lock, stops the change watcher
};

// For automated tests: the last downloaded Blob and the page's state.
const debug = { lastSavedBlob: null, state: "locked" };
if (typeof window !== "undefined") window.__bitcacheVault = debug;

function setState(state) {
  debug.state = state;
  const app = document.getElementById("app");
  if (app) app.dataset.state = state;
}

// --- the tree ------------------------------------------------------------------------------------

/** Reads every change after the vault's counter (all pages) into `vault.entries`. */
async function pull(wait = 0) {
  let since = vault.counter;
  for (;;) {
    const reply = await callJson(`/v1/vault/changes?since=${since}&wait=${wait}`, { apiKey: vault.apiKey, retries: 2 });
    wait = 0;
    const counter = Number(reply.counter);
    if (!Number.isSafeInteger(counter) || counter < since) throw new Error("the gateway's vault went back in time (rollback refused)");
    for (const item of reply.objects ?? []) {
      const oid = String(item.id);
      // Two reads in flight (the long-poll and a write's re-read) may answer out of order:
      // never let an older state of an object replace a newer one.
      const known = vault.entries.get(oid);
      if (known && known.counter > Number(item.counter)) continue;
      if (item.data === null) {
        vault.entries.delete(oid);
        continue;
      }
      const entry = await openObject(vault.keys, vault.account, oid, b64urlDecode(item.data, undefined, "object"));
      if (entry.counter !== Number(item.counter)) throw new Error(`vault object ${oid} is replayed from another change`);
      vault.entries.set(oid, entry);
    }
    since = counter;
    vault.counter = Math.max(vault.counter, counter);
    if (!reply.more) break;
  }
  rememberCounter();
}

// The highest change counter this browser has seen per account: a gateway that serves an
// older vault (withholding changes) is refused, as the CLI's devices do (format §14.7).
const COUNTER_KEY = "bitcache.vaultCounter.";

function seenCounter() {
  try {
    return Number(globalThis.localStorage?.getItem(COUNTER_KEY + vault.account) ?? 0) || 0;
  } catch {
    return 0;
  }
}

function rememberCounter() {
  if (vault.counter < seenCounter()) {
    throw new Error(`the gateway's vault is at change ${vault.counter}, but this browser has seen change ${seenCounter()}: it went back in time (refused)`);
  }
  try {
    globalThis.localStorage?.setItem(COUNTER_KEY + vault.account, String(vault.counter));
  } catch {
    // Private mode without storage: the check then covers this page's lifetime only.
  }
}

function live() {
  return [...vault.entries.entries()].filter(([, e]) => e.deleted === null);
}

function entryAt(path) {
  return live().find(([, e]) => e.path === path) ?? null;
}

/** The folders and files directly inside `dir`; folders also come from file paths. */
function listing(dir) {
  const prefix = dir ? `${dir}/` : "";
  const folders = new Map();
  const files = [];
  for (const [oid, e] of live()) {
    if (!e.path.startsWith(prefix) || e.path === dir) continue;
    const rest = e.path.slice(prefix.length);
    const slash = rest.indexOf("/");
    if (slash >= 0) {
      const name = rest.slice(0, slash);
      if (!folders.has(name)) folders.set(name, null);
    } else if (e.kind === "dir") {
      folders.set(rest, e);
    } else {
      files.push({ oid, name: rest, entry: e });
    }
  }
  const byName = (a, b) => (a < b ? -1 : a > b ? 1 : 0);
  return {
    folders: [...folders.keys()].sort(byName).map((name) => ({ name, entry: folders.get(name) })),
    files: files.sort((a, b) => byName(a.name, b.name)),
  };
}

function filesUnder(dir) {
  const prefix = `${dir}/`;
  return live()
    .filter(([, e]) => e.kind === "file" && e.path.startsWith(prefix))
    .map(([, e]) => ({ rel: e.path.slice(prefix.length), entry: e }));
}

// --- chunks ----------------------------------------------------------------------------------------

/** One chunk, fetched free as its owner, opened and checked against its MAC. */
async function fetchChunk(ref) {
  const cf = await chunkFile(vault.keys, ref.mac);
  const size = chunkFileSize(ref.length);
  const enc = await FileEncryptor.create(cf.key, cf.fileId, size, Math.max(MIN_CHUNK_SIZE, size), CHUNK_FILE_FORMAT_VERSION);
  const dec = new FileDecryptor(enc.keys, enc.header); // header rebuilt here, not trusted from the gateway
  const resp = await call(`/v1/files/${encodeFileId(cf.fileId)}/chunks/0`, { apiKey: vault.apiKey, ok: [200], retries: 3 });
  const sealed = new Uint8Array(await resp.arrayBuffer());
  return await openChunkPlaintext(vault.keys, ref, dec.open(0, sealed));
}

/**
 * A file's current version, chunk by chunk in order (4 fetched ahead), to `write(data)`.
 * Memory stays at a few chunks whatever the file's size when `write` goes to disk.
 */
async function fetchInto(entry, write, onProgress = () => {}) {
  const refs = entry.current.chunks;
  const pending = new Map();
  let next = 0;
  let done = 0;
  for (let i = 0; i < refs.length; i++) {
    while (next < refs.length && next < i + 4) {
      const p = fetchChunk(refs[next]);
      p.catch(() => {}); // awaited below, in order
      pending.set(next++, p);
    }
    const data = await pending.get(i);
    pending.delete(i);
    await write(data);
    done += data.length;
    onProgress(done, entry.current.size);
  }
}

/** A file's current version as a Blob (in memory: for sharing, and small downloads). */
async function fetchFile(entry, onProgress = () => {}) {
  const parts = [];
  await fetchInto(entry, (data) => parts.push(data), onProgress);
  return new Blob(parts, { type: "application/octet-stream" });
}

// Above this a download goes straight to disk where the browser can (File System Access API).
const STREAM_ABOVE = 256 << 20;

async function diskWriter(name, size) {
  if (size <= STREAM_ABOVE || typeof window.showSaveFilePicker !== "function" || !window.isSecureContext || navigator.webdriver) return null;
  try {
    const handle = await window.showSaveFilePicker({ suggestedName: name });
    return await handle.createWritable();
  } catch (err) {
    if (err?.name === "AbortError") throw err; // the user closed the dialog
    return null; // not allowed here: fall back to memory
  }
}

/** Stores one chunk as its chunk file (idempotent: the same bytes give the same file). */
async function storeChunk(data) {
  const mac = await chunkMac(vault.keys, data);
  const cf = await chunkFile(vault.keys, mac);
  const padded = chunkFilePlaintext(data);
  const enc = await FileEncryptor.create(cf.key, cf.fileId, padded.length, Math.max(MIN_CHUNK_SIZE, padded.length), CHUNK_FILE_FORMAT_VERSION);
  const manifest = enc.sealManifest(chunkManifest(padded.length), await chunkManifestNonce(cf));
  const fid = encodeFileId(cf.fileId);
  const state = await callJson("/v1/files", {
    method: "POST",
    json: { header: enc.headerJson(), manifest: b64urlEncode(manifest) },
    apiKey: vault.apiKey,
    ok: [200, 201],
    retries: 2,
  });
  if (state.state !== "complete") {
    if (Array.isArray(state.missing) && state.missing.length) await putChunk(fid, 0, enc.seal(0, padded), vault.apiKey);
    await call(`/v1/files/${fid}/complete`, { method: "POST", apiKey: vault.apiKey, ok: [200], retries: 2 });
  }
  return [b64urlEncode(mac), data.length];
}

// --- writing the tree --------------------------------------------------------------------------------

/** Writes one object at the vault's counter; on a conflict re-reads, re-checks, retries. */
async function writeEntry(oid, makeBody) {
  for (let attempt = 0; attempt < WRITE_ATTEMPTS; attempt++) {
    const counter = vault.counter;
    const body = makeBody(counter + 1); // throws if the re-read vault no longer allows it
    const sealed = await sealObject(vault.keys, vault.account, oid, body);
    const resp = await call("/v1/vault/objects", {
      method: "POST",
      json: { if_counter: counter, put: [{ id: oid, data: b64urlEncode(sealed) }], delete: [] },
      apiKey: vault.apiKey,
      ok: [200, 409],
      retries: 1,
    });
    if (resp.status === 200) {
      await resp.json();
      await pull();
      return;
    }
    await pull(); // another device got there first: read its changes, then try again
  }
  throw new Error("the vault kept changing under this upload; try again");
}

/** Encrypts `file` here and adds it to the vault at `dir`/name as a new file. */
async function uploadIntoVault(file, dir, onProgress) {
  const name = safeName(file.name);
  const path = checkPath(dir ? `${dir}/${name}` : name);
  const taken = () => {
    const existing = [...vault.entries.values()].find((e) => e.path === path);
    if (existing) throw new Error(`“${path}” is already in the vault${existing.deleted === null ? "" : " (in the trash)"}; rename the file first`);
  };
  taken();
  // Chunk files are stored 3 at a time; the refs keep file order.
  const count = Math.ceil(file.size / WEB_CHUNK_SIZE);
  const chunks = new Array(count);
  let next = 0;
  let done = 0;
  const worker = async () => {
    while (next < count) {
      const i = next++;
      const start = i * WEB_CHUNK_SIZE;
      const data = new Uint8Array(await file.slice(start, Math.min(file.size, start + WEB_CHUNK_SIZE)).arrayBuffer());
      if (data.length !== Math.min(WEB_CHUNK_SIZE, file.size - start)) throw new Error(`${file.name} changed while it was being read`);
      chunks[i] = await storeChunk(data);
      done += data.length;
      onProgress(done, file.size);
    }
  };
  await Promise.all(Array.from({ length: Math.min(3, count) }, worker));
  const version = {
    n: 1,
    size: file.size,
    mtime_ns: BigInt(Math.max(0, Math.floor(Number(file.lastModified) || Date.now()))) * 1_000_000n,
    time: Math.floor(Date.now() / 1000),
    device: DEVICE,
    chunks,
  };
  await writeEntry(newObjectId(), (counter) => {
    taken();
    return { kind: "file", path, counter, deleted: null, versions: [version] };
  });
  return path;
}

// --- sharing ---------------------------------------------------------------------------------------

function baseName(path) {
  return path.slice(path.lastIndexOf("/") + 1);
}

/** A paid share link for a vault file: its bytes, uploaded again under a fresh key (as the CLI). */
async function shareFile(entry, onProgress) {
  const blob = await fetchFile(entry);
  const file = new File([blob], baseName(entry.path), { lastModified: Math.floor(entry.current.mtimeMs) || Date.now() });
  const { link } = await uploadFile(file, { apiKey: vault.apiKey, priceMsat: null, onProgress });
  return link;
}

/** A folder link (§16): every file shared, then the folder manifest as a free file. */
async function shareFolder(dir, onStep) {
  const files = [];
  const list = filesUnder(dir);
  for (const [i, { rel, entry }] of list.entries()) {
    onStep(`Sharing ${i + 1} of ${list.length}: ${rel}`);
    const link = parseShareLink(await shareFile(entry, () => {}));
    files.push({ path: rel, size: entry.current.size, fileId: link.fileId, key: link.key });
  }
  const name = baseName(dir);
  const plaintext = folderManifestToPlaintext(name, files);
  const manifestFile = new File([plaintext], name, { type: FOLDER_MEDIA_TYPE });
  const { link, idText } = await uploadFile(manifestFile, { apiKey: vault.apiKey, priceMsat: 0, onProgress: () => {} });
  const parsed = parseShareLink(link);
  return buildFolderLink(shareBase({}, idText), parsed.fileId, parsed.key);
}

// --- page --------------------------------------------------------------------------------------------

function formatTime(ms) {
  if (!Number.isFinite(ms) || ms <= 0) return "";
  return new Date(ms).toLocaleString();
}

async function runBusy(label, fn) {
  if (vault.busy) return;
  vault.busy = true;
  setState("busy");
  setStatus(label, "busy");
  try {
    await fn();
    setState("ready");
  } catch (err) {
    setState("error");
    setStatus(errorText(err), "error");
  } finally {
    vault.busy = false;
    render();
  }
}

function showLink(link, what) {
  const out = document.getElementById("vault-share");
  if (!out) return;
  out.replaceChildren(
    el("h3", { text: `Link for ${what}` }),
    el("div", { class: "row" }, el("input", { id: "vault-share-link", class: "mono", readonly: true, value: link, testid: "vault-share-link" }), copyButton(link)),
    qrCanvas(link),
    el("p", { class: "muted", text: "Anyone with this link can download (and pays per chunk); the key is after “#” and never reaches the server. It shares a copy: later changes in the vault do not reach it." }),
  );
  out.hidden = false;
}

function download(entry) {
  // The save dialog first, while the click still counts as a user gesture.
  const name = baseName(entry.path);
  return runBusy(`Downloading ${entry.path}…`, async () => {
    const progress = (done, total) => setStatus(`Downloading and decrypting ${entry.path}: ${formatBytes(done)} of ${formatBytes(total)}`, "busy");
    const disk = await diskWriter(name, entry.current.size);
    if (disk) {
      try {
        await fetchInto(entry, (data) => disk.write(data), progress);
        await disk.close();
      } catch (err) {
        await disk.abort().catch(() => {});
        throw err;
      }
    } else {
      const blob = await fetchFile(entry, progress);
      debug.lastSavedBlob = blob;
      const a = el("a", { href: URL.createObjectURL(blob), download: name, hidden: true });
      document.body.append(a);
      a.click();
      a.remove();
    }
    setStatus(`Downloaded “${entry.path}” (${formatBytes(entry.current.size)}), verified and decrypted in this page. Free: it is yours.`, "ok");
  });
}

function row(cells, props = {}) {
  return el("tr", props, ...cells.map((c) => el("td", {}, c)));
}

function render() {
  const card = document.getElementById("vault-tree");
  if (!card || !vault.keys) return;
  const { folders, files } = listing(vault.dir);
  const parts = vault.dir ? vault.dir.split("/") : [];
  const crumbs = [el("a", { href: "#", "data-dir": "", text: "Vault", on: { click: (e) => (e.preventDefault(), openDir("")) } })];
  parts.forEach((p, i) => {
    const target = parts.slice(0, i + 1).join("/");
    crumbs.push(" / ", el("a", { href: "#", "data-dir": target, text: p, on: { click: (e) => (e.preventDefault(), openDir(target)) } }));
  });
  const rows = [];
  if (vault.dir) rows.push(row([el("a", { href: "#", class: "folder", text: "..", on: { click: (e) => (e.preventDefault(), openDir(parts.slice(0, -1).join("/"))) } }), "", "", ""]));
  for (const f of folders) {
    const target = vault.dir ? `${vault.dir}/${f.name}` : f.name;
    rows.push(
      row(
        [
          el("a", { href: "#", class: "folder", "data-path": target, testid: "vault-folder", text: `${f.name}/`, on: { click: (e) => (e.preventDefault(), openDir(target)) } }),
          "folder",
          "",
          el("button", { type: "button", class: "secondary", "data-share": target, text: "Share", disabled: vault.busy, on: { click: () => share(target, true) } }),
        ],
        { "data-kind": "dir", "data-path": target },
      ),
    );
  }
  for (const f of files) {
    const v = f.entry.current;
    rows.push(
      row(
        [
          el("span", { class: "name", text: f.name }),
          v ? formatBytes(v.size) : "",
          v ? formatTime(v.mtimeMs) : "",
          el(
            "span",
            { class: "row" },
            el("button", { type: "button", class: "secondary", "data-download": f.entry.path, text: "Download", disabled: vault.busy || !v, on: { click: () => download(f.entry) } }),
            el("button", { type: "button", class: "secondary", "data-share": f.entry.path, text: "Share", disabled: vault.busy || !v, on: { click: () => share(f.entry.path, false) } }),
          ),
        ],
        { "data-kind": "file", "data-path": f.entry.path, testid: "vault-file" },
      ),
    );
  }
  card.replaceChildren(
    el("p", { id: "vault-crumbs", class: "crumbs" }, ...crumbs),
    el(
      "table",
      { id: "vault-list", class: "listing" },
      el("thead", {}, el("tr", {}, ...["Name", "Size", "Modified", ""].map((t) => el("th", { text: t })))),
      el("tbody", {}, ...rows),
    ),
    rows.length === 0 ? el("p", { class: "muted", text: "This folder is empty." }) : null,
  );
  const upload = document.getElementById("vault-upload-button");
  if (upload) upload.disabled = vault.busy;
  document.getElementById("app").dataset.dir = vault.dir;
  document.getElementById("app").dataset.counter = String(vault.counter);
}

function openDir(dir) {
  vault.dir = dir;
  render();
}

function share(path, isDir) {
  return runBusy(`Sharing ${path}…`, async () => {
    let link;
    if (isDir) {
      link = await shareFolder(path, (text) => setStatus(text, "busy"));
    } else {
      const found = entryAt(path);
      if (!found) throw new Error(`“${path}” is no longer in the vault`);
      link = await shareFile(found[1], () => {});
    }
    showLink(link, path);
    setStatus(`Shared “${path}”.`, "ok");
  });
}

/** Keeps the listing current: a long-poll on the vault's change counter, not a tight poll. */
async function watchChanges(generation) {
  while (generation === vault.generation) {
    try {
      const before = vault.counter;
      if (!vault.busy) await pull(LONG_POLL_S);
      else await sleep(1000);
      if (vault.counter !== before && !vault.busy) render();
    } catch {
      await sleep(5000);
    }
  }
}

function unlockedView(app) {
  const input = el("input", { type: "file", id: "vault-upload-input", multiple: true, testid: "vault-upload-input" });
  const button = el("button", { type: "button", id: "vault-upload-button", class: "primary", text: "Upload into this folder", testid: "vault-upload-button" });
  button.addEventListener("click", () => {
    const files = [...(input.files ?? [])];
    if (!files.length) {
      setStatus("Choose a file first.", "info");
      return;
    }
    runBusy("Encrypting and uploading…", async () => {
      for (const file of files) {
        const path = await uploadIntoVault(file, vault.dir, (done, total) =>
          setStatus(`Encrypting and uploading ${file.name}: ${formatBytes(done)} of ${formatBytes(total)}`, "busy"),
        );
        setStatus(`Uploaded “${path}” into the vault.`, "ok");
      }
      input.value = "";
    });
  });
  const lock = el("button", { type: "button", id: "vault-lock", class: "secondary", text: "Lock", on: { click: lockVault } });
  app.replaceChildren(
    el(
      "section",
      { class: "card", id: "vault-card" },
      el("div", { class: "row" }, el("h2", { text: "Your vault" }), lock),
      el("p", { class: "muted", text: "Decrypted in this page with a key only your password opens; the server stores ciphertext only." }),
      el("div", { id: "vault-tree" }),
      el("div", { class: "row" }, input, button),
      statusLine(),
      el("div", { id: "vault-share", class: "notice", hidden: true }),
    ),
  );
  render();
}

function lockVault() {
  vault.generation++;
  vault.keys = null;
  vault.entries.clear();
  vault.counter = 0;
  vault.dir = "";
  lockedView(appRoot());
}

async function unlock(username, password) {
  await ready;
  setStatus("Logging in… (deriving your login key takes a moment)", "busy");
  const result = await login(username, password);
  vault.apiKey = String(result.api_key);
  setApiKey(vault.apiKey);
  const info = await callJson("/v1/vault", { apiKey: vault.apiKey, retries: 2 });
  vault.account = String(info.account_id);
  if (!Array.isArray(info.keys) || !info.keys.includes("password")) {
    throw new Error("This account has no vault yet: create it on a computer with `bitcache vault init`.");
  }
  setStatus("Unlocking the vault… (deriving your vault key takes a moment)", "busy");
  const reply = await callJson("/v1/vault/keys/password", { apiKey: vault.apiKey, retries: 2 });
  const master = await unwrapWithPassword(reply.wrapped, password, vault.account);
  vault.keys = await deriveVaultKeys(master);
  master.fill(0);
  vault.counter = 0;
  vault.entries.clear();
  setStatus("Reading the vault…", "busy");
  await pull();
}

function lockedView(app) {
  const username = el("input", { id: "vault-username", type: "text", autocomplete: "username", spellcheck: "false", testid: "vault-username" });
  const password = el("input", { id: "vault-password", type: "password", autocomplete: "current-password", testid: "vault-password" });
  const button = el("button", { type: "submit", id: "vault-unlock", class: "primary", text: "Log in and unlock", testid: "vault-unlock" });
  const submit = async (event) => {
    event.preventDefault();
    button.disabled = true;
    setState("unlocking");
    try {
      await unlock(username.value.trim(), password.value);
      password.value = "";
      unlockedView(app);
      setState("ready");
      setStatus(`Unlocked: ${live().length} items.`, "ok");
      watchChanges(++vault.generation);
    } catch (err) {
      setState("locked");
      const wrong = err instanceof WrongPasswordError || (err instanceof ApiError && err.status === 401);
      setStatus(wrong ? "Wrong username or password." : errorText(err), "error");
    } finally {
      button.disabled = false;
    }
  };
  app.replaceChildren(
    el(
      "form",
      { class: "card stack", id: "vault-login", on: { submit } },
      el("h2", { text: "Open your vault" }),
      el("p", { class: "muted", text: "Your password logs you in and, in this page only, unlocks the key of your files. It is never sent in the clear." }),
      el("label", { for: "vault-username", text: "Username" }),
      username,
      el("label", { for: "vault-password", text: "Password" }),
      password,
      el("div", { class: "row" }, button),
      statusLine(),
    ),
  );
  setState("locked");
}

function main() {
  const app = appRoot();
  app.dataset.page = "vault";
  lockedView(app);
  ready.catch((err) => setStatus(`Encryption is unavailable in this browser: ${errorText(err)}`, "error"));
  if (getApiKey()) setStatus("Log in with your username and password to open the vault.", "info");
}

if (typeof document !== "undefined") main();

