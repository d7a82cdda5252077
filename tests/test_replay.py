"""`strangler replay`: stored divergences sent again to both real upstreams, after a fix and without one."""

import asyncio
import io
import json
import sys
import time
from datetime import datetime, timezone

import pytest

from proxy.cli.replay import Progress, parse_since
from proxy.model import Difference, Divergence, Observation, ReportsSpec, RequestRecord, Side
from proxy.shadow.replay import Outcome, Replay, plan
from reports.redact import REDACTED
from reports.store import StoreSink
from tests.helpers import REPO, route, routes_yaml
from tests.test_parallel_run import get_all, items_route, legacy_items, new_items, settle

SECRET = "S3cr3t-bearer"


async def strangler(*args: str) -> tuple[int, str, str]:
    """The command as a user runs it, while this test's event loop keeps serving the upstreams."""
    process = await asyncio.create_subprocess_exec(sys.executable, "-m", "proxy", *args, cwd=REPO,
                                                   stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(process.communicate(), 60)
    return process.returncode, out.decode(), err.decode()


@pytest.fixture
async def diverged(make_upstream, start_proxy, http, tmp_path):
    """A parallel run of items 0-7 (GET) and 8 (POST) through real upstreams: 0, 4 and 8 diverge on
    the price. Returns the upstreams and routes.yaml, the proxy stopped."""
    legacy, new = await make_upstream("legacy", legacy_items), await make_upstream("new", new_items)
    proxy = await start_proxy({"legacy": legacy.url, "new": new.url},
                              items_route(compare={"ignore_paths": ["$.updated_at"]},
                                          parallel_run={"methods": ["GET", "POST"]}),
                              reports={"database": str(tmp_path / "divergence.db")})
    headers = {"Authorization": f"Bearer {SECRET}", "X-Trace": "keep-me", "X-Request-Id": "original-id"}
    for n in range(8):  # one after the other: /items/4 is newer than /items/0
        await get_all(http, proxy.url, [f"/items/{n}"], headers)
    async with http.post(proxy.url + "/items/8", json={"qty": 1}) as response:
        assert response.status == 200
    await settle(proxy, 9)
    await proxy.proxy.stop()
    legacy.seen.clear()
    new.seen.clear()
    return legacy, new, proxy.path


async def test_after_the_fix_every_replayed_request_matches_and_the_reports_say_so(diverged):
    legacy, new, config = diverged
    new.handler = legacy_items  # the fix: the new service prices like the monolith
    code, out, err = await strangler("replay", "--route", "items", "--config", str(config))
    assert code == 0, err
    lines = out.splitlines()
    assert [line.split("  (")[0] for line in lines[:4]] == [
        "now matches    GET /items/4", "    sent without authorization (stored redacted)",
        "now matches    GET /items/0", "    sent without authorization (stored redacted)"]  # newest first
    assert "all 2 replayed requests match now" in lines
    assert "not replayed: 1 stored request: POST is not a safe method: sending it again would repeat a write" in lines
    assert err.splitlines()[-1] == "replayed 2/2 (2 match now, 0 still differ)"

    seen = legacy.seen + new.seen
    assert sorted((s.method, s.target) for s in seen) == [("GET", "/items/0")] * 2 + [("GET", "/items/4")] * 2
    assert {s.header("X-Strangler-Replay") for s in seen} == {"1"}
    assert {s.header("X-Trace") for s in seen} == {"keep-me"} and {s.header("Authorization") for s in seen} == {None}
    ids = {(s.target, s.header("X-Request-Id")) for s in seen}
    assert len(ids) == 2 and "original-id" not in {rid for _, rid in ids}  # one fresh id per request, both sides
    assert new.seen[0].header("Host") == new.url.removeprefix("http://")

    [route_json] = json.loads((await strangler("report", "summary", "--format", "json", "--config",
                                               str(config)))[1])["routes"]
    [signature] = [s for s in route_json["signatures"] if s["paths"] == ["$.price"]]
    assert (signature["replayed"]["matched"], signature["replayed"]["total"]) == (2, 2)
    assert time.time() - signature["replayed"]["at"] < 60
    page = (await strangler("report", "html", "--config", str(config)))[1]
    row = page.split(f'data-signature="{signature["signature"]}"', 1)[1].split("</tr>", 1)[0]
    assert '<span class="replayed">replayed just now: 2/2 match now</span>' in row


async def test_without_a_fix_it_exits_1_and_names_the_paths_that_still_differ(diverged):
    legacy, new, config = diverged
    code, out, err = await strangler("replay", "--route", "items", "--config", str(config))
    assert code == 1, err
    lines = out.splitlines()
    assert lines[0].startswith("still differs  GET /items/4  (divergence ")
    assert lines[1:3] == ["    $.price  changed: 10 -> 11", "    sent without authorization (stored redacted)"]
    assert "2 of 2 replayed requests still differ" in lines
    assert [line.split()[1:] for line in lines if line.split()[1:] == ["2", "0", "2"]]  # the signature: 2, 0, 2

    code, out, _ = await strangler("replay", "--route", "items", "--config", str(config), "--format", "json",
                                   "--limit", "1")
    result = json.loads(out)
    assert (code, result["replayed"], result["matched"]) == (1, 1, 0)
    [request] = result["requests"]
    assert (request["target"], request["matched"], request["differences"]) == (
        "/items/4", False, [{"path": "$.price", "kind": "changed", "legacy": 10, "new": 11}])
    assert [s["differing"] for s in result["signatures"]] == [1]
    assert [s["method"] for s in result["skipped"]] == ["POST"]
    assert all(s.method == "GET" for s in legacy.seen + new.seen)  # the POST never went out again

    [route_json] = json.loads((await strangler("report", "summary", "--format", "json", "--config",
                                               str(config)))[1])["routes"]
    assert [(s["replayed"]["matched"], s["replayed"]["total"]) for s in route_json["signatures"]] == [(0, 1)]


async def test_after_many_divergences_a_replay_sends_the_latest_request(make_upstream, start_proxy, http, tmp_path):
    """Two examples per signature: the first and the latest are kept, so the replay covers recent traffic."""
    legacy, new = await make_upstream("legacy", legacy_items), await make_upstream("new", new_items)
    proxy = await start_proxy({"legacy": legacy.url, "new": new.url}, items_route(),
                              reports={"database": str(tmp_path / "divergence.db"), "examples_per_signature": 2})
    for n in range(0, 80, 4):  # twenty divergences of one signature, one after the other
        await get_all(http, proxy.url, [f"/items/{n}"])
    await settle(proxy, 20)
    await proxy.proxy.stop()
    legacy.seen.clear()
    code, out, err = await strangler("replay", "--route", "items", "--config", str(proxy.path), "--format", "json")
    assert code == 1, err
    assert [r["target"] for r in json.loads(out)["requests"]] == ["/items/76", "/items/0"]
    assert sorted(s.target for s in legacy.seen) == ["/items/0", "/items/76"]


async def test_since_picks_the_divergences_recorded_from_then_on(make_upstream, tmp_path):
    legacy, new = await make_upstream("legacy", legacy_items), await make_upstream("new", legacy_items)
    database = tmp_path / "d.db"
    sink = StoreSink(ReportsSpec(str(database)))
    sink.start()
    for n, age in ((1, 3 * 86400), (2, 2 * 3600), (3, 60)):
        sink.record(stored("items", f"/items/{n}", time.time() - age))
    sink.close()
    config = tmp_path / "routes.yaml"
    config.write_text(routes_yaml({"legacy": legacy.url, "new": new.url}, [route("items", "/items", new="new",
                                                                               compare={"ignore_paths": ["$.updated_at"]})],
                                  reports={"database": str(database)}))
    yesterday = datetime.fromtimestamp(time.time() - 86400, timezone.utc).date().isoformat()
    for since, targets in (("30m", ["/items/3"]), ("1d", ["/items/3", "/items/2"]),
                           (yesterday, ["/items/3", "/items/2"]), (None, ["/items/3", "/items/2", "/items/1"])):
        legacy.seen.clear()
        code, out, err = await strangler("replay", "--route", "items", "--config", str(config),
                                         *(("--since", since) if since else ()))
        assert code == 0, err
        assert [s.target for s in sorted(legacy.seen, key=lambda s: -int(s.target[-1]))] == targets
        assert f"all {len(targets)} replayed requests match now" in out
    code, out, _ = await strangler("replay", "--route", "items", "--config", str(config), "--since", "2099-01-01")
    assert (code, out) == (0, "nothing to replay: no stored divergence of route items with a safe method since "
                               "2099-01-01T00:00:00Z\n")


async def test_a_rewritten_side_is_sent_its_own_form_again_and_reports_show_both(make_upstream, start_proxy, http,
                                                                                  tmp_path):
    legacy, new = await make_upstream("legacy", legacy_items), await make_upstream("new", new_items)
    proxy = await start_proxy({"legacy": legacy.url, "new": new.url},
                              [route("items", "/api/items", new="new", parallel_run={"enabled": True},
                                     rewrite={"new": "/items"}, compare={"ignore_paths": ["$.updated_at"]})],
                              reports={"database": str(tmp_path / "divergence.db")})
    await get_all(http, proxy.url, ["/api/items/4?v=1"])
    await settle(proxy, 1)
    await proxy.proxy.stop()
    legacy.seen.clear()
    new.seen.clear()
    code, out, err = await strangler("replay", "--route", "items", "--config", str(proxy.path), "--format", "json")
    assert code == 1, err
    [request] = json.loads(out)["requests"]
    assert (request["target"], request["legacy_target"], request["new_target"]) == (
        "/api/items/4?v=1", "/api/items/4?v=1", "/items/4?v=1")
    assert ([s.target for s in legacy.seen], [s.target for s in new.seen]) == (["/api/items/4?v=1"], ["/items/4?v=1"])
    code, out, _ = await strangler("replay", "--route", "items", "--config", str(proxy.path))
    assert "    sent to new as /items/4?v=1 (rewritten)" in out.splitlines()
    code, out, _ = await strangler("report", "show", request["divergence_id"], "--config", str(proxy.path))
    shown = out.splitlines()
    assert shown[1].startswith("request    GET /api/items/4?v=1  (id ")  # the client's path
    assert shown[2] == "sent to new    /items/4?v=1  (rewritten)"


async def test_an_unknown_route_or_a_route_without_a_new_side_is_refused(make_upstream, tmp_path):
    legacy = await make_upstream("legacy")
    config = tmp_path / "routes.yaml"
    config.write_text(routes_yaml({"legacy": legacy.url}, [route("pages", "/pages"), route("all")],
                                  reports={"database": str(tmp_path / "d.db")}))
    code, _, err = await strangler("replay", "--route", "nope", "--config", str(config))
    assert (code, err) == (3, f"strangler replay: no route 'nope' in {config}; its routes: pages, all\n")
    code, _, err = await strangler("replay", "--route", "pages", "--config", str(config))
    assert (code, err) == (2, "strangler replay: route 'pages' has no new side to compare with legacy\n")
    code, _, err = await strangler("replay", "--route", "pages", "--since", "last tuesday", "--config", str(config))
    assert code == 2 and "--since wants an ISO date or datetime" in err


def test_only_safe_requests_with_readable_targets_go_out_again_without_redacted_headers():
    redacted = "[redacted:0123456789ab]"
    rows = [{"id": f"d{n}", "signature": "s", "method": method, "target": target, "database": "x.db",
             "request_headers": [["Host", "shop"], ["Authorization", f"Bearer {redacted}"], ["Accept", "*/*"],
                                 ["Connection", "keep-alive"], ["Content-Length", "0"], ["X-Request-Id", "r"]]}
            for n, (method, target) in enumerate([("GET", "/a"), ("POST", "/b"), ("head", "/c"),
                                                  ("GET", f"/d?token={redacted}"), ("DELETE", "/e"),
                                                  ("OPTIONS", "/f")])]
    replays, skipped = plan(rows, REDACTED.search, limit=2)
    assert [(r.method, r.target, r.headers, r.left_out) for r in replays] == [
        ("GET", "/a", (("Accept", "*/*"),), ("authorization",)), ("HEAD", "/c", (("Accept", "*/*"),), ("authorization",))]
    assert [(s.target, s.why.split(":")[0]) for s in skipped] == [
        ("/b", "POST is not a safe method"), ("/d?token=[redacted:0123456789ab]",
                                              "its target held a credential, stored redacted"),
        ("/e", "DELETE is not a safe method")]


def test_progress_is_one_line_per_tenth_when_not_a_terminal_and_rewritten_in_place_on_one():
    outcome = Outcome(Replay("d", "s", "GET", "/", ()), Observation(Side.LEGACY, 200), Observation(Side.NEW, 200), ())
    plain = io.StringIO()
    show = Progress(20, plain)
    for _ in range(20):
        show(outcome)
    assert plain.getvalue().splitlines() == [f"replayed {n}/20 ({n} match now, 0 still differ)" for n in range(2, 21, 2)]

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True
    tty = Terminal()
    show = Progress(3, tty)
    for _ in range(3):
        show(outcome)
    assert tty.getvalue() == "".join(f"\rreplayed {n}/3 ({n} match now, 0 still differ)\x1b[K" for n in (1, 2, 3)) + "\n"


@pytest.mark.parametrize("text, seconds_before", [("30m", 1800), ("2h", 7200), ("1d", 86400), ("1.5h", 5400)])
def test_since_reads_an_age(text, seconds_before):
    assert parse_since(text, 10_000_000.0) == 10_000_000.0 - seconds_before


def test_since_reads_a_date_or_datetime_as_utc_unless_it_says():
    assert parse_since("2025-06-30", 0) == datetime(2025, 6, 30, tzinfo=timezone.utc).timestamp()
    assert parse_since("2025-06-30T12:00:00+02:00", 0) == datetime(2025, 6, 30, 10, tzinfo=timezone.utc).timestamp()


def stored(route_name: str, target: str, at: float) -> Divergence:
    body = (("Content-Type", "application/json"),)
    record = RequestRecord("rid", "GET", target, (("Host", "shop"),), None, at)
    return Divergence(route_name, record, Side.LEGACY, Observation(Side.LEGACY, 200, body, b'{"price": 10}', 0.01),
                      Observation(Side.NEW, 200, body, b'{"price": 11}', 0.01), (Difference("$.price", 10, 11),), (),
                      f"sig-{target}")
