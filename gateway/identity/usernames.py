"""Usernames: the form kept for display and the normalised form that must be unique (pure).

Two names that differ only in case or in Unicode compatibility forms ("Alice", "ALICE",
"alice" in full-width letters, U+FF41…) are one name: uniqueness and login compare
`normalize(name)`, which is NFKC, then case folding, then NFKC again (case folding can
leave a string that is no longer in NFKC).
"""

from __future__ import annotations

import unicodedata

MAX_LENGTH = 128


class InvalidUsername(ValueError):
    """The name cannot be a username; the message says why (never echoes a password)."""


def normalize(name: str) -> str:
    """The form compared for uniqueness and at login."""
    if name.isascii():  # the common case, and for ASCII NFKC is the identity
        return name.lower()
    folded = unicodedata.normalize("NFKC", name).casefold()
    return unicodedata.normalize("NFKC", folded)


def check(name: str) -> None:
    """Raise InvalidUsername unless `name` is usable as a login name."""
    if not name:
        raise InvalidUsername("username is empty")
    if len(name) > MAX_LENGTH:
        raise InvalidUsername(f"username longer than {MAX_LENGTH} characters")
    # Control and invisible characters (tabs, newlines, zero-width joiners) make two names
    # look the same on screen; isprintable() is False for all of them and True for " ".
    if not name.isprintable():
        raise InvalidUsername("username has control or invisible characters")
    if name != name.strip():
        raise InvalidUsername("username starts or ends with a space")
