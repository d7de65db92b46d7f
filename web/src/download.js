// The download page at a share link `/f/<id>#<key>`. The key is read from location.hash and
// never leaves this page: the gateway gets file ids, macaroons and preimages only. The key
// commitment is checked before anything is paid; every chunk is authenticated on the way in.

import { ApiError, apiBase, call, callJson, jsonOrNull, problemMessage, sleep } from "./api.js";
import { invoiceAmountMsat } from "./bolt11.js";
import { ChunkAuthError, FileDecryptor, FormatError, WrongKeyError, decodeFileId, decodeKey, encodeFileId, ready } from "./format.js";
import { FOLDER_MEDIA_TYPE, MAX_FOLDER_MANIFEST_BYTES, folderKeyFromFragment, folderManifestFromPlaintext } from "./folder.js";
import {
  appRoot,
  el,
  errorText,
  formatBytes,
  formatSats,
  hasWebln,
  invoicePanel,
  payWithWebln,
  setStatus,
  statusLine,
} from "./ui.js";

const IN_FLIGHT = 4;
const CHUNK_RETRIES = 5;
const POLL_INTERVAL_MS = 1000;
const POLL_LIMIT_MS = 60 * 60 * 1000;

// For automated tests: the saved Blob (Blob path only) and the page's state.
const debug = { lastSavedBlob: null, saved: {}, state: "loading" };
if (typeof window !== "undefined") window.__bitcache = debug;

function setState(state) {
  debug.state = state;
  const app = document.getElementById("app");
  if (app) app.dataset.state = state;
}

// --- reading the link --------------------------------------------------------------------------

function isFolderPage() {
  return /\/d\/[^/?#]+\/?$/.test(window.location.pathname);
}

function fileIdFromPage() {
  const fromData = document.getElementById("app")?.dataset.fileId;
  const match = /\/[fd]\/([^/?#]+)\/?$/.exec(window.location.pathname);
  const text = fromData || (match ? match[1] : "");
  try {
    decodeFileId(text);
  } catch {
    throw new FormatError("This page's address does not contain a valid file id.");
  }
  return text;
}

function keyFromFragment() {
  const fragment = window.location.hash.slice(1);
  if (isFolderPage()) {
    try {
      return folderKeyFromFragment(fragment);
    } catch (err) {
      // Never echo the key text (the folder parser does not).
      throw new FormatError(`This folder link is malformed (${err.message}); it was probably cut off or altered when it was copied.`);
    }
  }
  if (!fragment) {
    throw new FormatError(
      "This link has no key (the part after “#” is missing); it was probably cut off when it was copied. Ask the sender for the whole link.",
    );
  }
  try {
    return decodeKey(fragment);
  } catch {
    // Never echo the key text.
    throw new FormatError("The key in this link is malformed; it was probably cut off or altered when it was copied.");
  }
}

// --- saving ------------------------------------------------------------------------------------

function canStreamToDisk() {
  return typeof window.showSaveFilePicker === "function" && window.isSecureContext;
}

/** Where the plaintext goes: a file on disk (File System Access API) or an in-memory Blob. */
async function openSink(name, stream) {
  if (stream && canStreamToDisk()) {
    let handle = null;
    try {
      handle = await window.showSaveFilePicker({ suggestedName: name });
    } catch (err) {
      if (err?.name === "AbortError") throw err; // the user closed the dialog
      handle = null; // e.g. SecurityError: fall back to the Blob
    }
    if (handle) {
      const writable = await handle.createWritable();
      return {
        kind: "file",
        write: (data) => writable.write(data),
        close: async () => {
          await writable.close();
          return null;
        },
        abort: () => writable.abort().catch(() => {}),
      };
    }
  }
  let parts = [];
  return {
    kind: "blob",
    write: (data) => {
      parts.push(data);
    },
    // application/octet-stream whatever the manifest says: a blob: URL has this page's origin,
    // and must never be rendered as HTML here.
    close: async () => {
      const blob = new Blob(parts, { type: "application/octet-stream" });
      parts = [];
      return blob;
    },
    abort: () => {
      parts = [];
    },
  };
}

// --- page --------------------------------------------------------------------------------------

function fact(label, value, id) {
  return [el("dt", { text: label }), el("dd", { id, text: value })];
}

function errorCard(message) {
  const what = isFolderPage() ? "folder" : "file";
  return el("section", { class: "card" }, el("h2", { text: `Cannot open this ${what}` }), el("p", { id: "error", class: "error", text: message }), statusLine());
}

async function loadFile(idText, key) {
  await ready;
  const state = await callJson(`/v1/files/${idText}`, { retries: 2 });
  if (!state || typeof state !== "object" || state.file_id !== idText || state.header?.file_id !== idText) {
    throw new FormatError("The gateway answered for another file.");
  }
  const dec = await FileDecryptor.create(key, state.header); // WrongKeyError before any payment
  if (state.chunk_count !== dec.chunkCount) throw new FormatError("The gateway's chunk count does not match the file header.");
  if (!Number.isSafeInteger(state.price_msat) || state.price_msat < 0) throw new FormatError("The gateway sent a malformed price.");
  const manifest = dec.openManifest(state.manifest);
  return { state, dec, manifest };
}

class Download {
  constructor(idText, info) {
    this.idText = idText;
    this.dec = info.dec;
    this.manifest = info.manifest;
    this.price = info.state.price_msat;
    this.count = info.dec.chunkCount;
    this.tokens = new Map(); // first index → {count, token}: paid ranges, reused on retry
    this.controller = null;
  }

  chunkUrl(index, count = undefined) {
    const q = count === undefined ? "" : `?count=${count}`;
    return `${apiBase()}/v1/files/${this.idText}/chunks/${index}${q}`;
  }

  /** The 402 challenge for chunks first…first+want−1, checked before anything is paid. */
  async challenge(first, want) {
    const resp = await call(`/v1/files/${this.idText}/chunks/${first}?count=${want}`, { ok: [200, 402], retries: 2, signal: this.controller.signal });
    if (resp.status === 200) {
      await resp.body?.cancel();
      return null; // free after all
    }
    const c = await jsonOrNull(resp);
    const isInt = (v) => Number.isSafeInteger(v) && v >= 0;
    if (!c || typeof c.invoice !== "string" || typeof c.macaroon !== "string" || !isInt(c.amount_msat) || !isInt(c.count) || !isInt(c.first)) {
      throw new Error(problemMessage(402, c) || "The gateway's payment request is malformed.");
    }
    if (c.first !== first || c.count < 1 || c.count > want) throw new Error("The gateway offered another range of chunks than requested; not paying.");
    if (Number.isSafeInteger(c.price_msat) && c.price_msat !== this.price) {
      throw new Error(`The price changed from ${formatSats(this.price)} to ${formatSats(c.price_msat)} per chunk; reload the page to see the new price. Nothing was paid.`);
    }
    const expected = BigInt(this.price) * BigInt(c.count);
    if (BigInt(c.amount_msat) !== expected) {
      throw new Error(`The gateway asks ${formatSats(c.amount_msat)} for ${c.count} chunks instead of ${formatSats(expected)}; not paying.`);
    }
    let invoiceMsat;
    try {
      invoiceMsat = invoiceAmountMsat(c.invoice);
    } catch (err) {
      throw new Error(`The gateway's invoice is malformed (${err.message}); not paying.`);
    }
    if (invoiceMsat === null || BigInt(invoiceMsat) !== expected) {
      throw new Error("The invoice's amount differs from the announced price; not paying.");
    }
    return c;
  }

  /** Waits for the preimage: from a WebLN wallet, or polled from the gateway after a QR payment. */
  async preimage(c, where) {
    const signal = this.controller.signal;
    const panel = invoicePanel(c.invoice, `Pay ${formatSats(c.amount_msat)} for ${c.count === this.count ? "the whole file" : `chunks ${c.first + 1}–${c.first + c.count} of ${this.count}`}`, () =>
      this.controller.abort(),
    );
    where.replaceChildren(panel);
    setState("awaiting-payment");
    const attempts = [this.pollPreimage(c.macaroon, signal)];
    if (hasWebln()) {
      setStatus("Confirm the payment in your wallet, or scan the QR code with a phone wallet.", "busy");
      attempts.push(
        payWithWebln(c.invoice).catch((err) => {
          setStatus(`Wallet: ${errorText(err)}. You can still pay by scanning the QR code.`, "info");
          throw err;
        }),
      );
    } else {
      setStatus("Scan the QR code with a Lightning wallet, or copy the invoice. Waiting for the payment…", "busy");
    }
    const cancelled = new Promise((_, reject) => {
      const fail = () => reject(new DOMException("Payment cancelled.", "AbortError"));
      if (signal.aborted) fail();
      signal.addEventListener("abort", fail, { once: true });
    });
    cancelled.catch(() => {});
    try {
      return await Promise.race([
        Promise.any(attempts).catch((agg) => {
          throw agg.errors?.[0] ?? agg;
        }),
        cancelled,
      ]);
    } finally {
      where.replaceChildren();
    }
  }

  async pollPreimage(macaroon, signal) {
    const deadline = Date.now() + POLL_LIMIT_MS;
    while (Date.now() < deadline) {
      let resp = null;
      try {
        resp = await fetch(`${apiBase()}/v1/l402/preimage`, {
          method: "POST",
          headers: { "Content-Type": "application/json", Accept: "application/json, application/problem+json" },
          body: JSON.stringify({ macaroon }),
          signal,
          cache: "no-store",
        });
      } catch (err) {
        if (signal.aborted) throw err;
      }
      if (resp?.status === 200) {
        const body = await jsonOrNull(resp);
        const preimage = String(body?.preimage ?? "").toLowerCase();
        if (/^[0-9a-f]{64}$/.test(preimage)) return preimage;
        throw new Error("The gateway returned a malformed preimage.");
      }
      if (resp && resp.status !== 202 && resp.status !== 429 && resp.status < 500) {
        const body = await jsonOrNull(resp);
        throw new ApiError(resp.status, problemMessage(resp.status, body), body);
      }
      await sleep(POLL_INTERVAL_MS, signal);
    }
    throw new Error("No payment arrived within an hour; the invoice has probably expired. Try again.");
  }

  async fetchChunk(index, token, signal) {
    const headers = token ? { Authorization: token } : {};
    for (let attempt = 0; ; attempt++) {
      let resp = null;
      try {
        resp = await fetch(this.chunkUrl(index), { headers, signal });
      } catch (err) {
        if (signal.aborted || attempt >= CHUNK_RETRIES) throw signal.aborted ? err : new ApiError(0, problemMessage(0, null));
      }
      if (resp?.ok) {
        const sealed = new Uint8Array(await resp.arrayBuffer());
        try {
          return this.dec.open(index, sealed);
        } catch (err) {
          if (err instanceof ChunkAuthError) {
            throw new ChunkAuthError(`Chunk ${index + 1} of ${this.count} failed verification: the gateway served damaged or tampered data. Nothing was saved.`);
          }
          throw err;
        }
      }
      if (resp && !(resp.status === 429 || resp.status >= 500)) {
        const body = await jsonOrNull(resp);
        throw new ApiError(resp.status, problemMessage(resp.status, body), body);
      }
      if (attempt >= CHUNK_RETRIES) {
        const body = resp ? await jsonOrNull(resp) : null;
        throw new ApiError(resp?.status ?? 0, problemMessage(resp?.status ?? 0, body), body);
      }
      await sleep(Math.min(500 * 2 ** attempt, 8000), signal);
    }
  }

  /** Fetches chunks first…first+count−1, 4 in flight, and writes them to the sink in order. */
  async fetchRange(first, count, token, sink, progress) {
    const signal = this.controller.signal;
    const end = first + count;
    const pending = new Map();
    let next = first;
    for (let i = first; i < end; i++) {
      while (next < end && next < i + IN_FLIGHT) {
        const p = this.fetchChunk(next, token, signal);
        p.catch(() => {}); // awaited below, in order
        pending.set(next, p);
        next++;
      }
      const plaintext = await pending.get(i);
      pending.delete(i);
      await sink.write(plaintext);
      progress(i + 1, plaintext.length);
    }
  }

  async run(sink, payment, progress) {
    this.controller = new AbortController();
    try {
      if (this.price === 0) {
        setState("downloading");
        await this.fetchRange(0, this.count, null, sink, progress);
        return;
      }
      let first = 0;
      while (first < this.count) {
        let paid = this.tokens.get(first);
        if (!paid) {
          setState("requesting-invoice");
          setStatus("Asking the gateway for an invoice…", "busy");
          const c = await this.challenge(first, this.count - first);
          if (c === null) {
            paid = { count: this.count - first, token: null };
          } else {
            const preimage = await this.preimage(c, payment);
            paid = { count: c.count, token: `L402 ${c.macaroon}:${preimage}` };
            this.tokens.set(first, paid);
          }
        }
        setState("downloading");
        try {
          await this.fetchRange(first, paid.count, paid.token, sink, progress);
        } catch (err) {
          if (err instanceof ApiError && err.status === 402) this.tokens.delete(first); // expired or refused
          throw err;
        }
        first += paid.count;
      }
    } finally {
      this.controller.abort();
    }
  }
}

function renderFile(app, idText, info) {
  const { manifest, state } = info;
  const count = info.dec.chunkCount;
  const price = state.price_msat;
  const total = BigInt(price) * BigInt(count);
  const dl = new Download(idText, info);

  const stream = canStreamToDisk()
    ? el("input", { type: "checkbox", id: "stream-to-disk", checked: !navigator.webdriver })
    : null;
  const payButton = el("button", {
    id: "pay-button",
    type: "button",
    class: "primary big",
    testid: "pay-button",
    text: price === 0 ? "Download" : `Pay ${formatSats(total)} and download`,
  });
  const payment = el("div", { id: "payment" });
  const progress = el("progress", { id: "progress", max: count, value: 0, hidden: true, testid: "progress" });
  const saved = el("div", { id: "saved" });

  payButton.addEventListener("click", async () => {
    payButton.disabled = true;
    saved.replaceChildren();
    let sink = null;
    try {
      // First, while the click still counts as a user gesture: the save dialog.
      sink = await openSink(manifest.name, stream ? stream.checked : false);
      progress.hidden = false;
      progress.value = 0;
      let bytes = 0;
      await dl.run(sink, payment, (done, n) => {
        bytes += n;
        progress.value = done;
        setStatus(`Downloading and decrypting: ${done} of ${count} chunks (${formatBytes(bytes)} of ${formatBytes(manifest.size)})`, "busy");
      });
      setState("saving");
      const blob = await sink.close();
      if (blob) {
        debug.lastSavedBlob = blob;
        const url = URL.createObjectURL(blob);
        const link = el("a", { id: "save-link", class: "button secondary", href: url, download: manifest.name, text: `Save “${manifest.name}” again` });
        saved.replaceChildren(link);
        link.click();
      }
      setState("done");
      setStatus(`Saved “${manifest.name}” (${formatBytes(manifest.size)}). Every chunk was verified and decrypted in this page.`, "ok");
      payButton.textContent = "Download again";
    } catch (err) {
      await sink?.abort();
      setState("error");
      setStatus(errorText(err), "error");
    } finally {
      payButton.disabled = false;
    }
  });

  app.replaceChildren(
    el(
      "section",
      { class: "card", id: "file-card" },
      el("h2", { id: "file-name", class: "file-name", text: manifest.name, testid: "file-name" }),
      el(
        "dl",
        { class: "facts" },
        fact("Size", `${formatBytes(manifest.size)} (${manifest.size.toLocaleString("en-US")} bytes)`, "file-size"),
        fact("Type", manifest.media_type, "file-type"),
        manifest.modified !== null ? fact("Modified", new Date(manifest.modified * 1000).toLocaleString(), "file-modified") : [],
        fact(
          "Price",
          price === 0 ? "Free" : `${formatSats(total)} (${formatSats(price)} per chunk × ${count} chunk${count === 1 ? "" : "s"})`,
          "file-price",
        ),
      ),
      el("p", { class: "muted", text: "End-to-end encrypted: the key is in this link and never reaches the server. The file is decrypted only in this page, and the key was checked before any payment." }),
      stream ? el("label", { class: "check", for: "stream-to-disk" }, stream, " Save straight to disk (for large files)") : null,
      el("div", { class: "row" }, payButton),
      payment,
      progress,
      statusLine(),
      saved,
    ),
  );
  setState("ready");
  setStatus(
    price === 0 ? "Ready to download." : hasWebln() ? "Ready. Your browser wallet will ask to confirm the payment." : "Ready. You will get a Lightning invoice to pay with any wallet.",
    "info",
  );
}

function renderIncomplete(app, state, retry) {
  app.replaceChildren(
    el(
      "section",
      { class: "card" },
      el("h2", { text: "Still uploading" }),
      el("p", { text: `This file is still being uploaded (${state.chunks_present ?? "?"} of ${state.chunk_count ?? "?"} chunks). Try again in a moment.` }),
      el("div", { class: "row" }, el("button", { type: "button", id: "retry-button", class: "primary", text: "Check again", on: { click: retry } })),
      statusLine(),
    ),
  );
  setState("incomplete");
}

// --- a shared folder (format §16) ----------------------------------------------------------------

function baseName(path) {
  return path.slice(path.lastIndexOf("/") + 1);
}

/** The folder manifest: its file is free (price 0) and small; anything else is refused. */
async function loadFolder(idText, key, payment) {
  const info = await loadFile(idText, key);
  if (info.manifest.media_type !== FOLDER_MEDIA_TYPE) throw new FormatError("This link does not point at a shared folder.");
  if (info.state.state !== "complete") throw new FormatError("This folder is still being shared; try again in a moment.");
  if (info.manifest.size > MAX_FOLDER_MANIFEST_BYTES) throw new FormatError("This folder's list is too large.");
  const sink = await openSink("manifest", false);
  await new Download(idText, info).run(sink, payment, () => {});
  const blob = await sink.close();
  // Every path is checked here, before the page offers a single download.
  return folderManifestFromPlaintext(new Uint8Array(await blob.arrayBuffer()));
}

/** One file of the folder: its own paid download, exactly as through its own share link. */
async function downloadFolderFile(f, row, payment) {
  const idText = encodeFileId(f.fileId);
  const button = row.querySelector("button");
  button.disabled = true;
  row.dataset.state = "loading";
  let sink = null;
  try {
    const info = await loadFile(idText, f.key);
    if (info.manifest.size !== f.size) throw new FormatError(`“${f.path}” is not the size the folder's list says.`);
    const dl = new Download(idText, info);
    sink = await openSink(baseName(f.path), false);
    let bytes = 0;
    await dl.run(sink, payment, (done, n) => {
      bytes += n;
      row.dataset.state = "downloading";
      setStatus(`Downloading “${f.path}”: ${done} of ${dl.count} chunks (${formatBytes(bytes)} of ${formatBytes(f.size)})`, "busy");
    });
    const blob = await sink.close();
    debug.lastSavedBlob = blob;
    debug.saved[f.path] = blob;
    const link = el("a", { class: "button secondary", href: URL.createObjectURL(blob), download: baseName(f.path), text: "Save again" });
    row.querySelector(".saved").replaceChildren(link);
    link.click();
    row.dataset.state = "done";
    setStatus(`Saved “${f.path}” (${formatBytes(f.size)}), verified and decrypted in this page.`, "ok");
  } catch (err) {
    await sink?.abort();
    row.dataset.state = "error";
    throw err;
  } finally {
    button.disabled = false;
  }
}

function renderFolder(app, folder) {
  const payment = el("div", { id: "payment" });
  const files = [...folder.files].sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
  const total = files.reduce((n, f) => n + f.size, 0);
  const rows = files.map((f) => {
    const row = el(
      "tr",
      { "data-path": f.path, testid: "folder-file" },
      el("td", { class: "name", text: f.path }),
      el("td", { text: formatBytes(f.size) }),
      el("td", {}, el("button", { type: "button", class: "secondary", text: "Download" }), el("span", { class: "saved" })),
    );
    row.querySelector("button").addEventListener("click", async () => {
      try {
        await downloadFolderFile(f, row, payment);
      } catch (err) {
        setStatus(errorText(err), "error");
      }
    });
    return row;
  });
  const all = el("button", { type: "button", id: "download-all", class: "primary", text: `Download all ${files.length} files` });
  all.addEventListener("click", async () => {
    all.disabled = true;
    setState("downloading");
    try {
      for (const [i, f] of files.entries()) await downloadFolderFile(f, rows[i], payment);
      setState("done");
      setStatus(`Saved all ${files.length} files of “${folder.name}”.`, "ok");
    } catch (err) {
      setState("error");
      setStatus(errorText(err), "error");
    } finally {
      all.disabled = false;
    }
  });
  app.replaceChildren(
    el(
      "section",
      { class: "card", id: "folder-card" },
      el("h2", { id: "folder-name", class: "file-name", text: `${folder.name}/`, testid: "folder-name" }),
      el("p", { id: "folder-summary", text: `${files.length} file${files.length === 1 ? "" : "s"}, ${formatBytes(total)}. Each file is paid for chunk by chunk as you download it.` }),
      el("table", { id: "folder-list", class: "listing" }, el("tbody", {}, ...rows)),
      el("div", { class: "row" }, all),
      payment,
      statusLine(),
    ),
  );
  setState("folder-ready");
}

async function folderMain(app, idText, key) {
  const payment = el("div", { id: "payment" });
  app.replaceChildren(el("section", { class: "card" }, el("p", { class: "muted", text: "Opening the folder…" }), payment, statusLine()));
  try {
    renderFolder(app, await loadFolder(idText, key, payment));
  } catch (err) {
    let message = errorText(err);
    if (err instanceof WrongKeyError) {
      message = "This link's key does not match the folder: check that you copied the whole link. Nothing has been paid.";
      setState("wrong-key");
    } else {
      setState("error");
    }
    app.replaceChildren(errorCard(message));
  }
}

async function main() {
  const app = appRoot();
  app.dataset.page = "download";
  app.replaceChildren(el("section", { class: "card" }, el("p", { class: "muted", text: "Opening the file…" }), statusLine()));
  let idText;
  let key;
  try {
    idText = fileIdFromPage();
    key = keyFromFragment();
  } catch (err) {
    app.replaceChildren(errorCard(errorText(err)));
    setState("error");
    return;
  }
  if (isFolderPage()) {
    await folderMain(app, idText, key);
    return;
  }
  const load = async () => {
    setState("loading");
    try {
      const info = await loadFile(idText, key);
      if (info.state.state !== "complete") {
        renderIncomplete(app, info.state, load);
        return;
      }
      renderFile(app, idText, info);
    } catch (err) {
      let message = errorText(err);
      if (err instanceof WrongKeyError) {
        message = "This link's key does not match the file: check that you copied the whole link. Nothing has been paid.";
        setState("wrong-key");
      } else {
        setState("error");
      }
      app.replaceChildren(errorCard(message));
    }
  };
  await load();
}

if (typeof document !== "undefined") main();
