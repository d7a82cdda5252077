"""Writing a feature's rollout through Unleash's Admin API, for rollout plans (blocking; a thread's).

The feature's flexibleRollout strategy in the environment gets the new `rollout`; a
feature or strategy that does not exist yet is created, and the feature switched on in
the environment, so that the percent written is the percent served.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any

TIMEOUT = 5.0


@dataclass(frozen=True, slots=True)
class UnleashAdmin:
    url: str  # .../api/admin
    project: str
    environment: str
    token: str | None

    def set_rollout(self, feature: str, percent: int) -> None:
        base = f"/projects/{_q(self.project)}/features"
        if self._call("GET", f"{base}/{_q(feature)}", missing_ok=True) is None:
            # 409: another instance of the fleet made it a moment ago
            self._call("POST", base, {"name": feature, "type": "release"}, expected=409)
        strategies = f"{base}/{_q(feature)}/environments/{_q(self.environment)}/strategies"
        found = self._call("GET", strategies) or []
        rollout = next((s for s in found if s.get("name") == "flexibleRollout"), None)
        parameters = {"rollout": str(percent), "stickiness": "userId", "groupId": feature}
        if rollout is None:
            self._call("POST", strategies, {"name": "flexibleRollout", "parameters": parameters})
        else:
            parameters = {**rollout.get("parameters", {}), "rollout": str(percent)}
            self._call("PUT", f"{strategies}/{_q(rollout['id'])}",
                       {"name": "flexibleRollout", "parameters": parameters,
                        "constraints": rollout.get("constraints", [])})
        self._call("POST", f"{base}/{_q(feature)}/environments/{_q(self.environment)}/on")

    def _call(self, method: str, path: str, body: Any = None, missing_ok: bool = False,
              expected: int | None = None) -> Any:
        """The API's answer as JSON; None for a 404 when `missing_ok`, or for the `expected` error status."""
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.token:
            headers["Authorization"] = self.token
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url.rstrip("/") + path, data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
                raw = response.read()
        except urllib.error.HTTPError as exc:
            if (exc.code == 404 and missing_ok) or exc.code == expected:
                return None
            detail = exc.read()[:300].decode("utf-8", "replace")
            raise RuntimeError(f"Unleash Admin API {method} {path}: {exc.code} {detail}") from None
        return json.loads(raw) if raw.strip() else {}


def _q(part: Any) -> str:
    return urllib.parse.quote(str(part), safe="")
