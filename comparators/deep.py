"""The comparator of record: status, the named headers, and the body.

JSON is compared field by field (comparators.walk: identical subtrees skipped, lists
aligned by DeepDiff with threshold_to_diff_deeper=0, so a changed field is reported where
it is, not as its whole parent), honouring ignore_paths, ignore_order and
float_tolerance; an integer and an equal float are the same number, as JSON readers see
them. Other text is compared whole, and anything else by digest.
"""

from __future__ import annotations

import hashlib
import json
from itertools import zip_longest
from typing import Any

from comparators import walk
from comparators.bodies import Lifted, lift
from proxy.model import CompareSpec, Comparison, Difference, Observation
from proxy.model.jsonpath import covers

EXCERPT = 200  # characters of a differing text line kept in a difference


class DeepDiffComparator:
    """Compares two observations; stateless, so it can run in a worker process."""

    def compare(self, legacy: Observation, new: Observation, spec: CompareSpec) -> Comparison:
        found = _status(legacy, new)
        if legacy.error or new.error:
            return Comparison(tuple(found), "none")
        found += _headers(legacy, new, spec.headers)
        kind, body = _bodies(lift(legacy), lift(new), spec)
        found += [d for d in body if not any(covers(p, d.path) for p in spec.ignore_paths)]  # `$` for text
        return Comparison(tuple(found), kind)


def _status(legacy: Observation, new: Observation) -> list[Difference]:
    shown = [o.status if o.error is None else f"no answer ({o.error})" for o in (legacy, new)]
    return [] if shown[0] == shown[1] else [Difference("status", shown[0], shown[1])]


def _headers(legacy: Observation, new: Observation, names: tuple[str, ...]) -> list[Difference]:
    found = []
    for name in names:
        theirs, ours = legacy.header(name), new.header(name)
        if theirs != ours:
            kind = "added" if theirs is None else "removed" if ours is None else "changed"
            found.append(Difference(f"header:{name}", theirs, ours, kind))
    return found


def _bodies(legacy: Lifted, new: Lifted, spec: CompareSpec) -> tuple[str, list[Difference]]:
    if legacy.kind == new.kind == "json":
        return "json", walk.differences(legacy.value, new.value, spec, legacy.booleans or new.booleans)
    texts = [_as_text(x) for x in (legacy, new)]
    if None not in texts:
        return "text", _text(texts[0], texts[1])
    digests = [f"sha256:{hashlib.sha256(_as_bytes(x)).hexdigest()[:16]}" for x in (legacy, new)]
    return "digest", [] if digests[0] == digests[1] else [Difference("$", *digests)]


def _text(legacy: str, new: str) -> list[Difference]:
    if legacy == new:
        return []
    pairs = zip_longest(legacy.splitlines(), new.splitlines(), fillvalue="")
    first = next(((a, b) for a, b in pairs if a != b), (legacy, new))  # or only line endings differ
    return [Difference("$", first[0][:EXCERPT], first[1][:EXCERPT])]


def _as_text(lifted: Lifted) -> str | None:
    if lifted.kind == "bytes":
        return None
    if lifted.kind == "json":
        return _json_text(lifted.value)
    return lifted.value


def _json_text(value: Any) -> str:
    return json.dumps(value, sort_keys=True, indent=1)


def _as_bytes(lifted: Lifted) -> bytes:
    return lifted.value if lifted.kind == "bytes" else (_as_text(lifted) or "").encode()
