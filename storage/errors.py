"""Exceptions raised by the storage format."""


class StorageError(Exception):
    """Base class for every error raised by :mod:`storage`."""


class WrongKeyError(StorageError):
    """The key does not match the file's public key commitment."""


class ChunkAuthError(StorageError):
    """A sealed chunk or manifest failed authentication.

    Covers tampering, reordering, splicing from another file and truncation.
    """


class FormatError(StorageError, ValueError):
    """Malformed header, manifest, share link, encoding or argument."""
