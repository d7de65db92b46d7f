"""Errors from an IPFS block store, split by what the caller should do about them."""

import json

__all__ = ["IpfsError", "IpfsNotFound", "IpfsUnavailable", "kubo_error"]


class IpfsError(Exception):
    """The store answered with an error."""


class IpfsUnavailable(IpfsError):
    """The store could not be reached or did not answer in time: retry later."""


class IpfsNotFound(IpfsError):
    """The CID is not available from this store."""


def kubo_error(command: str, status: int, body: bytes) -> IpfsError:
    """What a kubo RPC answer with a status other than 200 means, from its JSON message."""
    try:
        message = str(json.loads(body).get("Message", ""))
    except (ValueError, AttributeError):
        message = body[:200].decode(errors="replace")
    if status >= 502:
        return IpfsUnavailable(f"kubo {command}: HTTP {status} {message}")
    if "not found" in message or ("invalid" in message and "cid" in message.lower()):
        return IpfsNotFound(f"kubo {command}: {message}")
    return IpfsError(f"kubo {command}: HTTP {status} {message}")
