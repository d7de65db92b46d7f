"""Errors the client raises; each message is meant to be shown to the user as is.

Messages never contain the file key, a payment preimage or a macaroon.
"""

from __future__ import annotations


class ClientError(Exception):
    """Base class of every client error."""


class ConfigError(ClientError):
    """The client configuration file is unreadable or has a bad value."""


class GatewayError(ClientError):
    """The gateway answered with an error (an RFC 9457 problem) or something unusable."""

    def __init__(self, status: int, title: str, detail: str) -> None:
        self.status = status
        self.title = title
        self.detail = detail
        super().__init__(f"gateway answered {status} {title}: {detail}")


class PaymentRefused(ClientError):
    """The client refused to pay: above the price limit, or not what the gateway announced."""


class PaymentError(ClientError):
    """A payment was attempted through the Lightning node and did not succeed."""
