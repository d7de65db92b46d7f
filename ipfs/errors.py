"""Errors from an IPFS block store, split by what the caller should do about them."""

__all__ = ["IpfsError", "IpfsNotFound", "IpfsUnavailable"]


class IpfsError(Exception):
    """The store answered with an error."""


class IpfsUnavailable(IpfsError):
    """The store could not be reached or did not answer in time: retry later."""


class IpfsNotFound(IpfsError):
    """The CID is not available from this store."""
