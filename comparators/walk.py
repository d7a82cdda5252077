"""Two JSON documents compared field by field, identical subtrees skipped at C speed.

DeepDiff visits every node, equal or not, at some microseconds each (docs/performance.md).
This walk compares containers with
`==` first and descends only where they differ; scalar leaves are compared here (an
integer and an equal float are one number, floats within the tolerance are equal,
anything else of another type is a type change); lists whose items cannot be paired
by position (different lengths, or `ignore_order`) go to DeepDiff, which aligns them.

Python's `==` holds `True == 1`; a service answering `1` for `true` diverges. So when
the documents hold booleans at all, containers are compared as canonical JSON text.
"""

from __future__ import annotations

import json
from typing import Any, Callable

from deepdiff import DeepDiff

from proxy.model import CompareSpec, Difference
from proxy.model.jsonpath import covers, format_path

Path = list[str | int]
KINDS = {"values_changed": "changed", "type_changes": "type", "dictionary_item_added": "added",
         "iterable_item_added": "added", "dictionary_item_removed": "removed", "iterable_item_removed": "removed"}


def differences(legacy: Any, new: Any, spec: CompareSpec, booleans: bool = True) -> list[Difference]:
    """Every difference between two parsed JSON documents, at its path, ignore_paths left out."""
    found: list[Difference] = []
    _Walk(spec, _canonical_equal if booleans else _plain_equal, found).walk(legacy, new, [])
    return sorted(found, key=lambda d: d.path)


class _Walk:
    def __init__(self, spec: CompareSpec, equal: Callable[[Any, Any], bool], found: list[Difference]) -> None:
        self.spec, self.equal, self.found = spec, equal, found

    def walk(self, legacy: Any, new: Any, path: Path) -> None:
        if self._ignored(path) or self.equal(legacy, new):
            return
        if isinstance(legacy, dict) and isinstance(new, dict):
            self._mapping(legacy, new, path)
        elif isinstance(legacy, list) and isinstance(new, list) and len(legacy) == len(new) \
                and not self.spec.ignore_order:
            for index, (old, now) in enumerate(zip(legacy, new, strict=True)):
                self.walk(old, now, path + [index])
        elif isinstance(legacy, (dict, list)) or isinstance(new, (dict, list)):
            self._deepdiff(legacy, new, path)
        else:
            self._scalar(legacy, new, path)

    def _mapping(self, legacy: dict, new: dict, path: Path) -> None:
        for key in sorted(legacy.keys() | new.keys()):
            where = path + [key]
            if key not in new:
                self._add(where, legacy[key], None, "removed")
            elif key not in legacy:
                self._add(where, None, new[key], "added")
            else:
                self.walk(legacy[key], new[key], where)

    def _scalar(self, legacy: Any, new: Any, path: Path) -> None:
        if _number(legacy) and _number(new):
            if abs(legacy - new) > self.spec.float_tolerance:
                self._add(path, legacy, new, "changed")
        elif type(legacy) is not type(new):
            self._add(path, legacy, new, "type")
        elif legacy != new:
            self._add(path, legacy, new, "changed")

    def _deepdiff(self, legacy: Any, new: Any, path: Path) -> None:
        diff = DeepDiff(legacy, new, view="tree", threshold_to_diff_deeper=0, ignore_order=self.spec.ignore_order,
                        ignore_numeric_type_changes=True, math_epsilon=self.spec.float_tolerance or None)
        for report, levels in diff.items():
            kind = KINDS.get(report, "changed")
            for level in levels:
                self._add(path + list(level.path(output_format="list")), None if kind == "added" else level.t1,
                          None if kind == "removed" else level.t2, kind)

    def _add(self, path: Path, legacy: Any, new: Any, kind: str) -> None:
        if not self._ignored(path):
            self.found.append(Difference(format_path(path), legacy, new, kind))

    def _ignored(self, path: Path) -> bool:
        return bool(self.spec.ignore_paths) and any(covers(p, format_path(path)) for p in self.spec.ignore_paths)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _plain_equal(legacy: Any, new: Any) -> bool:
    return legacy == new


def _canonical_equal(legacy: Any, new: Any) -> bool:
    if not isinstance(legacy, (dict, list)):
        same_kind = type(legacy) is type(new) or (_number(legacy) and _number(new))
        return same_kind and legacy == new
    return legacy == new and _text(legacy) == _text(new)


def _text(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))
