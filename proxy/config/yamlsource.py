"""Reads a YAML file safely and remembers the line of every key and list item.

The text is scanned and parsed once (PyYAML's pure-Python parser is most of the cost of
reading a large file): its events are composed into nodes, whose lines every later message
gives as FILE:LINE, and PyYAML's safe constructor makes the values from those nodes. While
the events are read, a loop (not a recursion) bounds the document's shape: nesting deeper
than MAX_DEPTH would exhaust the composer's recursion, an alias inside the collection it
names would send every walk round forever, more than MAX_NODES nodes cost PyYAML seconds
each time, and aliases that stand for more than MAX_ALIASED nodes in all are an alias bomb
("billion laughs"), which every later walk of the values would pay for.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import yaml

from proxy.model import Problem
from proxy.model.errors import ConfigError

Path = tuple[str | int, ...]
MAX_DEPTH = 64  # nested mappings and lists; routes.yaml needs fewer than ten
MAX_NODES = 100_000  # nodes written out; a routes.yaml needs a few thousand
MAX_ALIASED = 100_000  # nodes reached through aliases, each alias counted as the nodes it stands for


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
    index = _Index(source)
    try:
        loader = _Loader(_Shape(source).check(text))
        root = loader.get_single_node()
        if root is not None:
            index.walk(root)  # before constructing, which flattens merge keys (`<<`) in the nodes
        data = loader.construct_document(root) if root is not None else None
    except yaml.MarkedYAMLError as exc:
        raise ConfigError([Problem(source, *_syntax_error(exc, text))]) from exc
    except yaml.YAMLError as exc:
        raise ConfigError([Problem(source, 1, f"YAML error: {exc}")]) from exc
    except RecursionError as exc:  # MAX_DEPTH keeps PyYAML's recursion short; should it not, still one line
        raise ConfigError([Problem(source, 1, "YAML is nested too deeply")]) from exc
    if index.duplicates:
        raise ConfigError(index.duplicates)
    return Document(source, data, index.lines, index.texts)


class _Shape:
    """Nesting depth, size, alias loops and alias expansion, refused at the line where they happen."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.sizes: dict[str, int] = {}  # anchor -> the nodes it stands for
        self.open: list[list] = [[0, None]]  # for each open collection: nodes within it so far, its anchor
        self.written = self.aliased = 0  # nodes so far: written out, reached through aliases

    def check(self, text: str) -> list[yaml.Event]:
        """The text's events, each checked as it is parsed: a refusal comes at its own line, before
        anything later in the text is parsed."""
        events = []
        for event in yaml.parse(text, Loader=yaml.SafeLoader):
            if isinstance(event, yaml.AliasEvent):
                self._alias(event)
            elif isinstance(event, yaml.NodeEvent):  # a scalar, or a collection's start
                self._written(event)
            elif isinstance(event, yaml.CollectionEndEvent):
                self._ended(*self.open.pop())
            events.append(event)
        return events

    def _written(self, event: yaml.NodeEvent) -> None:
        self.written += 1
        if self.written > MAX_NODES:
            self._refuse(event, f"YAML holds more than {MAX_NODES} nodes; a routes.yaml needs a few thousand")
        if isinstance(event, yaml.ScalarEvent):
            self._ended(1, event.anchor)
            return
        if len(self.open) > MAX_DEPTH:
            self._refuse(event, f"YAML is nested more than {MAX_DEPTH} levels deep")
        self.open.append([1, event.anchor])

    def _ended(self, size: int, anchor: str | None) -> None:
        self.open[-1][0] += size
        if anchor is not None:
            self.sizes[anchor] = size

    def _alias(self, event: yaml.AliasEvent) -> None:
        if any(anchor == event.anchor for _, anchor in self.open):
            self._refuse(event, f"YAML alias '*{event.anchor}' stands inside the collection it names (a loop)")
        size = self.sizes.get(event.anchor, 1)
        self.aliased += size
        if self.aliased > MAX_ALIASED:
            self._refuse(event, f"YAML aliases expand to more than {MAX_ALIASED} nodes (an alias bomb?)")
        self._ended(size, None)

    def _refuse(self, event: yaml.Event, message: str) -> None:
        raise ConfigError([Problem(self.source, event.start_mark.line + 1, message)])


class _Loader(yaml.composer.Composer, yaml.constructor.SafeConstructor, yaml.resolver.Resolver):
    """PyYAML's safe loader over events already parsed (it is its parser's events it composes), but a scalar
    it cannot construct (a date 2001-13-14, `!!int 0x`) is a YAML error at its line, like PyYAML's own,
    rather than a ValueError from deep inside it."""

    def __init__(self, events: list[yaml.Event]) -> None:
        yaml.composer.Composer.__init__(self)
        yaml.constructor.SafeConstructor.__init__(self)
        yaml.resolver.Resolver.__init__(self)
        self.events, self.next = events, 0

    def check_event(self, *choices: type[yaml.Event]) -> bool:
        if self.next == len(self.events):
            return False
        return not choices or isinstance(self.events[self.next], choices)

    def peek_event(self) -> yaml.Event:
        return self.events[self.next]

    def get_event(self) -> yaml.Event:
        self.next += 1
        return self.events[self.next - 1]

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep)
        except (ValueError, TypeError, ArithmeticError) as exc:
            value = repr(node.value) if isinstance(node, yaml.ScalarNode) else "a value"
            raise yaml.constructor.ConstructorError(
                None, None, f"{value} is not a valid {node.tag.rpartition(':')[2]} ({exc})", node.start_mark) from exc


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

    def walk(self, node: yaml.Node, path: Path = ()) -> None:
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
