// The amount of a BOLT 11 invoice, read from its human-readable part (pure, no I/O).
// A port of client/bolt11.py: the bech32 checksum is verified (a mangled invoice is garbage,
// not a guess); the signature is not (the paying wallet checks it). Used to make sure an
// invoice asks for exactly what the gateway announced before the page offers to pay it.

// Longest first: "lnbcrt" must not be read as "lnbc" followed by an amount "rt...".
export const PREFIXES = ["lnbcrt", "lntbs", "lnbc", "lntb", "lnsb"];

const CHARSET = "qpzry9x8gf2tvdw0s3jn54khce6mua7l";
const GENERATOR = [0x3b6a57b2, 0x26508e6d, 0x1ea119fa, 0x3d4233dd, 0x2a1462b3];
const MIN_DATA_CHARS = 7 + 104 + 6; // timestamp + signature + checksum
const MSAT_PER_UNIT = { "": 100_000_000_000n, m: 100_000_000n, u: 100_000n, n: 100n };
const AMOUNT_RE = /^([1-9][0-9]{0,29})([munp]?)$/;
const URI_SCHEME = "lightning:";

function polymod(values) {
  let chk = 1;
  for (const value of values) {
    const top = chk >>> 25;
    chk = (((chk & 0x1ffffff) << 5) ^ value) >>> 0;
    for (let i = 0; i < 5; i++) if ((top >>> i) & 1) chk = (chk ^ GENERATOR[i]) >>> 0;
  }
  return chk;
}

function hrpExpand(hrp) {
  const out = [];
  for (const c of hrp) out.push(c.charCodeAt(0) >> 5);
  out.push(0);
  for (const c of hrp) out.push(c.charCodeAt(0) & 31);
  return out;
}

/** Strips whitespace and a `lightning:` scheme; lowercase. Throws on a malformed envelope. */
export function normalizeInvoice(bolt11) {
  if (typeof bolt11 !== "string") throw new Error("invoice must be a string");
  let text = bolt11.trim();
  if (text.slice(0, URI_SCHEME.length).toLowerCase() === URI_SCHEME) text = text.slice(URI_SCHEME.length);
  if (!text) throw new Error("invoice is empty");
  for (const c of text) {
    const cp = c.codePointAt(0);
    if (cp < 33 || cp > 126) throw new Error("invoice contains characters outside printable ASCII");
  }
  if (text.toLowerCase() !== text && text.toUpperCase() !== text) throw new Error("invoice mixes upper and lower case");
  text = text.toLowerCase();
  const sep = text.lastIndexOf("1");
  if (sep < 1) throw new Error("invoice has no bech32 separator '1'");
  const hrp = text.slice(0, sep);
  const data = text.slice(sep + 1);
  if (data.length < MIN_DATA_CHARS) throw new Error("invoice is too short");
  const values = [];
  for (const c of data) {
    const v = CHARSET.indexOf(c);
    if (v < 0) throw new Error("invoice contains characters outside the bech32 alphabet");
    values.push(v);
  }
  if (polymod([...hrpExpand(hrp), ...values]) !== 1) throw new Error("invoice checksum is wrong (mistyped or truncated)");
  return { text, hrp };
}

/**
 * Amount in millisatoshis (a Number), or null for an invoice without an amount. Throws for
 * anything that is not a well-formed invoice of a known network.
 */
export function invoiceAmountMsat(bolt11) {
  const { hrp } = normalizeInvoice(bolt11);
  const prefix = PREFIXES.find((p) => hrp.startsWith(p));
  if (prefix === undefined) throw new Error(`unknown invoice prefix; expected one of ${PREFIXES.join(", ")}`);
  const amount = hrp.slice(prefix.length);
  if (!amount) return null;
  const match = AMOUNT_RE.exec(amount);
  if (!match) throw new Error("invoice amount is not a number with a multiplier m/u/n/p");
  const number = BigInt(match[1]);
  let msat;
  if (match[2] === "p") {
    // BOLT 11: sub-millisatoshi amounts cannot be paid, so 'p' amounts end in 0.
    if (number % 10n) throw new Error("invoice amount in pico-bitcoin is not a whole millisatoshi");
    msat = number / 10n;
  } else {
    msat = number * MSAT_PER_UNIT[match[2]];
  }
  if (msat > BigInt(Number.MAX_SAFE_INTEGER)) throw new Error("invoice amount is implausibly large");
  return Number(msat);
}

/** The invoice as a QR payload: BOLT 11 upper-cased (QR alphanumeric mode, denser). */
export function invoiceQrPayload(bolt11) {
  return `LIGHTNING:${normalizeInvoice(bolt11).text.toUpperCase()}`;
}
