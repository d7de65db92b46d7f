// The vault page (/vault): log in, unlock the vault with the same password (the derivation of
// docs/format.md §14.3, in this page) or create it if the account has none, browse the tree
// decrypted here, download, upload (a new file, or a new version of one already there), share,
// delete into the trash and restore from it, list and restore versions, rename and move.
//
// The master key lives in this page's memory only: never in storage, never sent anywhere.
// Writes use the vault's compare-and-set (POST /v1/vault/objects with if_counter), exactly
// as the CLI's sync, with the objects it writes for the same change (vaultops.js), so a
// `bitcache sync` on any device applies what was done here to its folder.
//
// Deleting for good (emptying the trash) is not done here: freeing the chunks of deleted files
// is the CLI's garbage collection, which must see the whole tree and its deletion log.

import { ApiError, call, callJson, getApiKey, setApiKey, sleep } from "./api.js";
import { FileDecryptor, FileEncryptor, MIN_CHUNK_SIZE, b64urlDecode, b64urlEncode, ctEqual, encodeFileId, parseShareLink, ready } from "./format.js";
import { FOLDER_MEDIA_TYPE, buildFolderLink, folderManifestToPlaintext } from "./folder.js";
import { login } from "./login.js";
import { appRoot, copyButton, el, errorText, formatBytes, qrCanvas, setStatus, statusLine } from "./ui.js";
import { putChunk, safeName, shareBase, uploadFile } from "./uploader.js";
import { planDelete, planNewFolder, planRename, planRestore, planRestoreVersion, planUpload, trashList, treeOf, versionBody } from "./vaultops.js";
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
  newMasterKey,
  openChunkPlaintext,
  openObject,
  sealObject,
  unwrapWithPassword,
  wrapWithPassword,
} from "./vault.js";

const DEVICE = "web";
const WRITE_ATTEMPTS = 5;
// Objects per POST /v1/vault/objects, as the CLI (client/sync/vault.py WRITE_BATCH_OBJECTS).
const WRITE_BATCH_OBJECTS = 500;
const LONG_POLL_S = 25;

// The unlocked vault (memory only) and what the page shows.
const vault = {
  apiKey: "",
  account: "",
  keys: null,
  counter: 0,
  keepVersions: 10, // the tenant's keep_versions (GET /v1/vault)
  entries: new Map(), // object id → entry (live and trash)
  dir: "", // the folder shown, "" for the top
  panel: null, // {kind: "versions", oid} | {kind: "rename", path} | {kind: "trash"} | null
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
 * A version of a file, chunk by chunk in order (4 fetched ahead), to `write(data)`.
 * Memory stays at a few chunks whatever the file's size when `write` goes to disk.
 */
async function fetchInto(version, write, onProgress = () => {}) {
  const refs = version.chunks;
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
    onProgress(done, version.size);
  }
}

/** A version of a file as a Blob (in memory: for sharing, and small downloads). */
async function fetchFile(version, onProgress = () => {}) {
  const parts = [];
  await fetchInto(version, (data) => parts.push(data), onProgress);
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

/**
 * Makes sure the chunk file of the chunk with this MAC is stored (idempotent: the same chunk
 * gives the same bytes). Its header and manifest need only the MAC and length, so a chunk
 * the gateway holds costs one request and `readData` is called only for one it lacks.
 */
async function ensureChunk(mac, length, readData) {
  const cf = await chunkFile(vault.keys, mac);
  const size = chunkFileSize(length);
  const enc = await FileEncryptor.create(cf.key, cf.fileId, size, Math.max(MIN_CHUNK_SIZE, size), CHUNK_FILE_FORMAT_VERSION);
  const manifest = enc.sealManifest(chunkManifest(size), await chunkManifestNonce(cf));
  const fid = encodeFileId(cf.fileId);
  const state = await callJson("/v1/files", {
    method: "POST",
    json: { header: enc.headerJson(), manifest: b64urlEncode(manifest) },
    apiKey: vault.apiKey,
    ok: [200, 201],
    retries: 2,
  });
  if (state.state === "complete") return;
  if (Array.isArray(state.missing) && state.missing.length) {
    const data = await readData();
    await putChunk(fid, 0, enc.seal(0, chunkFilePlaintext(data)), vault.apiKey);
  }
  await call(`/v1/files/${fid}/complete`, { method: "POST", apiKey: vault.apiKey, ok: [200], retries: 2 });
}

// --- writing the tree --------------------------------------------------------------------------------

/**
 * Writes what `makePlan(tree)` decides (object id → body) at the vault's counter; on a
 * conflict re-reads the changes and plans again on the new tree (which may refuse, or find
 * nothing left to do). `prepare(counter)` runs before each attempt, after the counter it
 * writes at was read. Returns false if there was nothing to write.
 */
async function writeObjects(makePlan, prepare = async () => {}) {
  for (let attempt = 0; attempt < WRITE_ATTEMPTS; attempt++) {
    let counter = vault.counter;
    const writes = makePlan(treeOf(vault.entries));
    if (!writes) return false;
    await prepare(counter);
    const items = [...writes];
    let moved = false;
    for (let i = 0; i < items.length && !moved; i += WRITE_BATCH_OBJECTS) {
      const put = [];
      for (const [oid, body] of items.slice(i, i + WRITE_BATCH_OBJECTS)) {
        const sealed = await sealObject(vault.keys, vault.account, oid, { ...body, counter: counter + 1 });
        put.push({ id: oid, data: b64urlEncode(sealed) });
      }
      const resp = await call("/v1/vault/objects", {
        method: "POST",
        json: { if_counter: counter, put, delete: [] },
        apiKey: vault.apiKey,
        ok: [200, 409],
        retries: 1,
      });
      if (resp.status === 409) moved = true; // another device got there first
      else counter = Number((await resp.json()).counter);
    }
    await pull();
    if (!moved) return true;
  }
  throw new Error("the vault kept changing under this change; try again");
}

const nowSeconds = () => Math.floor(Date.now() / 1000);

/** Reads chunk `i` of `file` (the page's fixed 1 MiB cut), checking it has not changed. */
async function readChunk(file, i) {
  const start = i * WEB_CHUNK_SIZE;
  const data = new Uint8Array(await file.slice(start, Math.min(file.size, start + WEB_CHUNK_SIZE)).arrayBuffer());
  if (data.length !== Math.min(WEB_CHUNK_SIZE, file.size - start)) throw new Error(`${file.name} changed while it was being read`);
  return data;
}

/**
 * Encrypts `file` here and puts it in the vault at `dir`/name: a new object, or a new
 * version of the file already there (the tenant's keep_versions kept, as the CLI).
 * Returns "new", "version" or "unchanged".
 */
async function uploadIntoVault(file, dir, onProgress) {
  const name = safeName(file.name);
  const path = checkPath(dir ? `${dir}/${name}` : name);
  const existing = entryAt(path);
  if (existing && existing[1].kind === "dir") throw new Error(`“${path}” is a folder in the vault`);
  // Read after the counter the first write names: chunks stored now exist at that counter.
  let storedAt = vault.counter;
  // Chunk files are stored 3 at a time; the refs keep file order.
  const count = Math.ceil(file.size / WEB_CHUNK_SIZE);
  const chunks = new Array(count);
  let next = 0;
  let done = 0;
  const worker = async () => {
    while (next < count) {
      const i = next++;
      const data = await readChunk(file, i);
      const mac = await chunkMac(vault.keys, data);
      await ensureChunk(mac, data.length, async () => data);
      chunks[i] = [mac, data.length];
      done += data.length;
      onProgress(done, file.size);
    }
  };
  await Promise.all(Array.from({ length: Math.min(3, count) }, worker));
  const version = versionBody({
    size: file.size,
    mtimeNs: BigInt(Math.max(0, Math.floor(Number(file.lastModified) || Date.now()))) * 1_000_000n,
    time: nowSeconds(),
    device: DEVICE,
    chunks,
  });
  // If the vault moved on since the chunks were stored, check them again before naming them:
  // the CLI's garbage collection deletes chunk files no object names, by compare-and-set, so
  // a chunk confirmed after reading counter C is still there when a write at C is accepted.
  const prepare = async (counter) => {
    if (counter === storedAt) return;
    for (const [i, [mac, length]] of chunks.entries()) {
      await ensureChunk(mac, length, async () => {
        const data = await readChunk(file, i);
        if (!ctEqual(await chunkMac(vault.keys, data), mac)) throw new Error(`${file.name} changed while it was being uploaded`);
        return data;
      });
    }
    storedAt = counter;
  };
  let kind = "unchanged";
  const wrote = await writeObjects((tree) => {
    const plan = planUpload(tree, path, version, vault.keepVersions);
    const live = entryAt(path);
    kind = live ? "version" : "new";
    return plan;
  }, prepare);
  return { path, kind: wrote ? kind : "unchanged" };
}

// --- sharing ---------------------------------------------------------------------------------------

function baseName(path) {
  return path.slice(path.lastIndexOf("/") + 1);
}

/** A paid share link for a vault file: its bytes, uploaded again under a fresh key (as the CLI). */
async function shareFile(entry, onProgress) {
  const blob = await fetchFile(entry.current);
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

/** Saves one version of a file (the current one by default). */
function download(entry, version = entry.current) {
  const name = baseName(entry.path);
  const what = version === entry.current ? `“${entry.path}”` : `version ${version.n} of “${entry.path}”`;
  return runBusy(`Downloading ${what}…`, async () => {
    const progress = (done, total) => setStatus(`Downloading and decrypting ${what}: ${formatBytes(done)} of ${formatBytes(total)}`, "busy");
    const disk = await diskWriter(name, version.size);
    if (disk) {
      try {
        await fetchInto(version, (data) => disk.write(data), progress);
        await disk.close();
      } catch (err) {
        await disk.abort().catch(() => {});
        throw err;
      }
    } else {
      const blob = await fetchFile(version, progress);
      debug.lastSavedBlob = blob;
      const a = el("a", { href: URL.createObjectURL(blob), download: name, hidden: true });
      document.body.append(a);
      a.click();
      a.remove();
    }
    setStatus(`Downloaded ${what} (${formatBytes(version.size)}), verified and decrypted in this page. Free: it is yours.`, "ok");
  });
}

/** One change to the tree (vaultops.js plan), written with the compare-and-set. */
function change(label, makePlan, done) {
  return runBusy(label, async () => {
    const wrote = await writeObjects((tree) => makePlan(tree));
    setStatus(wrote ? done : "Nothing to change.", "ok");
  });
}

function removePath(path, isDir) {
  return change(`Moving ${path} to the trash…`, (tree) => planDelete(tree, path, nowSeconds()), `Moved “${path}”${isDir ? " and everything in it" : ""} to the trash.`);
}

function rename(from, to) {
  return change(`Renaming ${from}…`, (tree) => planRename(tree, from, to, nowSeconds()), `Renamed “${from}” to “${to}”.`).then(() => {
    if (document.getElementById("app")?.dataset.state === "ready") {
      if (vault.panel?.kind === "rename") vault.panel = null;
      render();
    }
  });
}

function restoreFromTrash(oid) {
  const entry = vault.entries.get(oid);
  const path = entry?.path ?? "";
  return change(`Restoring ${path}…`, (tree) => planRestore(tree, oid, vault.keepVersions, nowSeconds()), `Restored “${path}” from the trash.`);
}

function restoreVersion(oid, n) {
  const path = vault.entries.get(oid)?.path ?? "";
  return change(`Restoring version ${n} of ${path}…`, (tree) => planRestoreVersion(tree, oid, n, vault.keepVersions, nowSeconds()), `Version ${n} of “${path}” is current again (as the newest version).`);
}

function newFolder(name) {
  const path = vault.dir ? `${vault.dir}/${name}` : name;
  return change(`Making folder ${path}…`, (tree) => planNewFolder(tree, path), `Made folder “${path}”.`);
}

function row(cells, props = {}) {
  return el("tr", props, ...cells.map((c) => el("td", {}, c)));
}

function button(text, attrs, onClick, kind = "secondary") {
  return el("button", { type: "button", class: kind, text, disabled: vault.busy, ...attrs, on: { click: onClick } });
}

function openPanel(panel) {
  vault.panel = panel;
  render();
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
          el(
            "span",
            { class: "row" },
            button("Share", { "data-share": target }, () => share(target, true)),
            button("Rename", { "data-rename": target }, () => openPanel({ kind: "rename", path: target })),
            button("Delete", { "data-delete": target }, () => removePath(target, true)),
          ),
        ],
        { "data-kind": "dir", "data-path": target },
      ),
    );
  }
  for (const f of files) {
    const v = f.entry.current;
    const path = f.entry.path;
    rows.push(
      row(
        [
          el("span", { class: "name", text: f.name }),
          v ? formatBytes(v.size) : "",
          v ? formatTime(v.mtimeMs) : "",
          el(
            "span",
            { class: "row" },
            button("Download", { "data-download": path, disabled: vault.busy || !v }, () => download(f.entry)),
            button("Share", { "data-share": path, disabled: vault.busy || !v }, () => share(path, false)),
            button(`Versions (${f.entry.versions.length})`, { "data-versions": path }, () => openPanel({ kind: "versions", oid: f.oid })),
            button("Rename", { "data-rename": path }, () => openPanel({ kind: "rename", path })),
            button("Delete", { "data-delete": path }, () => removePath(path, false)),
          ),
        ],
        { "data-kind": "file", "data-path": path, testid: "vault-file" },
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
    ...(rows.length === 0 ? [el("p", { class: "muted", text: "This folder is empty." })] : []),
  );
  for (const id of ["vault-upload-button", "vault-new-folder", "vault-trash-button"]) {
    const b = document.getElementById(id);
    if (b) b.disabled = vault.busy;
  }
  const trashButton = document.getElementById("vault-trash-button");
  if (trashButton) trashButton.textContent = `Trash (${trashList(vault.entries).length})`;
  renderPanel();
  document.getElementById("app").dataset.dir = vault.dir;
  document.getElementById("app").dataset.counter = String(vault.counter);
}

/** The side panel: a file's versions, the rename form, or the trash. */
function renderPanel() {
  const out = document.getElementById("vault-panel");
  if (!out) return;
  const panel = vault.panel;
  if (!panel) {
    out.replaceChildren();
    out.hidden = true;
    return;
  }
  out.hidden = false;
  const close = button("Close", { id: "vault-panel-close" }, () => openPanel(null));
  if (panel.kind === "rename") {
    // Left as it is while open: a change arriving from another device must not reset what
    // the user is typing.
    if (document.getElementById("vault-rename")?.dataset.path === panel.path) {
      for (const b of out.querySelectorAll("button")) b.disabled = vault.busy;
      return;
    }
    const input = el("input", { id: "vault-rename-input", type: "text", value: panel.path, spellcheck: "false", testid: "vault-rename-input" });
    const submit = (e) => {
      e.preventDefault();
      rename(panel.path, input.value.trim().replace(/^\/+|\/+$/g, ""));
    };
    out.replaceChildren(
      el(
        "form",
        { id: "vault-rename", "data-path": panel.path, on: { submit } },
        el("h3", { text: `Rename or move “${panel.path}”` }),
        el("label", { for: "vault-rename-input", text: "New path in the vault (folders separated by /)" }),
        input,
        el("div", { class: "row" }, el("button", { type: "submit", id: "vault-rename-apply", class: "primary", text: "Rename", disabled: vault.busy }), close),
      ),
    );
    return;
  }
  if (panel.kind === "versions") {
    const entry = vault.entries.get(panel.oid);
    if (!entry || entry.deleted !== null) {
      out.replaceChildren(el("p", { class: "muted", text: "That file is no longer in the vault (see the trash)." }), close);
      return;
    }
    const rows = [...entry.versions].reverse().map((v) =>
      row(
        [
          `Version ${v.n}${v === entry.current ? " (current)" : ""}`,
          formatBytes(v.size),
          formatTime(v.mtimeMs),
          formatTime(v.time * 1000),
          v.device,
          el(
            "span",
            { class: "row" },
            button("Download", { "data-download-version": String(v.n) }, () => download(entry, v)),
            v === entry.current ? null : button("Restore", { "data-restore-version": String(v.n) }, () => restoreVersion(panel.oid, v.n)),
          ),
        ],
        { "data-version": String(v.n) },
      ),
    );
    out.replaceChildren(
      el("h3", { text: `Versions of “${entry.path}”` }),
      el(
        "table",
        { id: "vault-versions", class: "listing", "data-path": entry.path },
        el("thead", {}, el("tr", {}, ...["Version", "Size", "Modified", "Saved", "From", ""].map((t) => el("th", { text: t })))),
        el("tbody", {}, ...rows),
      ),
      el("p", { class: "muted", text: `The vault keeps the last ${vault.keepVersions} versions of a file. Restoring one makes a copy of it the newest version; nothing is lost.` }),
      close,
    );
    return;
  }
  const items = trashList(vault.entries);
  const rows = items.map(({ oid, entry }) =>
    row(
      [
        entry.kind === "dir" ? `${entry.path}/` : entry.path,
        entry.kind === "dir" ? "folder" : entry.current ? formatBytes(entry.current.size) : "",
        formatTime(entry.deleted * 1000),
        button("Restore", { "data-restore": oid }, () => restoreFromTrash(oid)),
      ],
      { "data-trash-id": oid, "data-path": entry.path, "data-kind": entry.kind },
    ),
  );
  out.replaceChildren(
    el("h3", { text: "Trash" }),
    items.length
      ? el(
          "table",
          { id: "vault-trash", class: "listing" },
          el("thead", {}, el("tr", {}, ...["Path", "Size", "Deleted", ""].map((t) => el("th", { text: t })))),
          el("tbody", {}, ...rows),
        )
      : el("p", { id: "vault-trash", class: "muted", text: "The trash is empty." }),
    el("p", {
      class: "muted",
      id: "vault-trash-note",
      text: "Deleting for good is not done in this page: emptying the trash also frees the stored chunks of deleted files, which is left to `bitcache` on a computer (its garbage collection sees the whole vault and its deletion log). Until then a deleted file still counts against your quota.",
    }),
    close,
  );
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
  const upload = el("button", { type: "button", id: "vault-upload-button", class: "primary", text: "Upload into this folder", testid: "vault-upload-button" });
  upload.addEventListener("click", () => {
    const files = [...(input.files ?? [])];
    if (!files.length) {
      setStatus("Choose a file first.", "info");
      return;
    }
    runBusy("Encrypting and uploading…", async () => {
      const said = [];
      for (const file of files) {
        const { path, kind } = await uploadIntoVault(file, vault.dir, (done, total) =>
          setStatus(`Encrypting and uploading ${file.name}: ${formatBytes(done)} of ${formatBytes(total)}`, "busy"),
        );
        said.push(kind === "new" ? `Uploaded “${path}” into the vault.` : kind === "version" ? `Uploaded a new version of “${path}”.` : `“${path}” is unchanged (same content).`);
      }
      setStatus(said.join(" "), "ok");
      input.value = "";
    });
  });
  const folderName = el("input", { type: "text", id: "vault-new-folder-name", placeholder: "New folder", spellcheck: "false", testid: "vault-new-folder-name" });
  const makeFolder = el("button", { type: "button", id: "vault-new-folder", class: "secondary", text: "New folder" });
  makeFolder.addEventListener("click", () => {
    const name = folderName.value.trim();
    if (!name) return setStatus("Type the new folder's name first.", "info");
    newFolder(name).then(() => {
      folderName.value = "";
    });
  });
  const trash = el("button", { type: "button", id: "vault-trash-button", class: "secondary", text: "Trash", on: { click: () => openPanel(vault.panel?.kind === "trash" ? null : { kind: "trash" }) } });
  const lock = el("button", { type: "button", id: "vault-lock", class: "secondary", text: "Lock", on: { click: lockVault } });
  app.replaceChildren(
    el(
      "section",
      { class: "card", id: "vault-card" },
      el("div", { class: "row" }, el("h2", { text: "Your vault" }), trash, lock),
      el("p", { class: "muted", text: "Decrypted in this page with a key only your password opens; the server stores ciphertext only." }),
      el("div", { id: "vault-tree" }),
      el("div", { class: "row" }, input, upload),
      el("div", { class: "row" }, folderName, makeFolder),
      statusLine(),
      el("div", { id: "vault-panel", class: "notice", hidden: true }),
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
  vault.panel = null;
  lockedView(appRoot());
}

/** Logs in; returns "open" once the vault is unlocked, "none" if the account has no vault. */
async function unlock(username, password) {
  await ready;
  setStatus("Logging in… (deriving your login key takes a moment)", "busy");
  const result = await login(username, password);
  vault.apiKey = String(result.api_key);
  setApiKey(vault.apiKey);
  const info = await callJson("/v1/vault", { apiKey: vault.apiKey, retries: 2 });
  vault.account = String(info.account_id);
  vault.keepVersions = Number.isSafeInteger(info.keep_versions) && info.keep_versions > 0 ? info.keep_versions : 10;
  const names = Array.isArray(info.keys) ? info.keys : [];
  if (!names.includes("password")) {
    // A vault without a password wrap (or with objects but no key) is not ours to replace:
    // a second master key would make its objects unreadable.
    if (names.length || Number(info.counter) > 0) {
      throw new Error("This vault has no password key here: unlock it on a computer with `bitcache vault unlock --link CODE`.");
    }
    return "none";
  }
  await openWithPassword(password);
  return "open";
}

async function openWithPassword(password) {
  setStatus("Unlocking the vault… (deriving your vault key takes a moment)", "busy");
  const reply = await callJson("/v1/vault/keys/password", { apiKey: vault.apiKey, retries: 2 });
  const master = await unwrapWithPassword(reply.wrapped, password, vault.account);
  vault.keys = await deriveVaultKeys(master);
  master.fill(0);
  await readTree();
}

async function readTree() {
  vault.counter = 0;
  vault.entries.clear();
  setStatus("Reading the vault…", "busy");
  await pull();
}

/**
 * Creates the account's vault as `bitcache vault init` does (client/sync/vault.py): the
 * master key made here, only its password wrap (§14.3, the CLI's cost) sent, create-only.
 * If another device created one meanwhile, that one is opened instead. Returns true if
 * this page made it.
 */
async function createVault(password) {
  setStatus("Creating your vault… (deriving the key that wraps it takes a moment)", "busy");
  const master = newMasterKey();
  try {
    const wrapped = await wrapWithPassword(master, password, vault.account);
    const resp = await call("/v1/vault/keys/password", {
      method: "PUT",
      json: { wrapped, create_only: true },
      apiKey: vault.apiKey,
      ok: [201, 409],
      retries: 1,
    });
    if (resp.status === 409) {
      await openWithPassword(password);
      return false;
    }
    vault.keys = await deriveVaultKeys(master);
  } finally {
    master.fill(0);
  }
  await readTree();
  return true;
}

function opened(app, text) {
  unlockedView(app);
  setState("ready");
  setStatus(text, "ok");
  watchChanges(++vault.generation);
}

/** The account has no vault yet: offer to create it (the password stays in this closure). */
function noVaultView(app, password) {
  let secret = password;
  const create = el("button", { type: "button", id: "vault-create", class: "primary", text: "Create my vault", testid: "vault-create" });
  const cancel = el("button", { type: "button", id: "vault-lock", class: "secondary", text: "Cancel" });
  create.addEventListener("click", async () => {
    create.disabled = true;
    cancel.disabled = true;
    setState("creating");
    try {
      const made = await createVault(secret);
      secret = "";
      opened(app, made ? "Your vault is created and unlocked. `bitcache login` with the same password opens it on a computer." : `Unlocked: ${live().length} items.`);
    } catch (err) {
      setState("no-vault");
      setStatus(errorText(err), "error");
      create.disabled = false;
      cancel.disabled = false;
    }
  });
  cancel.addEventListener("click", () => {
    secret = "";
    lockVault();
  });
  app.replaceChildren(
    el(
      "section",
      { class: "card", id: "vault-none" },
      el("h2", { text: "You have no vault yet" }),
      el("p", {
        text: "A vault keeps your files by name, in folders, with their versions, on every device you log in on. Its key is made in this page and stored only locked by your password: the server never sees it, and nobody can open it without your password (so keep it safe: a forgotten password cannot be reset for the vault).",
      }),
      el("div", { class: "row" }, create, cancel),
      statusLine(),
    ),
  );
  setState("no-vault");
  setStatus("Create the vault to start, or sync a folder with `bitcache sync` after `bitcache vault init`.", "info");
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
      const secret = password.value;
      const found = await unlock(username.value.trim(), secret);
      password.value = "";
      if (found === "none") noVaultView(app, secret);
      else opened(app, `Unlocked: ${live().length} items.`);
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
