// The account page (/account): storage used against the quota, plans to buy over Lightning,
// earnings from sold chunks and withdrawals to the user's own Lightning invoice.

import { ApiError, call, callJson, getApiKey, setApiKey, sleep } from "./api.js";
import { login } from "./login.js";
import { invoiceAmountMsat } from "./bolt11.js";
import {
  apiKeyPanel,
  appRoot,
  el,
  errorText,
  formatBytes,
  formatDuration,
  formatSats,
  hasWebln,
  invoicePanel,
  payWithWebln,
  randomHex,
  setStatus,
  statusLine,
} from "./ui.js";

const PLAN_POLL_MS = 2000;
const PLAN_POLL_LIMIT_MS = 15 * 60 * 1000;
const WITHDRAW_POLL_MS = 2000;
const WITHDRAW_POLL_LIMIT_MS = 5 * 60 * 1000;

let usage = null;

/** The login form: username + password → a new API key for this browser. */
function loginCard() {
  const username = el("input", { id: "login-username", type: "text", autocomplete: "username", spellcheck: "false", testid: "login-username" });
  const password = el("input", { id: "login-password", type: "password", autocomplete: "current-password", testid: "login-password" });
  const button = el("button", { type: "submit", id: "login-button", class: "primary", text: "Log in", testid: "login-button" });
  const submit = async (event) => {
    event.preventDefault();
    const name = username.value.trim();
    if (!name || !password.value) return setStatus("Enter your username and password.", "error");
    button.disabled = true;
    setStatus("Logging in… (deriving your login key takes a moment)", "busy");
    try {
      const result = await login(name, password.value);
      setApiKey(result.api_key);
      const keyInput = document.getElementById("api-key");
      if (keyInput) keyInput.value = result.api_key;
      password.value = "";
      setStatus("Logged in. A new API key is stored in this browser.", "ok");
      await refresh();
    } catch (err) {
      setStatus(err instanceof ApiError && err.status === 401 ? "Wrong username or password." : errorText(err), "error");
    } finally {
      button.disabled = false;
    }
  };
  return el(
    "form",
    { class: "card stack", id: "login-card", on: { submit } },
    el("h2", { text: "Log in" }),
    el("label", { for: "login-username", text: "Username" }),
    username,
    el("label", { for: "login-password", text: "Password" }),
    password,
    el("div", { class: "row" }, button, el("span", { class: "muted", text: "Also for accounts from the old service." })),
  );
}
let plans = [];
let planWatch = null; // AbortController of the current plan purchase

const $ = (id) => document.getElementById(id);

// --- usage -------------------------------------------------------------------------------------

function renderUsage() {
  const card = $("usage-card");
  if (!usage) {
    card.replaceChildren(el("h2", { text: "Storage" }), el("p", { class: "muted", text: "Enter your API key above to see your storage, plans and earnings." }));
    return;
  }
  const used = Number(usage.used_bytes) || 0;
  const limit = Number(usage.limit_bytes) || 0;
  const pct = limit > 0 ? Math.min(100, (100 * used) / limit) : 0;
  const bar = el("progress", { id: "quota-bar", max: limit || 1, value: Math.min(used, limit || 1), testid: "quota-bar", "aria-label": "Storage used" });
  if (pct >= 90) bar.classList.add("warn");
  const active = (usage.plans ?? []).map((p) =>
    el(
      "li",
      {},
      `${p.plan_id}: ${formatBytes(p.quota_bytes)} ${p.active ? "until" : "from"} ${new Date((p.active ? p.ends_at : p.starts_at) * 1000).toLocaleString()}`,
      p.active ? "" : " (queued)",
    ),
  );
  const parts = [
    el("h2", { text: "Storage" }),
    bar,
    el("p", { id: "usage-text", text: `${formatBytes(used)} of ${formatBytes(limit)} used (${pct.toFixed(pct < 10 ? 1 : 0)}%). Free tier: ${formatBytes(usage.free_quota_bytes)}.` }),
  ];
  // replaceChildren() would print a null as the text "null": only real nodes go in.
  if (active.length) parts.push(el("div", {}, el("h3", { text: "Your plans" }), el("ul", { id: "active-plans", class: "plain" }, active)));
  card.replaceChildren(...parts);
}

function renderEarnings() {
  const card = $("earnings-card");
  const status = $("withdraw-status");
  if (!usage) {
    card.hidden = true;
    return;
  }
  card.hidden = false;
  const t = usage.totals ?? {};
  $("balance").textContent = formatSats(usage.balance_msat ?? 0);
  $("earning-facts").replaceChildren(
    el("dt", { text: "Earned in total" }),
    el("dd", { text: formatSats(t.earned_msat ?? 0) }),
    el("dt", { text: "Chunks sold" }),
    el("dd", { text: String(t.chunks_sold ?? 0) }),
    el("dt", { text: "Data served" }),
    el("dd", { text: formatBytes(t.bytes_served ?? 0) }),
  );
  const files = usage.files ?? [];
  $("files-card").hidden = files.length === 0;
  $("files-body").replaceChildren(
    ...files
      .slice()
      .reverse()
      .map((f) =>
        el(
          "tr",
          {},
          el("td", { class: "mono", title: f.file_id, text: `${String(f.file_id).slice(0, 10)}…` }),
          el("td", { text: f.state }),
          el("td", { text: formatBytes(f.bytes_stored) }),
          el("td", { text: formatBytes(f.bytes_served) }),
          el("td", { text: formatSats(f.earned_msat ?? 0) }),
        ),
      ),
  );
  if (status && !status.textContent) status.hidden = true;
}

async function refresh({ quiet = false } = {}) {
  const apiKey = getApiKey();
  if (!apiKey) {
    usage = null;
    renderUsage();
    renderEarnings();
    renderPlans();
    return;
  }
  try {
    usage = await callJson("/v1/account", { apiKey, retries: 2 });
    if (!quiet) setStatus("", "info");
  } catch (err) {
    usage = null;
    setStatus(errorText(err), "error");
  }
  renderUsage();
  renderEarnings();
  renderPlans();
}

// --- plans -------------------------------------------------------------------------------------

function renderPlans() {
  const list = $("plans");
  list.replaceChildren(
    ...plans.map((p) =>
      el(
        "li",
        { class: "plan", testid: "plan", "data-plan-id": p.id },
        el("div", {}, el("strong", { text: p.name }), el("div", { class: "muted", text: `${formatBytes(p.quota_bytes)} for ${formatDuration(p.duration_s)}` })),
        el("div", { class: "plan-buy" }, el("span", { class: "price", text: formatSats(p.price_msat) }), el("button", {
          type: "button",
          class: "primary",
          id: `buy-${p.id}`,
          testid: "buy-plan",
          "data-plan-id": p.id,
          disabled: !usage,
          text: "Buy",
          on: { click: () => buyPlan(p) },
        })),
      ),
    ),
  );
  if (!plans.length) list.replaceChildren(el("li", { class: "muted", text: "No plans on sale here." }));
}

async function loadPlans() {
  try {
    const body = await callJson("/v1/plans", { retries: 2 });
    plans = Array.isArray(body?.plans) ? body.plans : [];
  } catch (err) {
    setStatus(errorText(err), "error");
  }
  renderPlans();
}

async function buyPlan(plan) {
  const apiKey = getApiKey();
  if (!apiKey) return;
  planWatch?.abort();
  const watch = new AbortController();
  planWatch = watch;
  const payment = $("payment");
  const before = JSON.stringify(usage?.plans ?? []);
  setStatus(`Asking for an invoice for “${plan.name}”…`, "busy");
  try {
    // Not retried: every call creates a new invoice.
    const offer = await callJson("/v1/account/plans", { method: "POST", json: { plan_id: plan.id }, apiKey, ok: [201], retries: 0 });
    const amount = invoiceAmountMsat(offer.invoice);
    if (amount === null || amount !== offer.amount_msat || amount !== plan.price_msat) {
      throw new Error("The invoice's amount differs from the plan's price; not paying.");
    }
    payment.replaceChildren(invoicePanel(offer.invoice, `Pay ${formatSats(amount)} for “${plan.name}”`, () => watch.abort()));
    payment.scrollIntoView?.({ behavior: "smooth", block: "nearest" });
    if (hasWebln()) {
      setStatus("Confirm the payment in your wallet, or scan the QR code.", "busy");
      payWithWebln(offer.invoice).catch((err) => {
        if (!watch.signal.aborted) setStatus(`Wallet: ${errorText(err)}. You can still pay by scanning the QR code.`, "info");
      });
    } else {
      setStatus("Scan the QR code with a Lightning wallet, or copy the invoice. Waiting for the payment…", "busy");
    }
    // The gateway activates the plan once the invoice settles: watch the account for it.
    const deadline = Date.now() + PLAN_POLL_LIMIT_MS;
    while (Date.now() < deadline) {
      await sleep(PLAN_POLL_MS, watch.signal);
      let now;
      try {
        now = await callJson("/v1/account", { apiKey, retries: 1, signal: watch.signal });
      } catch (err) {
        if (err?.name === "AbortError") throw err;
        continue;
      }
      if (JSON.stringify(now.plans ?? []) !== before) {
        usage = now;
        renderUsage();
        renderEarnings();
        payment.replaceChildren();
        setStatus(`Paid: “${plan.name}” is yours.`, "ok");
        return;
      }
    }
    throw new Error("No payment arrived in time; the invoice has probably expired.");
  } catch (err) {
    if (err?.name === "AbortError" && planWatch !== watch) return; // replaced by another purchase
    payment.replaceChildren();
    setStatus(errorText(err), err?.name === "AbortError" ? "info" : "error");
  } finally {
    if (planWatch === watch) planWatch = null;
  }
}

// --- withdrawals -------------------------------------------------------------------------------

function describeWithdrawal(w) {
  const amount = Number.isSafeInteger(w.amount_msat) ? formatSats(w.amount_msat) : "?";
  if (w.state === "succeeded") {
    const fee = Number.isSafeInteger(w.fee_paid_msat) ? ` (routing fee ${formatSats(w.fee_paid_msat)})` : "";
    return [`Sent ${amount}${fee}.`, "ok"];
  }
  if (w.state === "failed") return [`The withdrawal of ${amount} failed: ${w.failure || "the payment did not go through"}. Your balance was not charged.`, "error"];
  return [`Withdrawal of ${amount} in progress…`, "busy"];
}

async function withdraw(event) {
  event.preventDefault();
  const apiKey = getApiKey();
  const input = $("withdraw-invoice");
  const button = $("withdraw-button");
  const out = $("withdraw-status");
  const invoice = input.value.trim().replace(/^lightning:/i, "");
  const show = (text, kind) => {
    out.hidden = false;
    out.textContent = text;
    out.dataset.kind = kind;
  };
  if (!apiKey) return show("Enter your API key first.", "error");
  if (!invoice) return show("Paste a Lightning invoice (BOLT 11) from your wallet.", "error");
  try {
    invoiceAmountMsat(invoice);
  } catch (err) {
    return show(`That is not a valid Lightning invoice: ${errorText(err)}`, "error");
  }
  button.disabled = true;
  // One key per click: retries of this request cannot pay twice; a new click is a new withdrawal.
  const idempotencyKey = randomHex(16);
  show("Sending…", "busy");
  try {
    const resp = await fetchWithdrawal(apiKey, invoice, idempotencyKey);
    let w = resp;
    const deadline = Date.now() + WITHDRAW_POLL_LIMIT_MS;
    while (w.state === "pending" && Date.now() < deadline) {
      show(...describeWithdrawal(w));
      await sleep(WITHDRAW_POLL_MS);
      try {
        w = await callJson(`/v1/account/withdrawals/${encodeURIComponent(w.withdrawal_id)}`, { apiKey, retries: 2 });
      } catch {
        // keep the last known state and try again
      }
    }
    show(...describeWithdrawal(w));
    if (w.state === "pending") show("The withdrawal is still in progress; check back later.", "busy");
    if (w.state === "succeeded") input.value = "";
  } catch (err) {
    show(errorText(err), "error");
  } finally {
    button.disabled = false;
    await refresh({ quiet: true });
  }
}

async function fetchWithdrawal(apiKey, invoice, idempotencyKey) {
  // 200 succeeded, 202 pending, 402 failed: all three carry the withdrawal, not a problem.
  try {
    const resp = await call("/v1/account/withdrawals", {
      method: "POST",
      json: { invoice },
      apiKey,
      headers: { "Idempotency-Key": idempotencyKey },
      ok: [200, 202],
      retries: 3,
    });
    return resp.json();
  } catch (err) {
    if (err instanceof ApiError && err.status === 402 && err.body?.withdrawal_id) return err.body;
    throw err;
  }
}

// --- page --------------------------------------------------------------------------------------

function main() {
  const app = appRoot();
  app.dataset.page = "account";
  const form = el(
    "form",
    { id: "withdraw-form", class: "stack", on: { submit: withdraw } },
    el("label", { for: "withdraw-invoice", text: "Withdraw to a Lightning invoice from your wallet" }),
    el("textarea", { id: "withdraw-invoice", class: "mono", rows: 3, placeholder: "lnbc…", spellcheck: "false", autocomplete: "off", testid: "withdraw-invoice" }),
    el("div", { class: "row" }, el("button", { type: "submit", id: "withdraw-button", class: "primary", text: "Withdraw", testid: "withdraw-button" })),
    el("p", { id: "withdraw-status", class: "status", role: "status", "aria-live": "polite", hidden: true }),
  );
  app.replaceChildren(
    apiKeyPanel(() => refresh()),
    loginCard(),
    statusLine(),
    el("section", { class: "card", id: "usage-card" }),
    el(
      "section",
      { class: "card", id: "plans-card" },
      el("h2", { text: "More storage" }),
      el("ul", { id: "plans", class: "plans plain" }),
      el("div", { id: "payment" }),
    ),
    el(
      "section",
      { class: "card", id: "earnings-card", hidden: true },
      el("h2", { text: "Earnings" }),
      el("p", { class: "balance" }, "Balance: ", el("strong", { id: "balance", testid: "balance" })),
      el("dl", { id: "earning-facts", class: "facts" }),
      form,
    ),
    el(
      "section",
      { class: "card", id: "files-card", hidden: true },
      el("h2", { text: "Your files" }),
      el(
        "div",
        { class: "table-wrap" },
        el(
          "table",
          {},
          el("thead", {}, el("tr", {}, ...["File", "State", "Stored", "Served", "Earned"].map((h) => el("th", { text: h })))),
          el("tbody", { id: "files-body" }),
        ),
      ),
    ),
  );
  renderUsage();
  loadPlans();
  refresh();
}

if (typeof document !== "undefined") main();
