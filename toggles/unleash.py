"""Both toggle providers through the UnleashClient SDK: one evaluation path, Unleash's hashing.

local: the SDK is bootstrapped from routes.yaml's toggles and held in memory; it never
starts a thread or opens a socket. unleash: the SDK polls a real server in its own
thread and keeps the last known state in a file cache, which carries it across outages
and restarts. Evaluation is in memory either way; the SDK's failures become verdicts.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from datetime import datetime, timedelta, timezone
from typing import Any, Iterable, Mapping

from UnleashClient import UnleashClient
from UnleashClient.cache import BaseCache, FileCache
from UnleashClient.constants import ETAG, FEATURES_URL
from UnleashClient.utils import InstanceAllowType, normalized_hash

from proxy.model import ToggleSpec, UnleashSpec, Verdict
from toggles.base import Toggles
from toggles.local import features
from toggles.unleash_admin import UnleashAdmin

log = logging.getLogger("strangler.toggles")
REQUEST_TIMEOUT = 3  # seconds, for each call to the Unleash server (always off the event loop)


class UnleashToggles(Toggles):
    """An UnleashClient and what it knows: which features exist, and when the server last answered."""

    def __init__(self, client: UnleashClient, cache: _KnowingCache, provider: str, key: Any,
                 url: str | None = None, admin: UnleashAdmin | None = None, refresh_interval: int = 0) -> None:
        self._client, self._cache = client, cache
        self.refresh_interval = refresh_interval
        self.provider, self.key, self.url = provider, key, url
        self._admin = admin
        self.shared_rollouts = admin is not None
        self._started = False

    @classmethod
    def local(cls, toggles: Iterable[ToggleSpec]) -> UnleashToggles:
        """The local provider: routes.yaml's toggles as bootstrapped flexibleRollout features."""
        document = features(toggles)
        cache = _MemoryCache()
        cache.bootstrap(document)
        client = UnleashClient(url="http://127.0.0.1/strangler-local", app_name="strangler-local",
                               disable_metrics=True, disable_registration=True, cache=cache,
                               multiple_instance_mode=InstanceAllowType.SILENTLY_ALLOW)
        return cls(client, cache, "local", key=("local", json.dumps(document, sort_keys=True)))

    @classmethod
    def server(cls, spec: UnleashSpec, token: str | None, admin_token: str | None = None) -> UnleashToggles:
        """The unleash provider: a real server, polled every `refresh_interval` seconds."""
        cache = _ServerCache(spec.app_name, spec.cache_directory)
        client = UnleashClient(
            url=spec.url, app_name=spec.app_name, environment=spec.environment,
            instance_id=f"{socket.gethostname()}:{os.getpid()}", refresh_interval=spec.refresh_interval,
            request_timeout=REQUEST_TIMEOUT, request_retries=1,
            custom_headers={"Authorization": token} if token else {}, cache=cache,
            multiple_instance_mode=InstanceAllowType.SILENTLY_ALLOW)
        admin = UnleashAdmin(spec.admin_url, spec.project, spec.environment, admin_token)
        return cls(client, cache, "unleash", key=cls.server_key(spec, token), url=spec.url, admin=admin,
                   refresh_interval=spec.refresh_interval)

    @staticmethod
    def server_key(spec: UnleashSpec, token: str | None) -> tuple[Any, ...]:
        """What makes two server providers the same one."""
        return ("unleash", spec, token)

    def verdict(self, name: str, context: Mapping[str, Any]) -> Verdict:
        known = self._cache.known
        if known is None:
            return Verdict.NOT_SYNCED
        if name not in known:
            return Verdict.UNKNOWN
        try:
            return Verdict.ON if self._client.is_enabled(name, dict(context)) else Verdict.OFF
        except Exception:  # the SDK's own bug must not become the request's
            log.debug("toggle evaluation raised", exc_info=True, extra={"toggle": name})
            return Verdict.ERROR

    def publish_rollout(self, name: str, percent: int) -> None:
        if self._admin is not None:
            self._admin.set_rollout(name, percent)

    def bucket(self, name: str, sticky: str) -> int:
        return normalized_hash(sticky, name)  # flexibleRollout's own hash (groupId = the feature name)

    def rollout_of(self, name: str) -> int | None:
        strategies = (self._cache.definitions.get(name) or {}).get("strategies") or []
        rollout = next((s.get("parameters", {}).get("rollout") for s in strategies
                        if s.get("name") == "flexibleRollout"), None)
        try:
            return None if rollout is None else int(rollout)
        except (TypeError, ValueError):
            return None

    def refresh(self) -> None:
        if not self._started:
            return
        # Without the ETag the server answers whole: an answer it cached just before a change can
        # carry the new ETag, and asking with that one would get "not modified" until the next change.
        self._cache.set(ETAG, "")
        now = datetime.now(timezone.utc)
        try:  # the SDK polls on an APScheduler it exposes: bring its poll (the job on our interval) forward
            for job in self._client.unleash_scheduler.get_jobs():
                if getattr(job.trigger, "interval", None) == timedelta(seconds=self.refresh_interval):
                    job.modify(next_run_time=now)
        except Exception:  # noqa: BLE001 - the regular poll still comes
            log.debug("could not bring the toggle poll forward", exc_info=True)

    def status(self) -> dict[str, Any]:
        cache = self._cache
        return {"provider": self.provider, "url": self.url, "synced": cache.known is not None,
                "last_sync": cache.last_contact, "definitions": dict(cache.definitions)}

    def start(self) -> None:
        if self.provider == "unleash" and not self._started:
            self._started = True
            _quiet_sdk_logs()
            _QUIET.reset()  # the SDK's logger is shared: a new provider's failures are news again
            self._client.initialize_client()

    def close(self) -> None:
        if self._started:
            self._client.destroy()


class _KnowingCache(BaseCache):
    """A cache that also keeps, parsed, the feature names and definitions it holds."""

    known: frozenset[str] | None = None  # None: no feature state at all yet
    definitions: Mapping[str, Any] = {}
    last_contact: float | None = None  # when the server last answered a poll

    def _learn(self, raw: str) -> None:
        try:
            found = {f["name"]: f for f in json.loads(raw).get("features", [])}
        except (ValueError, TypeError, KeyError, AttributeError):
            return  # the engine will refuse it too and keep the state it has
        self.definitions, self.known = found, frozenset(found)


class _MemoryCache(_KnowingCache):
    def __init__(self) -> None:
        self._data: dict[str, Any] = {}

    def bootstrap(self, document: dict[str, Any]) -> None:
        self.set(FEATURES_URL, json.dumps(document))
        self.bootstrapped = True

    def set(self, key: str, value: Any) -> None:
        self._data[key] = value
        if key == FEATURES_URL:
            self._learn(value)

    def mset(self, data: dict) -> None:
        self._data.update(data)

    def get(self, key: str, default: Any = None) -> Any:
        return self._data.get(key, default)

    def exists(self, key: str) -> bool:
        return key in self._data

    def destroy(self) -> None:
        self._data.clear()


class _ServerCache(_KnowingCache, FileCache):
    """The SDK's file cache: the last known state survives outages and restarts.

    The SDK writes the ETag (or the features) to it after every poll the server
    answered, and nothing after one that failed; that is how contact is noticed.
    """

    def __init__(self, name: str, directory: str) -> None:
        FileCache.__init__(self, name, directory=directory)
        raw = self.get(FEATURES_URL)
        if raw:
            self._learn(raw)
            self.bootstrapped = True  # evaluate on the last known state from the first request

    def set(self, key: str, value: Any) -> None:
        FileCache.set(self, key, value)
        if key == FEATURES_URL:
            self._learn(value)
        if key in (ETAG, FEATURES_URL) and value:
            if _QUIET.reset():
                log.info("the Unleash server answers again")
            self.last_contact = time.time()


class _OncePerOutage(logging.Filter):
    """The SDK logs a traceback at ERROR on every failed poll. Keep the first line of each
    kind, as a WARNING without traceback, until the server answers again."""

    def __init__(self) -> None:
        super().__init__()
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        with self._lock:
            if record.msg in self._seen:
                return False
            self._seen.add(str(record.msg))
        record.msg, record.args = record.getMessage().split("\n")[0], None
        record.levelno, record.levelname = logging.WARNING, "WARNING"
        record.exc_info = record.exc_text = None
        return True

    def reset(self) -> bool:
        """Forget the outage; True when there was one."""
        with self._lock:
            had, self._seen = bool(self._seen), set()
        return had


_QUIET = _OncePerOutage()


def _quiet_sdk_logs() -> None:
    sdk = logging.getLogger("UnleashClient")
    if _QUIET not in sdk.filters:
        sdk.addFilter(_QUIET)
    # Both log every poll at INFO ("Getting feature flag.", "Running job ..."): noise at any interval.
    for chatty in (sdk, logging.getLogger("apscheduler")):
        chatty.setLevel(logging.WARNING)
