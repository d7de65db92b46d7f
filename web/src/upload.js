// The upload page (served at "/"): encrypt files in this page, chunk by chunk, and upload
// only ciphertext. The file key exists only here and in the share link's fragment.

import { getApiKey } from "./api.js";
import { ready } from "./format.js";
import { safeName, uploadFile } from "./uploader.js";
import { apiKeyPanel, appRoot, copyButton, el, errorText, formatBytes, qrCanvas, setStatus, statusLine } from "./ui.js";

export { safeName };

let busy = false;
let selected = [];

// --- page --------------------------------------------------------------------------------------

function resultCard(file, link) {
  // The newest result owns the stable id #share-link; older ones keep data-testid only.
  document.getElementById("share-link")?.removeAttribute("id");
  const output = el("input", {
    id: "share-link",
    class: "mono",
    readonly: true,
    value: link,
    testid: "share-link",
    "aria-label": `Share link for ${file.name}`,
    on: { focus: (e) => e.target.select() },
  });
  return el(
    "article",
    { class: "card result", testid: "upload-result" },
    el("h3", { text: file.name }),
    el("p", { class: "muted", text: `${formatBytes(file.size)}, encrypted in this page. Anyone with this link can download and decrypt it; the key is the part after “#”, which is never sent to the server.` }),
    el("div", { class: "row" }, output, copyButton(() => link, { testid: "copy-link", class: "primary" })),
    qrCanvas(link, { testid: "share-qr" }),
  );
}

function renderSelection(list, button) {
  list.replaceChildren(
    ...selected.map((f) => el("li", {}, el("span", { class: "name", text: f.name }), el("span", { class: "muted", text: formatBytes(f.size) }))),
  );
  list.hidden = selected.length === 0;
  button.disabled = busy || selected.length === 0 || !getApiKey();
  button.textContent = selected.length > 1 ? `Encrypt and upload ${selected.length} files` : "Encrypt and upload";
}

export function parsePrice(text) {
  const t = String(text ?? "").trim();
  if (!t) return null; // the gateway's default
  if (!/^\d+(\.\d{1,3})?$/.test(t)) throw new Error("the price must be a number of sats with at most 3 decimals");
  const [whole, frac = ""] = t.split(".");
  const msat = Number(whole) * 1000 + Number(frac.padEnd(3, "0"));
  if (!Number.isSafeInteger(msat) || msat > 100_000_000) throw new Error("the price per chunk must be at most 100,000 sats");
  return msat;
}

function main() {
  const app = appRoot();
  app.dataset.page = "upload";
  const fileInput = el("input", { id: "file-input", type: "file", multiple: true, testid: "file-input" });
  const uploadButton = el("button", { id: "upload-button", type: "button", class: "primary", disabled: true, text: "Encrypt and upload", testid: "upload-button" });
  const list = el("ul", { id: "file-list", class: "file-list", hidden: true });
  const price = el("input", { id: "price-sats", type: "text", inputmode: "decimal", placeholder: "gateway default", autocomplete: "off" });
  const progress = el("progress", { id: "progress", max: 1, value: 0, hidden: true, testid: "progress" });
  const results = el("div", { id: "results" });

  const keyPanel = apiKeyPanel(() => renderSelection(list, uploadButton));
  const drop = el(
    "label",
    { id: "drop-zone", class: "drop-zone", for: "file-input", testid: "drop-zone" },
    el("strong", { text: "Choose files" }),
    el("span", { text: " or drop them here" }),
    fileInput,
  );
  const choose = (files) => {
    if (busy) return;
    selected = Array.from(files ?? []);
    renderSelection(list, uploadButton);
    if (selected.length) setStatus(getApiKey() ? "Ready to encrypt and upload." : "Enter your API key or create an account first.", "info");
  };
  fileInput.addEventListener("change", () => choose(fileInput.files));
  for (const ev of ["dragenter", "dragover"]) {
    drop.addEventListener(ev, (e) => {
      e.preventDefault();
      drop.classList.add("dragging");
    });
  }
  for (const ev of ["dragleave", "drop"]) drop.addEventListener(ev, () => drop.classList.remove("dragging"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    choose(e.dataTransfer?.files);
  });
  // A file dropped next to the zone must not make the browser navigate away.
  window.addEventListener("dragover", (e) => e.preventDefault());
  window.addEventListener("drop", (e) => e.preventDefault());
  window.addEventListener("beforeunload", (e) => {
    if (busy) e.preventDefault();
  });

  uploadButton.addEventListener("click", async () => {
    const apiKey = getApiKey();
    if (!apiKey) {
      setStatus("Enter your API key or create an account first.", "error");
      return;
    }
    let priceMsat;
    try {
      priceMsat = parsePrice(price.value);
    } catch (err) {
      setStatus(errorText(err), "error");
      return;
    }
    busy = true;
    uploadButton.disabled = true;
    fileInput.disabled = true;
    const files = selected;
    let ok = 0;
    try {
      for (const [n, file] of files.entries()) {
        const label = files.length > 1 ? `${file.name} (${n + 1} of ${files.length})` : file.name;
        progress.hidden = false;
        progress.value = 0;
        setStatus(`Encrypting and uploading ${label}…`, "busy");
        try {
          const { link } = await uploadFile(file, {
            apiKey,
            priceMsat,
            onProgress: (done, total) => {
              progress.max = total;
              progress.value = done;
              const pct = total ? Math.floor((100 * done) / total) : 100;
              setStatus(`Encrypting and uploading ${label}: ${pct}% (${formatBytes(done)} of ${formatBytes(total)})`, "busy");
            },
          });
          results.prepend(resultCard(file, link));
          ok++;
        } catch (err) {
          setStatus(`${file.name}: ${errorText(err)}`, "error");
          return;
        }
      }
      setStatus(ok === 1 ? "Uploaded. Share the link below." : `Uploaded ${ok} files. Share the links below.`, "ok");
      selected = [];
      fileInput.value = "";
    } finally {
      busy = false;
      fileInput.disabled = false;
      renderSelection(list, uploadButton);
    }
  });

  app.replaceChildren(
    keyPanel,
    el(
      "section",
      { class: "card", id: "upload-card" },
      el("h2", { text: "Share a file" }),
      el("p", { class: "muted", text: "Files are encrypted in this page before they are uploaded. The server only ever stores ciphertext; the key travels in the link." }),
      drop,
      list,
      el(
        "details",
        { class: "options" },
        el("summary", { text: "Price" }),
        el("label", { for: "price-sats", text: "Price per 1 MiB chunk, in sats (blank: the gateway's default)" }),
        price,
      ),
      el("div", { class: "row" }, uploadButton),
      progress,
      statusLine(),
    ),
    results,
  );
  if (!getApiKey()) setStatus("Enter your API key or create an account to upload.", "info");
  ready.catch((err) => setStatus(`Encryption is unavailable in this browser: ${errorText(err)}`, "error"));
}

if (typeof document !== "undefined") main();
