"""Reads a YAML file safely and remembers the line of every key and list item.

Values come from `yaml.safe_load`; positions come from composing the same text into
nodes (composing constructs no objects), so every later message can say FILE:LINE.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import yaml

from proxy.errors import ConfigError
from proxy.model import Problem

Path = tuple[str | int, ...]


@dataclass(frozen=True, slots=True)
class Document:
    """A parsed YAML document and the line (1-based) where each key path starts."""

    source: str
    data: Any
    lines: Mapping[Path, int]

    def line(self, path: Path) -> int:
        """The line of `path`, or of its nearest ancestor that has one."""
        for end in range(len(path), 0, -1):
            found = self.lines.get(tuple(_key(p) for p in path[:end]))
            if found is not None:
                return found
        return 1


def read_yaml(text: str, source: str) -> Document:
    """Parse `text`; YAML syntax errors and duplicate keys raise ConfigError with their line."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 1
        raise ConfigError([Problem(source, line, f"YAML syntax error: {exc.problem or exc}")]) from exc
    except yaml.YAMLError as exc:
        raise ConfigError([Problem(source, 1, f"YAML error: {exc}")]) from exc
    lines: dict[Path, int] = {}
    duplicates: list[Problem] = []
    if root is not None:
        _index(root, (), lines, duplicates, source)
    if duplicates:
        raise ConfigError(duplicates)
    return Document(source, data, lines)


def _index(node: yaml.Node, path: Path, lines: dict[Path, int], dups: list[Problem], source: str) -> None:
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                continue
            key, line = key_node.value, key_node.start_mark.line + 1
            if key in seen and key != "<<":
                dups.append(Problem(source, line, f"duplicate key '{key}' (first at line {seen[key]})"))
            seen.setdefault(key, line)
            lines[path + (key,)] = line
            _index(value_node, path + (key,), lines, dups, source)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            lines[path + (i,)] = item.start_mark.line + 1
            _index(item, path + (i,), lines, dups, source)


def _key(part: str | int) -> str | int:
    return part if isinstance(part, int) else str(part)
