"""What can go wrong with L402 input, split by who reports it.

Every message is safe to show to the other side: none carries a preimage or a key.
"""

from __future__ import annotations

__all__ = ["ChallengeError", "L402Error", "MacaroonError", "TokenRejected"]


class L402Error(ValueError):
    """Bad L402 input (credentials, caveats, identifier); the message is safe to show."""


class TokenRejected(L402Error):
    """A well-formed token that does not grant the requested access."""

    @property
    def reason(self) -> str:
        return str(self)


class MacaroonError(ValueError):
    """Malformed, unsupported or oversized macaroon."""


class ChallengeError(ValueError):
    """No usable L402 challenge in a server's answer (client side)."""
