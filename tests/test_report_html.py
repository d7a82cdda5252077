"""The HTML report: its view values, its escaping, `strangler report html` on a fleet's files, and admin /reports."""

import dataclasses
import json
import re
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from proxy.model import Difference, Divergence, Observation, ReportsSpec, RequestRecord, Side
from reports import html, linepaths, view
from reports.sidebyside import pretty, side_by_side
from reports.store import StoreSink
from tests.helpers import REPO, route

JSON = (("Content-Type", "application/json"),)
PLANTED = '<script>window.__pwned = 1</script><img src=x onerror="window.__pwned=2">'
CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; form-action 'self'; frame-ancestors 'none'"


def divergence(route_name: str = "orders", legacy: dict | None = None, new: dict | None = None,
               signature: str = "sig-price", target: str = "/api/orders/7") -> Divergence:
    legacy = legacy if legacy is not None else {"id": 7, "note": PLANTED, "price": 10}
    new = new if new is not None else {**legacy, "price": 11}
    differences = tuple(Difference(f"$.{key}", legacy.get(key), new.get(key))
                        for key in sorted(set(legacy) | set(new)) if legacy.get(key) != new.get(key))
    record = RequestRecord("rid-7", "GET", target, (("Host", "shop"),), None, time.time())
    return Divergence(route_name, record, Side.LEGACY,
                      Observation(Side.LEGACY, 200, JSON, json.dumps(legacy).encode(), 0.004),
                      Observation(Side.NEW, 200, JSON, json.dumps(new).encode(), 0.003), differences, (), signature)


def plant(path: Path, route_name: str, compared: int, divergences: list[Divergence],
          noise: tuple[str, ...] = ()) -> Path:
    """A divergence database written the way the proxy writes it: `compared` comparisons, the first ones diverged."""
    sink = StoreSink(ReportsSpec(str(path)))
    sink.start()
    for n in range(compared):
        sink.count(route_name, n < len(divergences), time.time())
    for found in divergences:
        sink.record(found)
    if noise:
        sink.learn_noise(route_name, noise, time.time())
    sink.flush()
    sink.close()
    return path


def field(page: str, route_name: str, name: str) -> str:
    """The text of one of a route's figures (compared, diverged, rate) on the page."""
    section = page.split(f'data-route="{route_name}"', 1)[1]
    return re.search(rf'data-field="{name}">([^<]*)<', section).group(1)


@pytest.mark.parametrize(("part", "whole", "shown"), [
    (1, 8, "12.5%"), (8, 8, "100.0%"), (0, 10, "0.0%"), (1, 200, "0.50%"), (1, 1_000_000, "<0.01%"), (0, 0, "–")])
def test_rates_read_as_percentages(part, whole, shown):
    assert view.percent(part, whole) == shown


def test_top_path_bars_are_proportional_to_their_counts():
    assert [(p.path, p.width) for p in view.path_counts([("$.price", 40), ("$.tax", 10)])] == [
        ("$.price", 100.0), ("$.tax", 25.0)]


def test_two_json_bodies_line_up_with_only_the_differing_line_marked():
    legacy = pretty('{"price": 10, "id": 7, "name": "pen"}')
    new = pretty('{"id": 7, "name": "pen", "price": 11}')
    rows = side_by_side(legacy, new)
    assert [(r.legacy.text, r.new.text) for r in rows if r.differs] == [('  "price": 10', '  "price": 11')]
    [changed] = [r for r in rows if r.differs]
    assert (changed.legacy.mark, changed.legacy.sign, changed.new.number) == ("changed", "~", 4)
    assert changed.legacy.segments == (('  "price": 1', False), ("0", True))
    assert all(r.legacy.mark == "" and r.legacy.text == r.new.text for r in rows if not r.differs)
    assert len(rows) == 5  # sorted keys: {, id, name, price, }


def test_a_line_only_one_side_has_faces_a_filler():
    rows = side_by_side(pretty("[1, 2]"), pretty("[1, 2, 3]"))
    marks = [(r.legacy.mark, r.new.mark) for r in rows if r.differs]
    assert marks == [("changed", "changed"), ("filler", "added")]  # "2" became "2," and "3" came
    assert [r.new.sign for r in rows if r.differs] == ["~", "+"]


@pytest.mark.parametrize("document", [{"a": 1, "b": [1, {"c": None, "d": []}, {}], "é": "ü", "x.y": {"z": True}},
                                      [], {}, 3, "text", [[1, [2]], {"k": [{}]}]])
def test_line_paths_print_what_json_dumps_prints(document):
    assert "\n".join(line for line, _ in linepaths.lines(document)) == pretty(json.dumps(document))


def test_line_paths_name_each_lines_value():
    assert linepaths.lines({"orders": [{"at": 1}], "x.y": 2}) == [
        ("{", "$"), ('  "orders": [', "$.orders"), ("    {", "$.orders[0]"), ('      "at": 1', "$.orders[0].at"),
        ("    }", "$.orders[0]"), ("  ],", "$.orders"), ('  "x.y": 2', "$['x.y']"), ("}", "$")]


def test_ignored_and_noise_lines_are_not_drawn_as_changes(tmp_path):
    """The demo's case: $.updated_at ignored by the route, $.etag learned as noise, $.status really changed."""
    legacy = {"id": 7, "status": "paid", "updated_at": "t1", "etag": "a"}
    new = {"id": 7, "status": "shipped", "updated_at": "t2", "etag": "b"}
    found = divergence(legacy=legacy, new=new, signature="sig-status")
    found = dataclasses.replace(found, differences=(Difference("$.status", "paid", "shipped"),))
    page = html.render([str(plant(tmp_path / "d.db", "orders", 2, [found], noise=("$.etag",)))],
                       ignored={"orders": ("$.updated_at",)})
    body = page.split('class="side-by-side"', 1)[1]
    assert re.findall(r'data-excused="(\w+)">\s*&#34;(\w+)&#34;', body) == [
        ("noise", "etag"), ("noise", "etag"), ("ignored", "updated_at"), ("ignored", "updated_at")]
    changed = re.findall(r'class="code (?:legacy|new) changed hl">\s*&#34;(\w+)&#34;', body)
    assert changed == ["status", "status"]


def test_a_field_the_comparison_did_not_count_reads_as_ignored_without_routes_yaml(tmp_path):
    """A snapshot made where routes.yaml is not at hand (or says something else now): the stored divergence's
    own differences tell which lines were counted."""
    legacy = {"id": 7, "items": [{"sku": "a", "seen": 1}], "status": "paid", "updated_at": "t1"}
    new = {"id": 7, "items": [{"sku": "b", "seen": 2}], "status": "shipped", "updated_at": "t2"}
    found = divergence(legacy=legacy, new=new, signature="sig-status")
    counted = (Difference("$.status", "paid", "shipped"), Difference("$.items[0].sku", "a", "b"))
    found = dataclasses.replace(found, differences=counted)
    page = html.render([str(plant(tmp_path / "d.db", "orders", 2, [found]))])
    body = page.split('class="side-by-side"', 1)[1]
    assert re.findall(r'data-excused="(\w+)">\s*&#34;(\w+)&#34;', body) == [
        ("ignored", "seen"), ("ignored", "seen"), ("ignored", "updated_at"), ("ignored", "updated_at")]
    changed = re.findall(r'class="code (?:legacy|new) changed hl">\s*&#34;(\w+)&#34;', body)
    assert changed == ["sku", "sku", "status", "status"]


def test_a_lines_path_is_excused_by_the_route_by_noise_or_by_not_being_counted():
    assert linepaths.excused("$.items[3].at", ("$.items[*].at",), ()) == "ignored"
    assert linepaths.excused("$.etag", (), ("$.etag",)) == "noise"
    assert linepaths.excused("$.status", (), (), ("$.status",)) == ""
    assert linepaths.excused("$.items", (), (), ("$.items[0].sku",)) == ""  # a container holding a difference
    assert linepaths.excused("$.items[0].sku.x", (), (), ("$.items[0].sku",)) == ""  # inside one
    assert linepaths.excused("$.updated_at", (), (), ("$.status", "header:etag")) == "ignored"
    assert linepaths.excused("$.updated_at", (), ()) == ""  # nothing known: drawn as it differs


def test_everything_from_the_database_is_escaped(tmp_path):
    planted = divergence(legacy={"id": 7, "note": PLANTED, "price": 10}, new={"id": 7, "note": "fine", "price": 10},
                         target="/api/orders/<script>alert(1)</script>")
    page = html.render([str(plant(tmp_path / "d.db", "orders</title><script>x()</script>", 2, [planted]))])
    assert "<script" not in page and "<img" not in page and "onerror=\"" not in page
    assert "&lt;script&gt;window.__pwned = 1&lt;/script&gt;" in page
    assert "/api/orders/&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "orders&lt;/title&gt;&lt;script&gt;x()&lt;/script&gt;" in page


def test_an_example_shows_the_clients_target_and_what_a_rewritten_side_was_sent(tmp_path):
    plain, rewritten = divergence(signature="sig-a"), divergence(signature="sig-b", target="/api/orders/8?x=1")
    record = rewritten.request._replace(new_target="/orders/8?x=1")
    page = html.render([str(plant(tmp_path / "d.db", "orders", 2, [plain, dataclasses.replace(rewritten,
                                                                                           request=record)]))])
    assert "<code>GET /api/orders/8?x=1</code>" in page and "<code>GET /api/orders/7</code>" in page
    assert page.count("<dt>sent to new</dt>") == 1 and "<code>/orders/8?x=1</code>" in page
    assert "<dt>sent to legacy</dt>" not in page


def test_a_database_from_before_rewrites_gains_their_columns(tmp_path):
    database = plant(tmp_path / "d.db", "orders", 1, [divergence()])
    with sqlite3.connect(database) as db:  # as a file from version 1 is
        db.execute("ALTER TABLE divergences DROP COLUMN legacy_target")
        db.execute("ALTER TABLE divergences DROP COLUMN new_target")
        db.execute("UPDATE meta SET value = '1' WHERE key = 'schema_version'")
    assert "GET /api/orders/7" in html.render([str(database)])  # read as it is
    plant(database, "orders", 1, [divergence(signature="sig-later")])  # a proxy writing to it again
    with sqlite3.connect(database) as db:
        assert db.execute("SELECT COUNT(*), COUNT(new_target) FROM divergences").fetchone() == (2, 0)


def test_a_page_on_nothing_yet_says_how_to_get_something(tmp_path):
    missing = str(tmp_path / "none.db")
    page = html.render([missing], missing_ok=True)
    assert "No comparisons recorded yet" in page and "parallel_run" in page and "not created yet" in page
    assert not Path(missing).exists()
    with pytest.raises(FileNotFoundError):
        html.render([missing])


def test_routes_are_ordered_worst_first_with_examples_linked(tmp_path):
    database = plant(tmp_path / "d.db", "calm", 10, [divergence("calm", signature="sig-calm")])
    plant(database, "bad", 4, [divergence("bad", signature="sig-bad"), divergence("bad", signature="sig-bad")],
          noise=("$.updated_at",))
    page = html.render([str(database)])
    assert page.index('data-route="bad"') < page.index('data-route="calm"')
    assert (field(page, "bad", "rate"), field(page, "calm", "rate")) == ("50.0%", "10.0%")
    assert 'href="#example-sig-bad"' in page and 'id="example-sig-bad"' in page
    assert "$.updated_at</code> <span class=\"badge noise\">noise</span>" in page


def test_the_html_command_reads_a_fleets_files_as_one(tmp_path):
    paths = [plant(tmp_path / "a.db", "orders", 10, [divergence()] * 3),
             plant(tmp_path / "b.db", "orders", 6, [divergence()] * 1)]
    out = tmp_path / "report.html"
    done = subprocess.run([sys.executable, "-m", "proxy", "report", "html", "--db", str(paths[0]), "--db",
                           str(paths[1]), "--out", str(out)], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")
    page = out.read_text(encoding="utf-8")
    assert [field(page, "orders", name) for name in ("compared", "diverged", "rate")] == ["16", "4", "25.0%"]
    assert re.search(r'data-signature="sig-price">\s*<td><code>\$\.price</code></td>\s*<td class="num">4</td>', page)
    assert str(paths[0]) in page and str(paths[1]) in page


@pytest.mark.parametrize("before", [None, 0o644, 0o666], ids=["new", "0644", "0666"])
def test_the_html_command_writes_a_file_only_its_owner_reads(tmp_path, before):
    # The page shows what the 0600 database holds, so it is as private, also over an older, shared file.
    database = plant(tmp_path / "d.db", "orders", 2, [divergence()])
    out = tmp_path / "report.html"
    if before is not None:
        out.write_text("an older, longer report " * 10_000)
        out.chmod(before)
    done = subprocess.run([sys.executable, "-m", "proxy", "report", "html", "--db", str(database), "--out", str(out)],
                          capture_output=True, text=True, timeout=60, cwd=REPO)
    assert (done.returncode, done.stderr) == (0, "")
    assert out.stat().st_mode & 0o777 == 0o600
    page = out.read_text(encoding="utf-8")
    assert "an older" not in page and 'data-route="orders"' in page and page.rstrip().endswith("</html>")


def test_the_html_command_on_a_missing_database_is_one_clear_line(tmp_path):
    done = subprocess.run([sys.executable, "-m", "proxy", "report", "html", "--db", str(tmp_path / "none.db")],
                          capture_output=True, text=True, timeout=60, cwd=REPO)
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr.strip() == f"strangler report: no divergence database at {tmp_path / 'none.db'}"


async def test_admin_serves_the_report_locked_down(make_upstream, start_proxy, http, tmp_path):
    database = plant(tmp_path / "d.db", "orders", 4, [divergence()])
    proxy = await start_proxy({"legacy": (await make_upstream()).url}, [route("all")],
                              reports={"database": str(database)})
    async with http.get(proxy.admin_url + "/reports") as response:
        assert response.status == 200
        assert response.headers["Content-Type"] == "text/html; charset=utf-8"
        assert response.headers["Content-Security-Policy"] == CSP
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        page = await response.text()
    assert field(page, "orders", "rate") == "25.0%" and "&lt;script&gt;window.__pwned" in page


async def test_admin_report_before_any_comparison_is_the_empty_page(make_upstream, start_proxy, http, tmp_path):
    database = tmp_path / "var" / "divergence.db"
    proxy = await start_proxy({"legacy": (await make_upstream()).url}, [route("all")],
                              reports={"database": str(database)})
    async with http.get(proxy.admin_url + "/reports") as response:
        assert response.status == 200 and "No comparisons recorded yet" in await response.text()
    assert not database.exists()


async def test_admin_report_needs_the_token(make_upstream, start_proxy, http, tmp_path, monkeypatch):
    monkeypatch.setenv("TEST_ADMIN_TOKEN", "s3cret")
    proxy = await start_proxy({"legacy": (await make_upstream()).url}, [route("all")],
                              admin={"listen": "127.0.0.1:0", "token_env": "TEST_ADMIN_TOKEN"},
                              reports={"database": str(tmp_path / "d.db")})
    for headers, expected in (({}, 401), ({"Authorization": "Bearer nope"}, 401),
                              ({"Authorization": "Bearer s3cret"}, 200)):
        async with http.get(proxy.admin_url + "/reports", headers=headers) as response:
            assert response.status == expected, headers
            assert ("Content-Security-Policy" in response.headers) == (expected == 200)


async def test_admin_report_on_an_unreadable_database_is_a_json_503(make_upstream, start_proxy, http, tmp_path):
    proxy = await start_proxy({"legacy": (await make_upstream()).url}, [route("all")],
                              reports={"database": str(tmp_path)})  # a folder: SQLite cannot open it
    async with http.get(proxy.admin_url + "/reports") as response:
        assert response.status == 503 and (await response.json())["error"] == "report_unavailable"
