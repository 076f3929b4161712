"""How every benchmark ends: the result as indented JSON for a person (unless --json), then one JSON line."""

from __future__ import annotations

import json


def print_result(result: dict, json_only: bool) -> None:
    if not json_only:
        print(json.dumps(result, indent=2))
    print(json.dumps(result))
