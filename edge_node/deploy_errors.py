"""Errors of model deployment; `str()` of one is the reason the failed status reports."""

class DeployError(Exception):
    """Root of deployment errors; `str()` is the reason reported in the failed status."""


class DeployFailed(DeployError):
    """A failure that retrying cannot fix: wrong hash, wrong size, unknown model, bad index."""


class TransientDeployError(DeployError):
    """A failure worth retrying: connection lost, timeout, 5xx."""
