"""Toggle verdicts that fell back to legacy, logged once per route, toggle and verdict."""

from __future__ import annotations

import logging

from proxy.model import Verdict

log = logging.getLogger("strangler.toggles")
PROBLEMS = frozenset({Verdict.UNKNOWN, Verdict.NOT_SYNCED, Verdict.ERROR})


class VerdictLog:
    """Logs a toggle going wrong (unknown, not synced, raising) once, and its recovery once."""

    def __init__(self) -> None:
        self._troubled: dict[str, Verdict] = {}

    def note(self, route: str, toggle: str, verdict: Verdict) -> None:
        before = self._troubled.get(toggle)
        if verdict in PROBLEMS and verdict is not before:
            self._troubled[toggle] = verdict
            log.warning("toggle cannot be evaluated; its routes answer from legacy",
                        extra={"toggle": toggle, "route": route, "verdict": str(verdict)})
        elif verdict not in PROBLEMS and before is not None:
            del self._troubled[toggle]
            log.info("toggle evaluates again", extra={"toggle": toggle, "route": route, "verdict": str(verdict)})
