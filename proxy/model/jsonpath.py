"""Paths into an answer, written as users write `ignore_paths`: `$.items[0].price`, `$['a.b']`.

Also `status` and `header:NAME` for the parts outside the body. `[*]` stands for any
index; a path covers everything below it. One syntax for config, comparison, noise and
reports; standard library only (layer 0).
"""

from __future__ import annotations

import re
from typing import Sequence

Part = str | int | None  # None: [*]
PLAIN_KEY = re.compile(r"^[^.\[\]\s'\"]+$")
SEGMENT = re.compile(r"\.([^.\[\]\s'\"]+)|\['([^']+)'\]|\[(\d+|\*)\]")


def format_path(parts: Sequence[str | int]) -> str:
    """['items', 0, 'price'] -> $.items[0].price"""
    out = ["$"]
    for part in parts:
        if isinstance(part, int):
            out.append(f"[{part}]")
        elif PLAIN_KEY.match(part):
            out.append(f".{part}")
        else:
            out.append(f"['{part}']")
    return "".join(out)


def parse_path(path: str) -> tuple[Part, ...] | None:
    """$.items[*].etag -> ('items', None, 'etag'); None for `status`, `header:...` or nonsense."""
    if not path.startswith("$"):
        return None
    parts: list[Part] = []
    at = 1
    for m in SEGMENT.finditer(path, 1):
        if m.start() != at:
            return None
        key, quoted, index = m.groups()
        parts.append(key if key is not None else quoted if quoted is not None else
                     None if index == "*" else int(index))
        at = m.end()
    return tuple(parts) if at == len(path) else None


def covers(pattern: str, path: str) -> bool:
    """Whether `pattern` (maybe with [*]) is `path` or one of its ancestors."""
    if pattern == path:
        return True
    wanted, parts = parse_path(pattern), parse_path(path)
    if wanted is None or parts is None or len(wanted) > len(parts):
        return False
    return all(w == p or (w is None and isinstance(p, int)) for w, p in zip(wanted, parts, strict=False))


def generalize(path: str) -> str:
    """$.orders[3].updated_at -> $.orders[*].updated_at: one path for every item of a list."""
    return re.sub(r"\[\d+\]", "[*]", path)
