"""InfluxDB line protocol: encode MetricPoints with the escaping each part of a line needs.

Both backends write these lines (InfluxDB 1.x `/write`, InfluxDB 2.x `/api/v2/write` through
influxdb-client), so one encoder keeps them byte-for-byte identical.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable

from broker.messages.metrics import MetricPoint

logger = logging.getLogger(__name__)

_MEASUREMENT = str.maketrans({",": r"\,", " ": r"\ ", "\n": " ", "\r": " "})
_KEY = str.maketrans({",": r"\,", "=": r"\=", " ": r"\ ", "\n": " ", "\r": " "})
# Inside a double-quoted string field only `"` and `\` need escaping; newlines are replaced because
# InfluxDB 1.6 ends a point at a newline even inside quotes.
_STRING = str.maketrans({'"': r"\"", "\\": "\\\\", "\n": " ", "\r": " "})


def escape_measurement(name: str) -> str:
    return name.translate(_MEASUREMENT)


def escape_key(text: str) -> str:
    """A tag key, tag value or field key."""
    # A trailing backslash would escape the separator that follows it.
    return text.translate(_KEY).rstrip("\\")


def field_value(value: float | int | str | bool) -> str | None:
    """The literal for a field value; None for a float InfluxDB cannot store (NaN, ±inf)."""
    if isinstance(value, bool):  # before int: bool is an int subclass
        return "true" if value else "false"
    if isinstance(value, int):
        return f"{value}i"
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else None
    return '"' + str(value).translate(_STRING) + '"'


def encode_point(point: MetricPoint) -> str | None:
    """One line, tags sorted (InfluxDB's fastest path); None if no field has a storable value."""
    tags = "".join(
        f",{escape_key(key)}={escape_key(value)}" for key, value in sorted(point.tags.items()) if key and value != ""
    )
    fields = []
    for key, value in point.fields.items():
        literal = field_value(value)
        if literal is not None and key:
            fields.append(f"{escape_key(key)}={literal}")
    if not fields:
        return None
    return f"{escape_measurement(point.measurement)}{tags} {','.join(fields)} {point.timestamp_ns}"


def encode(points: Iterable[MetricPoint]) -> str:
    """Lines for all storable points, newline-separated. Unstorable points are logged and skipped."""
    lines = []
    for point in points:
        line = encode_point(point)
        if line is None:
            logger.debug("skipping %s point with no storable field: %s", point.measurement, point.fields)
            continue
        lines.append(line)
    return "\n".join(lines)
