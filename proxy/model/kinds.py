"""The kinds the rest of the proxy tells apart: sides, serve modes, toggle verdicts. Standard library only."""

from __future__ import annotations

from enum import StrEnum


class Side(StrEnum):
    """Which side of the migration answers: the monolith or the extracted service."""

    LEGACY = "legacy"
    NEW = "new"


class Serve(StrEnum):
    """A route's `serve:` value."""

    LEGACY = "legacy"
    NEW = "new"
    TOGGLE = "toggle"


class Verdict(StrEnum):
    """What a toggle said for one request. Anything but ON means the monolith answers."""

    ON = "on"
    OFF = "off"
    UNKNOWN = "unknown"  # the provider has no such feature
    NOT_SYNCED = "not_synced"  # no feature state yet (server never reached, no cached state)
    ERROR = "error"  # evaluating raised
