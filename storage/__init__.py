"""Bitcache client-side encryption format (version 1): pure logic, no I/O.

See ``docs/format.md`` for the specification and ``docs/test-vectors.json``
for the test vectors.
"""

from storage.errors import ChunkAuthError, FormatError, StorageError, WrongKeyError

__all__ = ["ChunkAuthError", "FormatError", "StorageError", "WrongKeyError"]
