// Small DOM helpers shared by the pages. Text from the network is only ever set through
// textContent/attributes, never parsed as HTML.

import QRCode from "qrcode";
import { ApiError, callJson, getApiKey, setApiKey } from "./api.js";
import { invoiceQrPayload } from "./bolt11.js";

/**
 * el("button", {id: "x", class: "primary", testid: "x", text: "Go", on: {click}}, ...children)
 * Other props become attributes (booleans toggle them); children are nodes or strings.
 */
export function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(props)) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "text") node.textContent = value;
    else if (name === "class") node.className = value;
    else if (name === "testid") node.dataset.testid = value;
    else if (name === "on") for (const [ev, fn] of Object.entries(value)) node.addEventListener(ev, fn);
    else if (name === "value") node.value = value;
    else if (value === true) node.setAttribute(name, "");
    else node.setAttribute(name, String(value));
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

export function appRoot() {
  let app = document.getElementById("app");
  if (!app) {
    app = el("div", { id: "app" });
    document.body.append(app);
  }
  app.classList.add("bc-app");
  return app;
}

/** The page's status line (#status): kind is "info", "ok", "error" or "busy". */
export function statusLine() {
  return el("p", { id: "status", class: "status", role: "status", "aria-live": "polite", testid: "status" });
}

export function setStatus(text, kind = "info") {
  const node = document.getElementById("status");
  if (!node) return;
  node.textContent = text;
  node.dataset.kind = kind;
}

/** The message to show for any error: the API's problem detail, or the error's message. */
export function errorText(err) {
  if (err instanceof ApiError) return err.message;
  if (err?.name === "AbortError") return "Cancelled.";
  return err?.message ? String(err.message) : String(err);
}

export function formatBytes(n) {
  const value = Number(n);
  if (!Number.isFinite(value)) return "?";
  if (value < 1000) return `${value} B`;
  const units = ["kB", "MB", "GB", "TB", "PB"];
  let v = value;
  let u = -1;
  do {
    v /= 1000;
    u++;
  } while (v >= 1000 && u < units.length - 1);
  return `${v.toFixed(v < 10 ? 2 : v < 100 ? 1 : 0)} ${units[u]}`;
}

/** Millisatoshis (Number or BigInt) as sats, exact: "12 sats", "0.5 sats", "1,234.001 sats". */
export function formatSats(msat) {
  const m = BigInt(msat);
  const neg = m < 0n;
  const abs = neg ? -m : m;
  const whole = (abs / 1000n).toLocaleString("en-US");
  const frac = (abs % 1000n).toString().padStart(3, "0").replace(/0+$/, "");
  const text = frac ? `${whole}.${frac}` : whole;
  return `${neg ? "-" : ""}${text} ${abs === 1000n ? "sat" : "sats"}`;
}

export function formatDuration(seconds) {
  const s = Number(seconds);
  if (s % 86_400 === 0) return `${s / 86_400} days`;
  if (s % 3600 === 0) return `${s / 3600} hours`;
  return `${Math.round(s / 60)} minutes`;
}

/** Random hex string (crypto.getRandomValues). */
export function randomHex(bytes = 16) {
  const b = new Uint8Array(bytes);
  crypto.getRandomValues(b);
  return Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
}

async function copyText(text) {
  try {
    await navigator.clipboard.writeText(text);
    return true;
  } catch {
    // Older browsers or no permission: select a temporary field and use execCommand.
    const area = el("textarea", { class: "offscreen", readonly: true, value: text });
    document.body.append(area);
    area.select();
    let ok = false;
    try {
      ok = document.execCommand("copy");
    } catch {
      ok = false;
    }
    area.remove();
    return ok;
  }
}

/** A "Copy" button copying getText() to the clipboard. */
export function copyButton(getText, props = {}) {
  const button = el("button", { type: "button", class: "secondary", text: "Copy", ...props });
  const label = button.textContent;
  let timer;
  button.addEventListener("click", async () => {
    const ok = await copyText(typeof getText === "function" ? getText() : getText);
    button.textContent = ok ? "Copied" : "Copy failed";
    clearTimeout(timer);
    timer = setTimeout(() => {
      button.textContent = label;
    }, 1500);
  });
  return button;
}

/** A canvas showing `text` as a QR code, drawn locally (no external service). */
export function qrCanvas(text, props = {}) {
  const canvas = el("canvas", { class: "qr", role: "img", "aria-label": "QR code", ...props });
  QRCode.toCanvas(canvas, text, { errorCorrectionLevel: "M", margin: 2, width: 240 }, (err) => {
    if (err) canvas.replaceWith(el("p", { class: "muted", text: "(QR code unavailable: text too long)" }));
  });
  return canvas;
}

/**
 * The invoice to pay: QR code, the text (#invoice) with a copy button, and a lightning: link.
 * `amountText` is shown above it.
 */
export function invoicePanel(invoice, amountText, onCancel = undefined) {
  const wrap = el(
    "div",
    { class: "invoice-panel", id: "invoice-panel", testid: "invoice-panel" },
    el("p", { class: "amount", text: amountText }),
    qrCanvas(invoiceQrPayload(invoice), { id: "invoice-qr", testid: "invoice-qr" }),
    el("textarea", { id: "invoice", class: "mono", readonly: true, rows: 3, value: invoice, testid: "invoice", spellcheck: "false" }),
    el(
      "div",
      { class: "row" },
      copyButton(invoice, { id: "copy-invoice", testid: "copy-invoice" }),
      el("a", { class: "button secondary", id: "open-wallet", href: `lightning:${invoice}`, text: "Open in wallet" }),
      onCancel ? el("button", { type: "button", class: "secondary", id: "cancel-button", text: "Cancel", on: { click: onCancel } }) : null,
    ),
  );
  return wrap;
}

/** Pays with a WebLN wallet (browser extension) if the page has one; returns the preimage. */
export async function payWithWebln(invoice) {
  const webln = globalThis.window?.webln;
  if (!webln) throw new Error("no WebLN wallet in this browser");
  await webln.enable();
  const result = await webln.sendPayment(invoice);
  const preimage = String(result?.preimage ?? "").toLowerCase();
  if (!/^[0-9a-f]{64}$/.test(preimage)) throw new Error("the wallet returned no valid preimage");
  return preimage;
}

export function hasWebln() {
  return Boolean(globalThis.window?.webln);
}

/**
 * The API key panel: #api-key (saved to localStorage "bitcache.apiKey" on change) and
 * #create-account (POST /v1/accounts; the new key is shown once in #new-api-key and stored).
 * onChange(key) runs whenever the stored key changes.
 */
export function apiKeyPanel(onChange = () => {}) {
  const input = el("input", {
    id: "api-key",
    type: "password",
    autocomplete: "off",
    spellcheck: "false",
    placeholder: "paste your API key",
    value: getApiKey(),
    testid: "api-key",
  });
  const shown = el("div", { id: "new-account", class: "notice", hidden: true });
  const save = () => {
    const key = input.value.trim();
    if (key !== getApiKey()) {
      setApiKey(key);
      onChange(key);
    }
  };
  // Saved as it is typed or pasted, so the pages always use what the field shows.
  input.addEventListener("input", save);
  input.addEventListener("change", save);
  const toggle = el("button", {
    type: "button",
    class: "secondary",
    id: "show-api-key",
    text: "Show",
    on: {
      click: () => {
        input.type = input.type === "password" ? "text" : "password";
        toggle.textContent = input.type === "password" ? "Show" : "Hide";
      },
    },
  });
  const create = el("button", { type: "button", id: "create-account", testid: "create-account", class: "secondary", text: "Create account" });
  create.addEventListener("click", async () => {
    if (getApiKey() && !confirm("Replace the API key stored in this browser with a new account's key?")) return;
    create.disabled = true;
    setStatus("Creating an account…", "busy");
    try {
      // Not retried: a retry could create a second account.
      const account = await callJson("/v1/accounts", { method: "POST", json: {}, ok: [201], retries: 0 });
      setApiKey(account.api_key);
      input.value = account.api_key;
      shown.replaceChildren(
        el("p", { text: "Account created. This is your API key; it is shown only once, so keep a copy somewhere safe:" }),
        el("div", { class: "row" }, el("code", { id: "new-api-key", class: "mono", text: account.api_key }), copyButton(account.api_key)),
        el("p", { class: "muted", text: "It is also stored in this browser." }),
      );
      shown.hidden = false;
      setStatus("Account created.", "ok");
      onChange(account.api_key);
    } catch (err) {
      setStatus(errorText(err), "error");
    } finally {
      create.disabled = false;
    }
  });
  return el(
    "section",
    { class: "card", id: "account-card" },
    el("label", { for: "api-key", text: "API key" }),
    el("div", { class: "row" }, input, toggle),
    el("div", { class: "row" }, create, el("span", { class: "muted", text: "No account yet? One click, no e-mail." })),
    shown,
  );
}
