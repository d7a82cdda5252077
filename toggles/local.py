"""routes.yaml's `toggle:` entries as Unleash feature definitions, for the local provider.

Each becomes a flexibleRollout, so the hashing and stickiness are Unleash's own: a user
lands on the same side here, on another proxy instance, and under a real Unleash server.
"""

from __future__ import annotations

from typing import Any, Iterable

from proxy.model import ToggleSpec


def features(toggles: Iterable[ToggleSpec]) -> dict[str, Any]:
    """The /api/client/features document that defines these toggles."""
    unique = {toggle.name: toggle for toggle in toggles}
    return {"version": 1, "features": [feature(t) for t in unique.values()]}


def feature(toggle: ToggleSpec) -> dict[str, Any]:
    # The sticky value travels as userId; without one (random stickiness aside) the
    # rollout is off, so a request that cannot stick to a side stays on legacy.
    stickiness = "random" if toggle.stickiness.kind == "random" else "userId"
    return {
        "name": toggle.name,
        "type": "release",
        "enabled": True,
        "strategies": [{
            "name": "flexibleRollout",
            "parameters": {"rollout": str(toggle.local_rollout), "stickiness": stickiness,
                           "groupId": toggle.name},
        }],
    }
