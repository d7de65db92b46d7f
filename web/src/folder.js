// Folder links (docs/format.md §16): `<gateway>/d/<file-id>#v1.<key>` names a file whose
// plaintext is the padded folder manifest: every file's relative path, size and capability.
// The manifest is written by whoever shared the link, so every path is checked here before
// the page offers a single download. Byte for byte as storage/folder_link.py
// (web/test/folder.test.mjs checks docs/folder-link-vectors.json).

import { FormatError, MAX_PLAINTEXT_SIZE, checkGateway, decodeFileId, decodeKey, encodeFileId, encodeKey } from "./format.js";
import { byCodePoint, canonicalJson, checkPath, pad, unpad } from "./vault.js";

export const FOLDER_LINK_VERSION = 1;
export const FOLDER_MEDIA_TYPE = "application/vnd.bitcache.folder+json";
export const MAX_FOLDER_FILES = 100_000;
export const MAX_FOLDER_MANIFEST_BYTES = 64 << 20;
export const MIN_PADDED_BYTES = 1024;
const LINK_SHAPE = "<gateway>/d/<file-id>#v1.<key>";
const MANIFEST_FIELDS = "files,name,version";
const FILE_FIELDS = "file_id,key,path,size";

/** `<gateway>/d/<id>#v1.<key>`: the key (and the version) only ever in the fragment. */
export function buildFolderLink(gateway, fileId, key) {
  checkGateway(gateway);
  return `${gateway}/d/${encodeFileId(fileId)}#v${FOLDER_LINK_VERSION}.${encodeKey(key)}`;
}

/** The key from a folder link's fragment (`v1.<key>`); FormatError never echoes the key. */
export function folderKeyFromFragment(fragment) {
  if (!fragment) throw new FormatError(`folder link has no '#v1.<key>' fragment (expected ${LINK_SHAPE}); the link was probably cut off when copied`);
  const dot = fragment.indexOf(".");
  if (dot < 0 || fragment[0] !== "v") throw new FormatError(`folder link fragment must be 'v<version>.<key>' (${LINK_SHAPE})`);
  if (fragment.slice(0, dot) !== `v${FOLDER_LINK_VERSION}`) throw new FormatError(`unsupported folder link version ${fragment.slice(0, Math.min(dot, 8))}`);
  try {
    return decodeKey(fragment.slice(dot + 1));
  } catch (e) {
    throw new FormatError(`folder link has a bad key: ${e.message}`);
  }
}

export function parseFolderLink(url) {
  if (typeof url !== "string") throw new FormatError("folder link must be a string");
  const trimmed = url.trim();
  const hash = trimmed.indexOf("#");
  const base = hash < 0 ? trimmed : trimmed.slice(0, hash);
  const key = folderKeyFromFragment(hash < 0 ? "" : trimmed.slice(hash + 1));
  const marker = base.lastIndexOf("/d/");
  if (marker < 0) throw new FormatError(`folder link has no '/d/' path (expected ${LINK_SHAPE})`);
  const gateway = base.slice(0, marker);
  let fileId;
  try {
    fileId = decodeFileId(base.slice(marker + 3));
  } catch (e) {
    throw new FormatError(`folder link has a bad file id: ${e.message}`);
  }
  try {
    checkGateway(gateway);
  } catch (e) {
    throw new FormatError(`folder link has a bad gateway: ${e.message}`);
  }
  return { gateway, fileId, key };
}

const shown = (path) => JSON.stringify(String(path).slice(0, 80)); // control characters escaped

function checkFiles(files) {
  if (files.length > MAX_FOLDER_FILES) throw new FormatError(`a folder link holds at most ${MAX_FOLDER_FILES} files`);
  const paths = new Set();
  for (const f of files) {
    try {
      checkPath(f.path);
    } catch (e) {
      throw new FormatError(`refused path ${shown(f.path)}: ${e.message}`);
    }
    if (!Number.isSafeInteger(f.size) || f.size < 0 || f.size > MAX_PLAINTEXT_SIZE) throw new FormatError(`refused size of ${shown(f.path)}`);
    if (paths.has(f.path)) throw new FormatError(`path ${shown(f.path)} is listed twice`);
    paths.add(f.path);
  }
  for (const p of paths) {
    const parts = p.split("/");
    for (let i = 1; i < parts.length; i++) {
      if (paths.has(parts.slice(0, i).join("/"))) throw new FormatError(`path ${shown(p)} is inside a file`);
    }
  }
}

function checkName(name) {
  if (typeof name !== "string") throw new FormatError("folder name must be a string");
  try {
    checkPath(name);
  } catch (e) {
    throw new FormatError(`refused folder name ${shown(name)}: ${e.message}`);
  }
  if (name.includes("/")) throw new FormatError("a folder name is one bare name, not a path");
}

/** Validates a parsed manifest object; returns {name, files: [{path, size, fileId, key}]}. */
export function validateFolderManifest(value) {
  if (!value || typeof value !== "object" || Array.isArray(value) || Object.keys(value).sort().join(",") !== MANIFEST_FIELDS) {
    throw new FormatError("folder manifest must have exactly files, name, version");
  }
  if (value.version !== FOLDER_LINK_VERSION) throw new FormatError(`unsupported folder manifest version ${String(value.version).slice(0, 8)}`);
  checkName(value.name);
  if (!Array.isArray(value.files) || value.files.length > MAX_FOLDER_FILES) throw new FormatError(`files must be a list of at most ${MAX_FOLDER_FILES}`);
  const files = value.files.map((item) => {
    if (!item || typeof item !== "object" || Array.isArray(item) || Object.keys(item).sort().join(",") !== FILE_FIELDS) {
      throw new FormatError("a folder file must have exactly file_id, key, path, size");
    }
    if (typeof item.path !== "string") throw new FormatError("a folder file's path must be a string");
    if (!Number.isSafeInteger(item.size)) throw new FormatError("a folder file's size must be an integer");
    return { path: item.path, size: item.size, fileId: decodeFileId(item.file_id), key: decodeKey(item.key) };
  });
  checkFiles(files);
  return { name: value.name, files };
}

/** Parses manifest JSON text, refusing non-integer numbers (as the reference does). */
export function parseFolderManifestJson(text) {
  let value;
  try {
    value = JSON.parse(text, (k, v) => {
      if (typeof v === "number" && !Number.isInteger(v)) throw new FormatError("folder manifest numbers must be integers");
      return v;
    });
  } catch (e) {
    if (e instanceof FormatError) throw e;
    throw new FormatError(`folder manifest is not JSON: ${e.message}`);
  }
  // `1.0` parses as the integer 1 in JS: refuse any fraction or exponent outside strings.
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (inString) {
      if (c === "\\") i++;
      else if (c === '"') inString = false;
    } else if (c === '"') inString = true;
    else if ((c === "." || c === "e" || c === "E") && /[0-9]/.test(text[i - 1] ?? "")) {
      throw new FormatError("folder manifest numbers must be integers");
    }
  }
  return validateFolderManifest(value);
}

/** The manifest from the (decrypted) manifest file's bytes. */
export function folderManifestFromPlaintext(bytes) {
  if (bytes.length > MAX_FOLDER_MANIFEST_BYTES) throw new FormatError("folder manifest is too large");
  let text;
  try {
    text = new TextDecoder("utf-8", { fatal: true }).decode(unpad(bytes));
  } catch (e) {
    if (e instanceof FormatError) throw e;
    throw new FormatError("folder manifest is not UTF-8");
  }
  return parseFolderManifestJson(text);
}

/** Canonical manifest JSON bytes (files sorted by path, code-point order). */
export function folderManifestToJson(name, files) {
  checkName(name);
  checkFiles(files);
  const sorted = [...files].sort((a, b) => byCodePoint(a.path, b.path));
  return canonicalJson({
    version: FOLDER_LINK_VERSION,
    name,
    files: sorted.map((f) => ({ path: f.path, size: f.size, file_id: encodeFileId(f.fileId), key: encodeKey(f.key) })),
  });
}

/** The bytes stored (encrypted) as the manifest file: padded, at least 1 KiB. */
export function folderManifestToPlaintext(name, files) {
  return pad(folderManifestToJson(name, files), MIN_PADDED_BYTES);
}
