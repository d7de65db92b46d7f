"""Names the sync engine makes: conflict copies (Syncthing's pattern) and what it skips."""

from __future__ import annotations

import re
from datetime import UTC, datetime

STATE_DIR = ".bitcache-sync"
_CONFLICT = re.compile(r"\.sync-conflict-\d{8}-\d{6}-")
_DEVICE = re.compile(r"[^A-Za-z0-9_-]+")


def clean_device(name: str) -> str:
    """A device name safe inside a file name: letters, digits, '-' and '_', at most 32."""
    cleaned = _DEVICE.sub("-", name).strip("-")[:32]
    return cleaned or "device"


def conflict_name(path: str, device: str, when: float) -> str:
    """``dir/name.sync-conflict-YYYYMMDD-HHMMSS-<device>.ext`` (UTC), like Syncthing."""
    folder, slash, base = path.rpartition("/")
    stem, dot, ext = base.rpartition(".")
    if not stem:  # no extension, or a dot file like ".bashrc"
        stem, dot, ext = base, "", ""
    stamp = datetime.fromtimestamp(when, UTC).strftime("%Y%m%d-%H%M%S")
    return f"{folder}{slash}{stem}.sync-conflict-{stamp}-{clean_device(device)}{dot}{ext}"


def is_conflict_copy(path: str) -> bool:
    return bool(_CONFLICT.search(path.rpartition("/")[2]))


def skipped(name: str) -> bool:
    """Entries never synced: our state folder and our partial downloads."""
    return name == STATE_DIR or name.endswith(".bitcache-part")
