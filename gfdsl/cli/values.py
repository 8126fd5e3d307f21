"""Values typed on the command line, read as a spec would read them (`--set`, `gfdsl sweep`)."""

from __future__ import annotations


def parse_value(v: str):
    """A command-line value as a spec value: 4 -> int, 3e-4 -> float, true, none, [1, 2], else the text."""
    import json

    low = v.lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("none", "null"):
        return None
    for conv in (int, float):
        try:
            x = conv(v)
            return x if conv is int or x == x and abs(x) != float("inf") else v
        except ValueError:
            pass
    if v.startswith("["):
        try:
            return json.loads(v)
        except ValueError:
            pass
    return v.strip('"')
