// Port of tests/unit/test_bolt11.py: amounts from the BOLT 11 specification examples.
import { test } from "node:test";
import assert from "node:assert/strict";
import { invoiceAmountMsat, invoiceQrPayload, normalizeInvoice } from "../src/bolt11.js";

// From BOLT 11 "Examples" (lightning/bolts, 11-payment-encoding.md).
const DONATION =
  "lnbc1pvjluezpp5qqqsyqcyq5rqwzqfqqqsyqcyq5rqwzqfqqqsyqcyq5rqwzqfqypqdpl2pkx2ctnv5sxxmmwwd5kgetjypeh2ursdae8g6twvus8g6rfwvs8qun0dfjkxaq8rkx3yf5tcsyz3d73gafnh3cax9rn449d9p5uxz9ezhhypd0elx87sjle52x86fux2ypatgddc6k63n7erqz25le42c4u4ecky03ylcqca784w";
const COFFEE =
  "lnbc2500u1pvjluezpp5qqqsyqcyq5rqwzqfqqqsyqcyq5rqwzqfqqqsyqcyq5rqwzqfqypqdq5xysxxatsyp3k7enxv4jsxqzpuaztrnwngzn3kdzw5hydlzf03qdgm2hdq27cqv3agm2awhz5se903vruatfhq77w3ls4evs3ch9zw97j25emudupq63nyw24cg27h2rspfj9srp";
const NONSENSE =
  "lnbc2500u1pvjluezpp5qqqsyqcyq5rqwzqfqqqsyqcyq5rqwzqfqqqsyqcyq5rqwzqfqypqdpquwpc4curk03c9wlrswe78q4eyqc7d8d0xqzpuyk0sg5g70me25alkluzd2x62aysf2pyy8edtjeevuv4p2d5p76r4zkmneet7uvyakky2zr4cusd45tftc9c5fh0nnqpnl2jfll544esqchsrny";
const HASHED_20M =
  "lnbc20m1pvjluezpp5qqqsyqcyq5rqwzqfqqqsyqcyq5rqwzqfqqqsyqcyq5rqwzqfqypqhp58yjmdan79s6qqdhdzgynm4zwqd5d7xmw5fk98klysy043l2ahrqscc6gd6ql3jrc5yzme8v4ntcewwz5cnw92tz0pc8qcuufvq7khhr8wpald05e92xw006sq94mg8v2ndf4sefvf9sygkshp5zfem29trqq2yxxz7";
const TESTNET_20M =
  "lntb20m1pvjluezhp58yjmdan79s6qqdhdzgynm4zwqd5d7xmw5fk98klysy043l2ahrqspp5qqqsyqcyq5rqwzqfqqqsyqcyq5rqwzqfqqqsyqcyq5rqwzqfqypqfpp3x9et2e20v6pu37c5d9vax37wxq72un98kmzzhznpurw9sgl2v0nklu2g4d0keph5t7tj9tcqd8rexnd07ux4uv2cjvcqwaxgj7v4uwn5wmypjd5n69z2xm3xgksg28nwht7f6zspwp3f9t";
const PICO =
  "lnbc9678785340p1pwmna7lpp5gc3xfm08u9qy06djf8dfflhugl6p7lgza6dsjxq454gxhj9t7a0sd8dgfkx7cmtwd68yetpd5s9xar0wfjn5gpc8qhrsdfq24f5ggrxdaezqsnvda3kkum5wfjkzmfqf3jkgem9wgsyuctwdus9xgrcyqcjcgpzgfskx6eqf9hzqnteypzxz7fzypfhg6trddjhygrcyqezcgpzfysywmm5ypxxjemgw3hxjmn8yptk7untd9hxwg3q2d6xjcmtv4ezq7pqxgsxzmnyyqcjqmt0wfjjq6t5v4khxxqyjw5qcqp2rzjq0gxwkzc8w6323m55m4jyxcjwmy7stt9hwkwe2qxmy8zpsgg7jcuwz87fcqqeuqqqyqqqqlgqqqqn3qq9qn07ytgrxxzad9hc4xt3mawjjt8znfv8xzscs7007v9gh9j569lencxa8xeujzkxs0uamak9aln6ez02uunw6rd2ht2sqe4hz8thcdagpleym0j";
const COFFEE_BEANS =
  "lnbc25m1pvjluezpp5qqqsyqcyq5rqwzqfqqqsyqcyq5rqwzqfqqqsyqcyq5rqwzqfqypqdq5vdhkven9v5sxyetpdeessp5zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zygs9q5sqqqqqqqqqqqqqqqpqsq67gye39hfg3zd8rgc80k32tvy9xk2xunwm5lzexnvpx6fd77en8qaq424dxgt56cag2dpt359k3ssyhetktkpqh24jqnjyw6uqd08sgptq44qu";
const TOO_SHORT =
  "lnbc1pvjluezpp5qqqsyqcyq5rqwzqfqqqsyqcyq5rqwzqfqqqsyqcyq5rqwzqfqypqdpl2pkx2ctnv5sxxmmwwd5kgetjypeh2ursdae8g6na6hlh";
const BAD_MULTIPLIER =
  "lnbc2500x1pvjluezpp5qqqsyqcyq5rqwzqfqqqsyqcyq5rqwzqfqqqsyqcyq5rqwzqfqypqdq5xysxxatsyp3k7enxv4jsxqzpujr6jxr9gq9pv6g46y7d20jfkegkg4gljz2ea2a3m9lmvvr95tq2s0kvu70u3axgelz3kyvtp2ywwt0y8hkx2869zq5dll9nelr83zzqqpgl2zg";
const SUB_MSAT =
  "lnbc2500000001p1pvjluezpp5qqqsyqcyq5rqwzqfqqqsyqcyq5rqwzqfqqqsyqcyq5rqwzqfqypqdq5xysxxatsyp3k7enxv4jsxqzpu7hqtk93pkf7sw55rdv4k9z2vj050rxdr6za9ekfs3nlt5lr89jqpdmxsmlj9urqumg0h9wzpqecw7th56tdms40p2ny9q4ddvjsedzcplva53s";
const BAD_CHECKSUM = `${NONSENSE.slice(0, -1)}t`;
const NO_SEPARATOR = NONSENSE.slice("lnbc2500u1".length);
const MIXED_CASE = `LNBC2500u${NONSENSE.slice("lnbc2500u".length)}`;

test("spec examples", () => {
  const cases = [
    [DONATION, null],
    [COFFEE, 2500 * 100_000],
    [NONSENSE, 250_000_000],
    [HASHED_20M, 20 * 100_000_000],
    [TESTNET_20M, 2_000_000_000],
    [PICO, 967_878_534],
    [COFFEE_BEANS, 2_500_000_000],
    [COFFEE_BEANS.toUpperCase(), 2_500_000_000],
    [`lightning:${COFFEE}`, 250_000_000],
    [`  ${COFFEE}\n`, 250_000_000],
  ];
  for (const [invoice, msat] of cases) assert.equal(invoiceAmountMsat(invoice), msat, invoice.slice(0, 20));
});

test("invalid invoices", () => {
  const cases = [
    [BAD_CHECKSUM, /checksum/],
    [NO_SEPARATOR, /separator/],
    [MIXED_CASE, /case/],
    [TOO_SHORT, /too short/],
    [BAD_MULTIPLIER, /multiplier/],
    [SUB_MSAT, /millisatoshi/],
    ["", /empty/],
    ["lnbc2500u1 pvjluez", /printable/],
    ["bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4", /too short/],
  ];
  for (const [invoice, message] of cases) assert.throws(() => invoiceAmountMsat(invoice), message);
});

// A well-formed invoice envelope (valid checksum) with another human-readable part.
function withHrp(hrp) {
  const charset = "qpzry9x8gf2tvdw0s3jn54khce6mua7l";
  const generator = [0x3b6a57b2, 0x26508e6d, 0x1ea119fa, 0x3d4233dd, 0x2a1462b3];
  const polymod = (values) => {
    let chk = 1;
    for (const v of values) {
      const top = chk >>> 25;
      chk = (((chk & 0x1ffffff) << 5) ^ v) >>> 0;
      for (let i = 0; i < 5; i++) if ((top >>> i) & 1) chk = (chk ^ generator[i]) >>> 0;
    }
    return chk;
  };
  const data = [...COFFEE.slice("lnbc2500u1".length, -6)].map((c) => charset.indexOf(c));
  const expanded = [...[...hrp].map((c) => c.charCodeAt(0) >> 5), 0, ...[...hrp].map((c) => c.charCodeAt(0) & 31)];
  const mod = (polymod([...expanded, ...data, 0, 0, 0, 0, 0, 0]) ^ 1) >>> 0;
  const checksum = [0, 1, 2, 3, 4, 5].map((i) => (mod >>> (5 * (5 - i))) & 31);
  return `${hrp}1${[...data, ...checksum].map((d) => charset[d]).join("")}`;
}

test("networks and multipliers", () => {
  const cases = [
    ["lnbcrt10u", 1_000_000],
    ["lnbcrt", null],
    ["lntbs3n", 300],
    ["lnsb1", 100_000_000_000],
    ["lntb20p", 2],
    ["lnbc1m", 100_000_000],
  ];
  for (const [hrp, msat] of cases) assert.equal(invoiceAmountMsat(withHrp(hrp)), msat, hrp);
});

test("bad human-readable parts", () => {
  for (const hrp of ["lnxy10u", "bc10u", "lnbc010u", "lnbc0", "lnbc10uu", "lnbc1.5m"]) {
    assert.throws(() => invoiceAmountMsat(withHrp(hrp)), Error, hrp);
  }
});

test("QR payload is upper-case with a lightning: scheme", () => {
  assert.equal(invoiceQrPayload(`lightning:${COFFEE}`), `LIGHTNING:${COFFEE.toUpperCase()}`);
  assert.equal(normalizeInvoice(COFFEE.toUpperCase()).text, COFFEE);
});
