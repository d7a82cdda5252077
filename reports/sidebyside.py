"""Two bodies as a reviewer compares them: pretty-printed, aligned line by line, the differing lines marked.

Line pairs come from difflib.SequenceMatcher; within a changed pair the differing characters are marked too.
A differing line whose JSON path the route ignores, or that was learned as noise, is marked as such
(`excused`), never as a change: the comparison did not count it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from difflib import SequenceMatcher
from typing import Callable

SIGNS = {"": " ", "changed": "~", "removed": "−", "added": "+", "filler": ""}
MAX_INLINE = 2000  # characters of a changed pair compared character by character; longer lines are marked whole

Segment = tuple[str, bool]  # text, and whether it differs from the other side


@dataclass(frozen=True, slots=True)
class Line:
    """One line of one side; `mark` is "" (equal), changed, removed, added, or filler (no line here)."""

    number: int | None
    mark: str
    segments: tuple[Segment, ...]
    excused: str = ""  # "ignored" or "noise": a differing line the comparison did not count

    @property
    def sign(self) -> str:
        return SIGNS[self.mark]

    @property
    def text(self) -> str:
        return "".join(text for text, _ in self.segments)


@dataclass(frozen=True, slots=True)
class Row:
    legacy: Line
    new: Line

    @property
    def differs(self) -> bool:
        return bool(self.legacy.mark or self.new.mark)


FILLER = Line(None, "filler", ())


def pretty(body: str | None) -> str | None:
    """A JSON body indented with sorted keys, so equal content lines up; other text as it is."""
    if body is None:
        return None
    try:
        return json.dumps(json.loads(body), indent=2, sort_keys=True, ensure_ascii=False)
    except ValueError:
        return body


def side_by_side(legacy: str, new: str, paths: tuple[list[str], list[str]] | None = None,
                 excuse: Callable[[str], str] | None = None) -> list[Row]:
    """The two texts as aligned rows: equal lines side by side, differing ones marked, gaps filled.
    `paths`: the JSON path each line of each side shows; `excuse`: what a path's difference is, when the
    comparison did not count it ("ignored", "noise"), else ""."""
    rows = _aligned(legacy.splitlines(), new.splitlines())
    if paths is None or excuse is None:
        return rows
    return [_excused(row, paths, excuse) for row in rows]


def _excused(row: Row, paths: tuple[list[str], list[str]], excuse: Callable[[str], str]) -> Row:
    """A differing row whose every line is excused the same way, marked so."""
    if not row.differs:
        return row
    found = {excuse(paths[n][line.number - 1]) for n, line in enumerate((row.legacy, row.new))
             if line.number is not None}
    if len(found) != 1 or "" in found:
        return row
    why = found.pop()
    return Row(*(Line(line.number, line.mark, line.segments, why) if line.number is not None else line
                 for line in (row.legacy, row.new)))


def _aligned(left: list[str], right: list[str]) -> list[Row]:
    rows: list[Row] = []
    for tag, i1, i2, j1, j2 in SequenceMatcher(None, left, right, autojunk=False).get_opcodes():
        if tag == "equal":
            pairs = zip(range(i1, i2), range(j1, j2), strict=True)
            rows += [Row(_line(i, left[i]), _line(j, right[j])) for i, j in pairs]
        else:
            rows += _differing(left, right, range(i1, i2), range(j1, j2))
    return rows


def _differing(left: list[str], right: list[str], mine: range, theirs: range) -> list[Row]:
    rows = []
    for k in range(max(len(mine), len(theirs))):
        i = mine[k] if k < len(mine) else None
        j = theirs[k] if k < len(theirs) else None
        if i is not None and j is not None:
            ours, other = _segments(left[i], right[j])
            rows.append(Row(Line(i + 1, "changed", ours), Line(j + 1, "changed", other)))
        elif i is not None:
            rows.append(Row(_line(i, left[i], "removed"), FILLER))
        elif j is not None:
            rows.append(Row(FILLER, _line(j, right[j], "added")))
    return rows


def _line(index: int, text: str, mark: str = "") -> Line:
    return Line(index + 1, mark, ((text, bool(mark)),))


def _segments(a: str, b: str) -> tuple[tuple[Segment, ...], tuple[Segment, ...]]:
    """The characters of a changed pair that differ; the whole line when they are long or unalike."""
    if len(a) + len(b) > MAX_INLINE:
        return ((a, True),), ((b, True),)
    matcher = SequenceMatcher(None, a, b, autojunk=False)
    if matcher.ratio() < 0.5:
        return ((a, True),), ((b, True),)
    ours: list[Segment] = []
    other: list[Segment] = []
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        _append(ours, a[i1:i2], tag != "equal")
        _append(other, b[j1:j2], tag != "equal")
    return tuple(ours), tuple(other)


def _append(segments: list[Segment], text: str, differs: bool) -> None:
    if not text:
        return
    if segments and segments[-1][1] == differs:
        segments[-1] = (segments[-1][0] + text, differs)
    else:
        segments.append((text, differs))
