"""The JSON path each line of a pretty-printed body shows, so a reviewer's view can tell a difference the
comparison ignored (or learned as noise) from a real one.

`lines()` prints exactly what `json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False)`
prints, a line at a time, each with the path of the value it shows (a container's opening and
closing lines carry the container's path).
"""

from __future__ import annotations

import json
from typing import Any, Iterator

from proxy.model.jsonpath import covers, format_path

INDENT = "  "


def lines(value: Any) -> list[tuple[str, str]]:
    """(line, path) for each line of `value` pretty-printed."""
    return list(_lines(value, [], 0, ""))


def _lines(value: Any, parts: list[str | int], depth: int, head: str) -> Iterator[tuple[str, str]]:
    """`head`: what comes before the value on its first line (the indent, and `"key": ` in a mapping)."""
    path = format_path(parts)
    pad = INDENT * depth
    if isinstance(value, dict) and value:
        yield head + "{", path
        keys = sorted(value)
        for n, key in enumerate(keys):
            inner = list(_lines(value[key], [*parts, key], depth + 1, pad + INDENT + _dumps(key) + ": "))
            yield from _comma(inner, n < len(keys) - 1)
        yield pad + "}", path
    elif isinstance(value, list) and value:
        yield head + "[", path
        for n, item in enumerate(value):
            yield from _comma(list(_lines(item, [*parts, n], depth + 1, pad + INDENT)), n < len(value) - 1)
        yield pad + "]", path
    else:
        yield head + _dumps(value), path


def _comma(block: list[tuple[str, str]], more: bool) -> list[tuple[str, str]]:
    if more:
        text, path = block[-1]
        block[-1] = (text + ",", path)
    return block


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def excused(path: str, ignored: tuple[str, ...], noise: tuple[str, ...],
            counted: tuple[str, ...] | None = None) -> str:
    """"ignored" when `path` is under a path the route ignores, "noise" when under one learned as noise,
    else "" (a real difference, or a line no single path explains).

    `counted`: the paths of the differences the comparison counted, when known. A line whose path is
    none of them, nor above or below one, was not counted either: the route ignored it when it was
    compared (routes.yaml may not be at hand, or may have changed since), so it is "ignored" too."""
    if any(covers(pattern, path) for pattern in ignored):
        return "ignored"
    if any(covers(pattern, path) for pattern in noise):
        return "noise"
    if counted is not None and not any(covers(d, path) or covers(path, d) for d in counted):
        return "ignored"
    return ""
