"""The toggles seam: per request of a `serve: toggle` route, is this user's feature on?"""

from __future__ import annotations

from typing import Any, Mapping, Protocol

from proxy.model import Verdict


class Toggles(Protocol):
    """A feature-toggle provider. Anything but Verdict.ON sends the request to legacy."""

    shared_rollouts: bool  # True: a rollout written with publish_rollout holds for every instance

    def verdict(self, name: str, context: Mapping[str, Any]) -> Verdict:
        """What feature `name` says for this Unleash context; never raises."""
        ...

    def is_enabled(self, name: str, context: Mapping[str, Any]) -> bool:
        return self.verdict(name, context) is Verdict.ON

    def bucket(self, name: str, sticky: str) -> int:
        """Where `sticky` falls (1-100) in feature `name`'s rollout: a rollout of R moves it when bucket <= R."""
        ...

    def publish_rollout(self, name: str, percent: int) -> None:
        """Make `percent` feature `name`'s rollout where every instance reads it (blocking; raises
        when the server refuses). A provider without a server does nothing: the proxy caps it."""
        ...

    def rollout_of(self, name: str) -> int | None:
        """The rollout percent feature `name` holds now, as this provider last heard (None: no rollout)."""
        ...

    def refresh(self) -> None:
        """Ask the server for its state now rather than at the next poll (non-blocking; no server: nothing)."""
        ...

    def status(self) -> dict[str, Any]:
        """Provider, sync state and the feature definitions in force, for /status."""
        ...

    def start(self) -> None:
        """Begin syncing (blocking: run it in a thread)."""
        ...

    def close(self) -> None:
        """Stop syncing (blocking: run it in a thread)."""
        ...
