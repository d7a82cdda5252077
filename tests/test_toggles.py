"""The local provider through the Unleash SDK, verdicts for what cannot be answered, and the context."""

import logging
from collections.abc import Mapping

import pytest
from multidict import CIMultiDict

from proxy.model import RequestFacts, Stickiness, ToggleSpec, UnleashSpec, Verdict
from proxy.observe.verdicts import VerdictLog
from proxy.routing.stickiness import toggle_context
from tests.helpers import free_port
from toggles.local import features
from toggles.unleash import UnleashToggles

USERS = [f"user-{n}" for n in range(1000)]


def local(*toggles: ToggleSpec) -> UnleashToggles:
    return UnleashToggles.local(toggles)


def spec(rollout: int | None, stickiness: str = "header:X-User-Id", name: str = "orders-to-new") -> ToggleSpec:
    kind, _, header = stickiness.partition(":")
    return ToggleSpec(name, rollout, Stickiness(kind, header))


def on_for(toggles: UnleashToggles, users: list[str], name: str = "orders-to-new") -> set[str]:
    return {u for u in users if toggles.verdict(name, {"userId": u, "sessionId": u}) is Verdict.ON}


def test_routes_toggles_become_flexible_rollouts():
    assert features([spec(25), spec(25), spec(None, "random", name="other")]) == {"version": 1, "features": [
        {"name": "orders-to-new", "type": "release", "enabled": True, "strategies": [{
            "name": "flexibleRollout",
            "parameters": {"rollout": "25", "stickiness": "userId", "groupId": "orders-to-new"}}]},
        {"name": "other", "type": "release", "enabled": True, "strategies": [{
            "name": "flexibleRollout", "parameters": {"rollout": "0", "stickiness": "random", "groupId": "other"}}]},
    ]}


@pytest.mark.parametrize("rollout", [10, 25, 50, 90])
def test_rollout_sends_about_that_share_of_users_to_new(rollout):
    share = len(on_for(local(spec(rollout)), USERS)) / len(USERS) * 100
    assert rollout - 5 <= share <= rollout + 5


def test_the_same_user_gets_the_same_answer_every_time_and_on_every_instance():
    first, second = local(spec(50)), local(spec(50))  # two proxy processes, say
    chosen = on_for(first, USERS)
    assert on_for(first, USERS) == chosen == on_for(second, USERS)


def test_raising_the_rollout_only_adds_users():
    assert on_for(local(spec(20)), USERS) < on_for(local(spec(60)), USERS) < set(USERS)


def test_the_ends_of_the_range():
    assert on_for(local(spec(0)), USERS) == set()
    assert on_for(local(spec(100)), USERS) == set(USERS)
    assert local(spec(100)).verdict("orders-to-new", {}) is Verdict.OFF  # nothing to stick to: legacy


def test_random_stickiness_needs_no_identity():
    toggles = local(spec(50, "random"))
    share = sum(toggles.verdict("orders-to-new", {}) is Verdict.ON for _ in range(1000)) / 10
    assert 40 <= share <= 60


def test_what_cannot_be_answered_has_its_own_verdict():
    toggles = local(spec(100))
    assert toggles.verdict("no-such-toggle", {"userId": "u"}) is Verdict.UNKNOWN

    class Broken(Mapping):
        """A context that fails when read, as an SDK bug might."""
        def __iter__(self):
            return iter(["userId"])

        def __len__(self):
            return 1

        def __getitem__(self, key):
            raise RuntimeError("boom")
    assert toggles.verdict("orders-to-new", Broken()) is Verdict.ERROR


def test_a_server_never_reached_is_not_synced(tmp_path, caplog):
    spec_ = UnleashSpec(url=f"http://127.0.0.1:{free_port()}/api", refresh_interval=1,
                        cache_directory=str(tmp_path / "cache"))
    toggles = UnleashToggles.server(spec_, token=None)
    try:
        toggles.start()
        assert toggles.verdict("orders-to-new", {"userId": "u"}) is Verdict.NOT_SYNCED
        assert toggles.status() == {"provider": "unleash", "url": spec_.url, "synced": False,
                                    "last_sync": None, "definitions": {}}
    finally:
        toggles.close()
    sdk = [r for r in caplog.records if r.name == "UnleashClient"]
    assert sdk and all(r.levelno == logging.WARNING and r.exc_info is None for r in sdk)
    assert len({r.getMessage() for r in sdk}) == len(sdk)  # each kind of failure said once


@pytest.mark.parametrize("stickiness, headers, remote, sticky", [
    ("header:X-User-Id", {"X-User-Id": "alice"}, "192.0.2.1", "alice"),
    ("header:X-User-Id", {}, "192.0.2.1", None),
    ("cookie:uid", {"Cookie": "theme=dark; uid=bob"}, "192.0.2.1", "bob"),
    ("cookie:uid", {"Cookie": "theme=dark"}, "192.0.2.1", None),
    ("ip", {"X-Forwarded-For": "10.9.9.9"}, "192.0.2.1", "192.0.2.1"),  # never a spoofable header
    ("random", {"X-User-Id": "alice"}, "192.0.2.1", None),
])
def test_context_carries_the_sticky_value_and_the_request(stickiness, headers, remote, sticky):
    kind, _, name = stickiness.partition(":")
    facts = RequestFacts("GET", "/api/orders/7", CIMultiDict(headers), remote)
    context, value = toggle_context(Stickiness(kind, name), facts)
    assert value == sticky
    expected = {"remoteAddress": remote, "properties": {"path": "/api/orders/7", "method": "GET"}}
    if sticky is not None:
        expected |= {"userId": sticky, "sessionId": sticky}
    assert context == expected


def test_a_troubled_toggle_is_logged_once_and_its_recovery_once(caplog):
    caplog.set_level(logging.INFO)
    verdicts = VerdictLog()
    for verdict in [Verdict.ON, Verdict.UNKNOWN, Verdict.UNKNOWN, Verdict.UNKNOWN, Verdict.NOT_SYNCED,
                    Verdict.OFF, Verdict.ON, Verdict.ERROR, Verdict.ERROR]:
        verdicts.note("orders", "orders-to-new", verdict)
    said = [(r.levelname, r.getMessage(), r.verdict) for r in caplog.records if r.name == "strangler.toggles"]
    assert said == [
        ("WARNING", "toggle cannot be evaluated; its routes answer from legacy", "unknown"),
        ("WARNING", "toggle cannot be evaluated; its routes answer from legacy", "not_synced"),
        ("INFO", "toggle evaluates again", "off"),
        ("WARNING", "toggle cannot be evaluated; its routes answer from legacy", "error"),
    ]
