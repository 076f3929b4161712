"""The error roots of the bus boundary: every failure a caller of `broker` can see."""


class BusError(Exception):
    """Root of every failure raised by the bus wrapper (connection, publish, request)."""


class BusTimeoutError(BusError):
    """A wait on the bus (connect, publish ack, response) passed its deadline."""


class BusNotConnectedError(BusError):
    """An operation needed a live broker connection and there was none."""


class MessageError(ValueError):
    """A payload could not be decoded or failed validation (bad msgpack, type, range, size, version)."""


class TopicError(ValueError):
    """A topic string is not part of the fleet's topic tree, or a topic parameter is malformed."""

