"""Reads a YAML file safely and remembers the line of every key and list item.

Values come from `yaml.safe_load`; positions come from composing the same text into
nodes (composing constructs no objects), so every later message can say FILE:LINE.
Before either, one pass over the parser's events (a loop, not a recursion) bounds the
document's shape: nesting deeper than MAX_DEPTH would exhaust the composer's recursion,
and aliases that expand to more than MAX_NODES nodes are an alias bomb ("billion
laughs"), which every later walk of the values would pay for.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import yaml

from proxy.model import Problem
from proxy.model.errors import ConfigError

Path = tuple[str | int, ...]
MAX_DEPTH = 64  # nested mappings and lists; routes.yaml needs fewer than ten
MAX_NODES = 100_000  # nodes, counting each alias as the nodes it stands for


@dataclass(frozen=True, slots=True)
class Document:
    """A parsed YAML document and the line (1-based) where each key path starts."""

    source: str
    data: Any
    lines: Mapping[Path, int]
    texts: Mapping[Path, str]  # scalar values as written (`yes`, not True), for hints

    def text(self, path: Path) -> str | None:
        return self.texts.get(tuple(_key(p) for p in path))

    def line(self, path: Path) -> int:
        """The line of `path`, or of its nearest ancestor that has one."""
        for end in range(len(path), 0, -1):
            found = self.lines.get(tuple(_key(p) for p in path[:end]))
            if found is not None:
                return found
        return 1


def read_yaml(text: str, source: str) -> Document:
    """Parse `text`; YAML syntax errors, duplicate keys and a shape too deep or too large raise
    ConfigError with their line."""
    try:
        _check_shape(text, source)
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        raise ConfigError([Problem(source, *_syntax_error(exc, text))]) from exc
    except yaml.YAMLError as exc:
        raise ConfigError([Problem(source, 1, f"YAML error: {exc}")]) from exc
    index = _Index(source)
    if root is not None:
        index.walk(root, ())
    if index.duplicates:
        raise ConfigError(index.duplicates)
    return Document(source, data, index.lines, index.texts)


def _check_shape(text: str, source: str) -> None:
    """Refuse nesting deeper than MAX_DEPTH and aliases that expand past MAX_NODES, at the line where
    that happens, before anything recursive or expanding reads the document."""
    sizes: dict[str, int] = {}  # anchor -> the nodes it stands for
    open_: list[list] = [[0, None]]  # for each open collection: nodes within it so far, its anchor
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(event, (yaml.SequenceStartEvent, yaml.MappingStartEvent)):
            if len(open_) > MAX_DEPTH:
                _refuse(source, event, f"YAML is nested more than {MAX_DEPTH} levels deep")
            open_.append([1, event.anchor])
        elif isinstance(event, (yaml.SequenceEndEvent, yaml.MappingEndEvent)):
            size, anchor = open_.pop()
            _add(open_, size, source, event)
            if anchor is not None:
                sizes[anchor] = size
        elif isinstance(event, yaml.ScalarEvent):
            if event.anchor is not None:
                sizes[event.anchor] = 1
            _add(open_, 1, source, event)
        elif isinstance(event, yaml.AliasEvent):
            _add(open_, sizes.get(event.anchor, 1), source, event)


def _add(open_: list[list], size: int, source: str, event: yaml.Event) -> None:
    open_[-1][0] += size
    if sum(counted for counted, _ in open_) > MAX_NODES:
        _refuse(source, event, f"YAML aliases expand to more than {MAX_NODES} nodes (an alias bomb?)")


def _refuse(source: str, event: yaml.Event, message: str) -> None:
    raise ConfigError([Problem(source, event.start_mark.line + 1, message)])


def _syntax_error(exc: yaml.MarkedYAMLError, text: str) -> tuple[int, str]:
    last_line = max(text.count("\n") + (not text.endswith("\n")), 1)
    def line_of(mark: yaml.Mark | None) -> int:  # a mark at the end of the text is on the last line
        return min(mark.line + 1, last_line) if mark else 1

    line = line_of(exc.problem_mark or exc.context_mark)
    message = f"YAML syntax error: {exc.problem or exc}"
    if exc.context and exc.context_mark and line_of(exc.context_mark) != line:
        message += f" ({exc.context} that starts at line {line_of(exc.context_mark)})"
    return line, message


class _Index:
    """Lines and written text of every key, item and scalar; duplicate keys as problems."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.lines: dict[Path, int] = {}
        self.texts: dict[Path, str] = {}
        self.duplicates: list[Problem] = []

    def walk(self, node: yaml.Node, path: Path) -> None:
        if isinstance(node, yaml.ScalarNode):
            self.texts[path] = node.value
        elif isinstance(node, yaml.MappingNode):
            self._mapping(node, path)
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                self.lines[path + (i,)] = item.start_mark.line + 1
                self.walk(item, path + (i,))

    def _mapping(self, node: yaml.MappingNode, path: Path) -> None:
        seen: dict[str, int] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                continue
            key, line = key_node.value, key_node.start_mark.line + 1
            if key in seen and key != "<<":
                self.duplicates.append(Problem(self.source, line, f"duplicate key '{key}' (first at line {seen[key]})"))
            seen.setdefault(key, line)
            self.lines[path + (key,)] = line
            self.walk(value_node, path + (key,))


def _key(part: str | int) -> str | int:
    return part if isinstance(part, int) else str(part)
