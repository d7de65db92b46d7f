// What the vault page writes for each change (web/src/vaultops.js): the objects
// `bitcache sync` writes for the same change (client/sync/engine.py and history.py).
import { test, before } from "node:test";
import assert from "node:assert/strict";

import * as f from "../src/format.js";
import * as ops from "../src/vaultops.js";

before(async () => {
  await f.ready;
});

const MAC = (c) => f.b64urlEncode(new Uint8Array(32).fill(c));
const version = (n, c, size = 10) => ({ n, size, mtime_ns: 1700000000123456789n, time: 1700000000 + n, device: "laptop", chunks: [[MAC(c), size]] });
const file = (path, versions, deleted = null) => ({ kind: "file", path, deleted, versions });
const dir = (path, deleted = null) => ({ kind: "dir", path, deleted, versions: [] });
const OID = (c) => c.repeat(25) + "a";

function tree() {
  return new Map([
    [OID("b"), dir("Docs")],
    [OID("c"), file("Docs/a.txt", [version(1, 1), version(2, 2)])],
    [OID("d"), dir("Docs/Old")],
    [OID("e"), file("Docs/Old/b.txt", [version(1, 3)])],
    [OID("f"), file("top.txt", [version(1, 4)])],
  ]);
}

const apply = (t, writes) => {
  const out = new Map(t);
  for (const [oid, body] of writes) out.set(oid, body);
  return out;
};
const livePaths = (t) => [...t.values()].filter((b) => b.deleted === null).map((b) => b.path).sort();
const NOW = 1800000000;

test("upload over a name: a new version of the same object, the oldest dropped past keep_versions", () => {
  const w = ops.planUpload(tree(), "Docs/a.txt", ops.versionBody({ size: 10, mtimeNs: 5n, time: NOW, device: "web", chunks: [[MAC(9), 10]] }), 2);
  assert.deepEqual([...w.keys()], [OID("c")]);
  const body = w.get(OID("c"));
  assert.deepEqual(body.versions.map((v) => v.n), [2, 3]);
  assert.equal(body.versions[1].device, "web");
  assert.equal(body.versions[0].mtime_ns, 1700000000123456789n); // kept exactly
  assert.equal("counter" in body, false); // the writer sets it
  // The same content again changes nothing (as a touched, unchanged file in the sync).
  assert.equal(ops.planUpload(tree(), "Docs/a.txt", { ...version(1, 2) }, 10), null);
  // A folder's name cannot take a file.
  assert.throws(() => ops.planUpload(tree(), "Docs", version(1, 9), 10), ops.PlanError);
});

test("upload to a new path: a new object, with folder objects for missing parents", () => {
  const w = ops.planUpload(tree(), "New/Sub/x.bin", version(1, 9), 10);
  const bodies = [...w.values()];
  assert.deepEqual(bodies.map((b) => [b.kind, b.path]).sort(), [["dir", "New"], ["dir", "New/Sub"], ["file", "New/Sub/x.bin"]]);
  for (const oid of w.keys()) assert.equal(f.decodeFileId(oid).length, 16);
  // A path only in the trash gets a new object (the trashed one stays restorable).
  const t = tree();
  t.set(OID("f"), file("top.txt", [version(1, 4)], NOW - 5));
  const again = ops.planUpload(t, "top.txt", version(1, 8), 10);
  assert.equal(again.size, 1);
  assert.notEqual([...again.keys()][0], OID("f"));
  assert.deepEqual([...again.values()][0].versions.map((v) => v.n), [1]);
});

test("delete: the object, or the folder and everything under it, into the trash", () => {
  const w = ops.planDelete(tree(), "Docs", NOW);
  assert.deepEqual([...w.keys()].sort(), [OID("b"), OID("c"), OID("d"), OID("e")]);
  for (const body of w.values()) assert.equal(body.deleted, NOW);
  assert.deepEqual(livePaths(apply(tree(), w)), ["top.txt"]);
  assert.throws(() => ops.planDelete(tree(), "nope", NOW), ops.PlanError);
});

test("rename a file: its object's path only; move into a new folder makes the folder", () => {
  const w = ops.planRename(tree(), "top.txt", "Docs/Old/top2.txt", NOW);
  assert.deepEqual([...w.keys()], [OID("f")]);
  assert.deepEqual(w.get(OID("f")), { ...tree().get(OID("f")), path: "Docs/Old/top2.txt" });
  const moved = ops.planRename(tree(), "top.txt", "Archive/top.txt", NOW);
  assert.deepEqual([...moved.values()].map((b) => b.path).sort(), ["Archive", "Archive/top.txt"]);
  assert.throws(() => ops.planRename(tree(), "top.txt", "Docs/a.txt", NOW), ops.PlanError); // taken
  assert.throws(() => ops.planRename(tree(), "Docs", "Docs/Old/x", NOW), ops.PlanError); // into itself
  assert.throws(() => ops.planRename(tree(), "top.txt", "../x", NOW), f.FormatError);
  assert.equal(ops.planRename(tree(), "top.txt", "top.txt", NOW), null);
});

test("rename a folder: files keep their objects; old folder objects to the trash, new ones made", () => {
  const t = tree();
  const w = ops.planRename(t, "Docs", "Papers", NOW);
  assert.equal(w.get(OID("c")).path, "Papers/a.txt");
  assert.equal(w.get(OID("e")).path, "Papers/Old/b.txt");
  assert.equal(w.get(OID("b")).deleted, NOW);
  assert.equal(w.get(OID("d")).deleted, NOW);
  const after = apply(t, w);
  assert.deepEqual(livePaths(after), ["Papers", "Papers/Old", "Papers/Old/b.txt", "Papers/a.txt", "top.txt"]);
  // One live object per path.
  assert.equal(new Set(livePaths(after)).size, livePaths(after).length);
});

test("restore from the trash: deleted cleared, current version appended as the newest", () => {
  const t = apply(tree(), ops.planDelete(tree(), "Docs/a.txt", NOW));
  const w = ops.planRestore(t, OID("c"), 10, NOW + 1);
  const body = w.get(OID("c"));
  assert.equal(body.deleted, null);
  assert.deepEqual(body.versions.map((v) => v.n), [1, 2, 3]);
  assert.deepEqual(body.versions[2].chunks, body.versions[1].chunks);
  assert.equal(body.versions[2].time, NOW + 1);
  assert.throws(() => ops.planRestore(tree(), OID("c"), 10, NOW), ops.PlanError); // not in the trash
  // A path taken again meanwhile is refused, not overwritten.
  const taken = apply(t, ops.planUpload(t, "Docs/a.txt", version(1, 7), 10));
  assert.throws(() => ops.planRestore(taken, OID("c"), 10, NOW), ops.PlanError);
});

test("restore a folder from the trash brings back what was deleted with it, parents too", () => {
  const t = apply(tree(), ops.planDelete(tree(), "Docs", NOW));
  const w = ops.planRestore(t, OID("d"), 10, NOW + 1); // Docs/Old: needs Docs back
  const after = apply(t, w);
  assert.deepEqual(livePaths(after), ["Docs", "Docs/Old", "Docs/Old/b.txt", "top.txt"]);
  assert.equal(w.has(OID("b")), true); // the trashed Docs object, not a new one
  const all = ops.planRestore(t, OID("b"), 10, NOW + 1);
  assert.deepEqual(livePaths(apply(t, all)), livePaths(tree()));
});

test("restore a version: appended again as the newest, within keep_versions", () => {
  const w = ops.planRestoreVersion(tree(), OID("c"), 1, 2, NOW);
  const body = w.get(OID("c"));
  assert.deepEqual(body.versions.map((v) => v.n), [2, 3]);
  assert.deepEqual(body.versions[1].chunks, version(1, 1).chunks);
  assert.equal(body.versions[1].mtime_ns, 1700000000123456789n);
  assert.throws(() => ops.planRestoreVersion(tree(), OID("c"), 9, 2, NOW), ops.PlanError);
});

test("new folder, and the trash list", () => {
  const w = ops.planNewFolder(tree(), "Docs/New");
  assert.deepEqual([...w.values()], [dir("Docs/New")]);
  assert.throws(() => ops.planNewFolder(tree(), "Docs"), ops.PlanError);
  const t = apply(tree(), ops.planRename(tree(), "Docs", "Papers", NOW));
  const entries = new Map([...apply(t, ops.planDelete(t, "top.txt", NOW + 5))].map(([oid, b]) => [oid, { ...b, current: b.versions.at(-1) ?? null }]));
  // The old folders are in the trash (nothing live at their paths); the deleted file first.
  assert.deepEqual(ops.trashList(entries).map((i) => i.entry.path), ["top.txt", "Docs", "Docs/Old"]);
});
