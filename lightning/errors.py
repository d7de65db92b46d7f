"""Errors from a Lightning node, split by what the caller should do about them."""


class LightningError(Exception):
    """The node answered, but refused or failed the request."""


class LightningUnavailable(LightningError):
    """The node could not be reached or did not answer in time: retry later."""


class PaymentFailed(LightningError):
    """A payment was attempted and definitely did not succeed."""


class StreamIdle(LightningUnavailable):
    """A stream sent nothing for its idle limit: it may be dead without either end knowing
    (a half-open connection, a TLS record cut short): reconnect."""
