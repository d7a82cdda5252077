"""Typed reading of one YAML mapping, collecting every problem with its line instead of stopping.

`Reader` owns the problem list for a whole file; `Section` reads one mapping of it.
"""

from __future__ import annotations

import difflib
import re
from typing import Any, Callable, TypeVar

from proxy.config.yamlsource import Document, Path
from proxy.model import Problem

T = TypeVar("T")
MISSING: Any = object()
TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")  # RFC 9110 token: method and header names
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")  # upstream and route names
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")  # an environment variable's name


class Reader:
    """The problems found so far in one document."""

    def __init__(self, doc: Document) -> None:
        self.doc = doc
        self.problems: list[Problem] = []

    def error(self, path: Path, message: str) -> None:
        self.problems.append(Problem(self.doc.source, self.doc.line(path), message))

    def warn(self, path: Path, message: str) -> None:
        self.problems.append(Problem(self.doc.source, self.doc.line(path), message, warning=True))

    def at_line(self, line: int, message: str, warning: bool = False) -> None:
        self.problems.append(Problem(self.doc.source, line, message, warning))

    def section(self, path: Path, data: Any, where: str, allowed: set[str]) -> Section | None:
        if not isinstance(data, dict):
            self.error(path, f"{where or 'the top level'} must be a mapping, got {_kind(data)}")
            return None
        return Section(self, path, data, where, allowed)


class Section:
    """One mapping: typed fields with defaults, and unknown keys reported with a suggestion."""

    def __init__(self, reader: Reader, path: Path, data: dict, where: str, allowed: set[str]) -> None:
        self.reader, self.path, self.data, self.where = reader, path, data, where
        for key in data:
            if str(key) not in allowed:
                hint = difflib.get_close_matches(str(key), sorted(allowed), n=1)
                also = f"; did you mean '{hint[0]}'?" if hint else f" (known: {', '.join(sorted(allowed))})"
                place = f"in {where}" if where else "at the top level"
                reader.error(self.at(key), f"unknown key '{key}' {place}{also}")

    def at(self, key: Any) -> Path:
        return self.path + (str(key),)

    def error(self, key: str, message: str) -> None:
        self.reader.error(self.at(key), self._prefixed(message))

    def item_error(self, key: str, index: int, message: str) -> None:
        """An error at one item of a list, on that item's own line."""
        self.reader.error(self.at(key) + (index,), self._prefixed(message))

    def warn(self, key: str, message: str) -> None:
        self.reader.warn(self.at(key), self._prefixed(message))

    def _prefixed(self, message: str) -> str:
        return f"{self.where}: {message}" if self.where else message

    def has(self, key: str) -> bool:
        return key in self.data

    def get(self, key: str, kind: str, accept: Callable[[Any], bool], default: Any = MISSING) -> Any:
        if key not in self.data:
            if default is MISSING:
                self.reader.error(self.path, self._prefixed(f"'{key}' is required"))
            return default
        value = self.data[key]
        if not accept(value):
            self.error(key, f"'{key}' must be {kind}, got {_kind(value)}")
            return default
        return value

    def text(self, key: str, default: Any = MISSING) -> Any:
        value = self.get(key, "a string", lambda v: isinstance(v, str), default)
        if isinstance(value, str) and not value.strip() and default is MISSING:
            self.error(key, f"'{key}' must not be empty")
        return value

    def flag(self, key: str, default: bool) -> bool:
        return self.get(key, "true or false", lambda v: isinstance(v, bool), default)

    def number(self, key: str, default: Any = MISSING, low: float | None = None,
               high: float | None = None, positive: bool = False) -> Any:
        value = self.get(key, "a number", _is_number, default)
        if value is default:
            return value
        if positive and value <= 0:
            self.error(key, f"'{key}' must be above 0, got {value}")
        elif (low is not None and value < low) or (high is not None and value > high):
            self.error(key, f"'{key}' must be between {low} and {high}, got {value}")
        return float(value)

    def integer(self, key: str, default: Any, low: int, high: int) -> Any:
        value = self.get(key, "a whole number", lambda v: _is_number(v) and float(v).is_integer(), default)
        if value is default:
            return value
        if not low <= value <= high:
            self.error(key, f"'{key}' must be between {low} and {high}, got {value}")
        return int(value)

    def texts(self, key: str, default: tuple[str, ...] = ()) -> tuple[str, ...]:
        value = self.get(key, "a list of strings", _is_text_list, default)
        return tuple(value)

    def section(self, key: str, allowed: set[str], where: str | None = None) -> Section | None:
        if key not in self.data:
            return None
        return self.reader.section(self.at(key), self.data[key], where or f"{self.where}, {key}", allowed)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_text_list(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def _kind(value: Any) -> str:
    if value is None:
        return "nothing"
    names = {bool: "true/false", int: "a number", float: "a number", str: "a string",
             list: "a list", dict: "a mapping"}
    shown = f" {value!r}" if isinstance(value, (bool, int, float, str)) else ""
    return names.get(type(value), type(value).__name__) + shown
