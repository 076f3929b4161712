"""Failures of a metric store; the recorder retries the first kind and drops the second."""


class StoreError(Exception):
    """Root of every failure raised by a metric store."""


class StoreUnavailableError(StoreError):
    """The store did not answer, answered too slowly or failed on its side (5xx): worth retrying."""


class StoreRejectedError(StoreError):
    """The store refused the request itself (4xx: bad line protocol, bad credentials): retrying won't help."""
