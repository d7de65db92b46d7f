// What the vault page writes for each thing the user does (upload, delete, restore, rename,
// new folder), decided on the tree as last read: pure, no network, no DOM
// (web/test/vaultops.test.mjs). Each plan is a Map of object id → new body (without its
// counter, which the writer sets); the page writes it with the vault's compare-and-set and,
// if another device wrote first, reads the changes and plans again.
//
// The objects are those `bitcache sync` writes for the same change (client/sync/engine.py,
// client/sync/history.py), so a device running it applies them to its folder:
// * a new version of a file is appended to its object (at most the tenant's keep_versions,
//   oldest dropped), a file at a new path is a new object with version 1;
// * a delete sets `deleted` (the trash), on every object at or under the path;
// * a restore from the trash clears `deleted` and appends the current version again as the
//   newest; restoring version V appends V again as the newest;
// * a file's rename or move rewrites its object's `path`; a folder's rename moves its files
//   (same objects) and, like the sync client seeing a folder renamed on disk, puts the old
//   folder objects in the trash and makes new ones at the new paths (a device then removes
//   the emptied old folder instead of uploading it again).
// Nothing here deletes an object for good (emptying the trash frees chunks: left to the CLI).

import { FormatError, b64urlEncode } from "./format.js";
import { checkPath, newObjectId } from "./vault.js";

export class PlanError extends Error {
  constructor(message) {
    super(message);
    this.name = "PlanError";
  }
}

/** The working tree: object id → raw body ({kind, path, deleted, versions, …}). */
export function treeOf(entries) {
  return new Map([...entries].map(([oid, e]) => [oid, e.raw]));
}

/** A plan: writes on top of the tree, queried as if already applied. */
class Plan {
  constructor(tree) {
    this.tree = new Map(tree);
    this.writes = new Map();
  }

  put(oid, body) {
    const { counter: _drop, ...rest } = body;
    this.tree.set(oid, rest);
    this.writes.set(oid, rest);
  }

  live(path) {
    for (const [oid, b] of this.tree) if (b.deleted === null && b.path === path) return [oid, b];
    return null;
  }

  liveUnder(path) {
    const prefix = `${path}/`;
    return [...this.tree].filter(([, b]) => b.deleted === null && (b.path === path || b.path.startsWith(prefix)));
  }

  /** Every folder above `path` exists as a live folder object: restored from the trash if
   *  one is there, made otherwise; a file in the way is refused. */
  parents(path) {
    const parts = path.split("/");
    for (let i = 1; i < parts.length; i++) {
      const dir = parts.slice(0, i).join("/");
      const found = this.live(dir);
      if (found) {
        if (found[1].kind !== "dir") throw new PlanError(`“${dir}” is a file, not a folder`);
        continue;
      }
      const trashed = [...this.tree].filter(([, b]) => b.kind === "dir" && b.path === dir && b.deleted !== null);
      trashed.sort((a, b) => b[1].deleted - a[1].deleted);
      if (trashed.length) this.put(trashed[0][0], { ...trashed[0][1], deleted: null });
      else this.put(newObjectId(), newDir(dir));
    }
  }

  result() {
    return this.writes.size ? this.writes : null;
  }
}

function newDir(path) {
  return { kind: "dir", path, deleted: null, versions: [] };
}

function sameContent(a, b) {
  if (!a || !b || a.size !== b.size || a.chunks.length !== b.chunks.length) return false;
  return a.chunks.every((c, i) => c[0] === b.chunks[i][0] && c[1] === b.chunks[i][1]);
}

/** A version's raw body from the upload: chunks as [b64url(mac), length]. */
export function versionBody({ size, mtimeNs, time, device, chunks }) {
  return {
    n: 1,
    size,
    mtime_ns: mtimeNs,
    time,
    device,
    chunks: chunks.map(([mac, length]) => [typeof mac === "string" ? mac : b64urlEncode(mac), length]),
  };
}

function keepLast(versions, keep) {
  if (!Number.isSafeInteger(keep) || keep < 1) throw new FormatError("keep_versions must be a positive integer");
  return versions.slice(-keep);
}

/**
 * An upload to `path`: a new version of the live file there (nothing if its content is the
 * same), or a new object (a path in the trash only gets a new object, as the sync client does).
 */
export function planUpload(tree, path, version, keep) {
  checkPath(path);
  const plan = new Plan(tree);
  const found = plan.live(path);
  if (found && found[1].kind === "dir") throw new PlanError(`“${path}” is a folder`);
  if (found) {
    const [oid, body] = found;
    const versions = body.versions;
    if (sameContent(versions[versions.length - 1], version)) return null;
    const n = versions.length ? versions[versions.length - 1].n + 1 : 1;
    plan.put(oid, { ...body, versions: keepLast([...versions, { ...version, n }], keep) });
  } else {
    plan.parents(path);
    plan.put(newObjectId(), { kind: "file", path, deleted: null, versions: [{ ...version, n: 1 }] });
  }
  return plan.result();
}

/** A file or folder (and everything under it) into the trash. */
export function planDelete(tree, path, now) {
  const plan = new Plan(tree);
  const targets = plan.liveUnder(path);
  if (!targets.length) throw new PlanError(`“${path}” is no longer in the vault`);
  for (const [oid, body] of targets) plan.put(oid, { ...body, deleted: now });
  return plan.result();
}

/** A new, empty folder. */
export function planNewFolder(tree, path) {
  checkPath(path);
  const plan = new Plan(tree);
  if (plan.live(path)) throw new PlanError(`“${path}” already exists`);
  plan.parents(path);
  plan.put(newObjectId(), newDir(path));
  return plan.result();
}

/** Renames or moves a file or folder from `from` to `to` (a whole path in the vault). */
export function planRename(tree, from, to, now) {
  checkPath(to);
  if (to === from) return null;
  if (to.startsWith(`${from}/`)) throw new PlanError("a folder cannot move into itself");
  const plan = new Plan(tree);
  const moving = plan.liveUnder(from);
  if (!moving.length) throw new PlanError(`“${from}” is no longer in the vault`);
  if (plan.liveUnder(to).length) throw new PlanError(`“${to}” already exists`);
  plan.parents(to);
  const rebase = (p) => to + p.slice(from.length);
  // Folders first, shallowest first, so each new folder's parent is already there.
  const dirs = moving.filter(([, b]) => b.kind === "dir").sort((a, b) => a[1].path.length - b[1].path.length);
  for (const [oid, body] of dirs) {
    plan.put(oid, { ...body, deleted: now });
    if (!plan.live(rebase(body.path))) plan.put(newObjectId(), newDir(rebase(body.path)));
  }
  for (const [oid, body] of moving.filter(([, b]) => b.kind === "file")) {
    const target = rebase(body.path);
    plan.parents(target);
    plan.put(oid, { ...body, path: target });
  }
  return plan.result();
}

/**
 * An object out of the trash. A file gets its current version again as the newest (as
 * `bitcache restore PATH`); a folder brings back what went to the trash with it.
 */
export function planRestore(tree, oid, keep, now) {
  const plan = new Plan(tree);
  const body = plan.tree.get(oid);
  if (!body || body.deleted === null) throw new PlanError("that is not in the trash");
  const restoreOne = (id, b) => {
    if (plan.live(b.path)) throw new PlanError(`“${b.path}” exists again: rename or delete it first`);
    plan.parents(b.path);
    if (b.kind === "file" && b.versions.length) {
      const last = b.versions[b.versions.length - 1];
      const again = { ...last, n: last.n + 1, time: now };
      plan.put(id, { ...b, deleted: null, versions: keepLast([...b.versions, again], keep) });
    } else {
      plan.put(id, { ...b, deleted: null });
    }
  };
  restoreOne(oid, body);
  if (body.kind === "dir") {
    const prefix = `${body.path}/`;
    const withIt = [...plan.tree]
      .filter(([, b]) => b.deleted === body.deleted && b.path.startsWith(prefix))
      .sort((a, b) => a[1].path.length - b[1].path.length);
    for (const [id, b] of withIt) if (!plan.live(b.path)) restoreOne(id, b);
  }
  return plan.result();
}

/** Version `n` of a live file made current again, as the newest version. */
export function planRestoreVersion(tree, oid, n, keep, now) {
  const plan = new Plan(tree);
  const body = plan.tree.get(oid);
  if (!body || body.kind !== "file" || body.deleted !== null) throw new PlanError("that file is no longer in the vault");
  const chosen = body.versions.find((v) => v.n === n);
  if (!chosen) throw new PlanError(`“${body.path}” has no version ${n} any more`);
  const newest = body.versions[body.versions.length - 1].n;
  const again = { ...chosen, n: newest + 1, time: now };
  plan.put(oid, { ...body, versions: keepLast([...body.versions, again], keep) });
  return plan.result();
}

/** What the trash shows: files, and folders whose path is not live again; newest first. */
export function trashList(entries) {
  const live = new Set([...entries.values()].filter((e) => e.deleted === null).map((e) => e.path));
  return [...entries]
    .filter(([, e]) => e.deleted !== null && (e.kind === "file" || !live.has(e.path)))
    .map(([oid, entry]) => ({ oid, entry }))
    .sort((a, b) => b.entry.deleted - a.entry.deleted || (a.entry.path < b.entry.path ? -1 : 1));
}
