"""`strangler report accept | unaccept`: intended differences marked, shown apart in every report, and expiring."""

import getpass
import json
import re
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from reports import accepted, query
from reports.schema import open_database, open_for_reading
from tests.helpers import REPO
from tests.test_divergence_store import divergence, sink_at

PRICE, TAX = "3f2a9c0d1e2b", "77aa00110022"


def strangler(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "proxy", *args], capture_output=True, text=True, timeout=60, cwd=REPO)


@pytest.fixture
def db(tmp_path) -> Path:
    """Route orders: 10 comparisons, 4 diverged: 3 on the price (one signature), 1 on the tax."""
    path = tmp_path / "divergence.db"
    sink = sink_at(path)
    for n in range(10):
        sink.count("orders", n < 4, time.time())
    for _ in range(3):
        sink.record(divergence(signature=PRICE))
    sink.record(divergence(path="$.tax", signature=TAX))
    sink.close()
    return path


def summary_json(db: Path) -> dict:
    done = strangler("report", "summary", "--format", "json", "--db", str(db))
    assert done.returncode == 0, done.stderr
    [route] = json.loads(done.stdout)["routes"]
    return route


def test_an_accepted_signature_shows_apart_in_summary_show_and_html(db):
    done = strangler("report", "accept", PRICE[:7], "--reason", "prices now include tax", "--expires", "2099-06-30",
                     "--db", str(db))
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout == f"accepted {PRICE} (route orders: $.price) until 2099-06-30: prices now include tax\n"

    route = summary_json(db)
    assert (route["compared"], route["diverged"], route["divergence_rate"]) == (10, 4, 0.4)  # still divergences
    assert (route["accepted"], route["divergence_rate_unaccepted"]) == (3, 0.1)
    assert [(s["signature"], s["accepted"]) for s in route["signatures"]] == [
        (TAX, None), (PRICE, {"reason": "prices now include tax", "expires": 4086547200.0})]  # accepted ones last

    text = strangler("report", "summary", "--db", str(db)).stdout.splitlines()
    assert text[1].split() == ["orders", "10", "4", "3", "10.0%", "$.price", "(3),", "$.tax", "(1)"]  # open: 10%
    assert (route["open"], route["open_rate"]) == (1, 0.1)  # what the gates count
    assert text[3:] == ["orders: 2 signatures, 3 divergences accepted (rate without them 10.0%)",
                        f"  {TAX}        1  $.tax",
                        f"  {PRICE}        3  $.price  [accepted: prices now include tax (until 2099-06-30)]"]

    example = query.summary([str(db)])[0].signatures[1].example
    shown = strangler("report", "show", example, "--db", str(db)).stdout.splitlines()
    assert "accepted: prices now include tax (until 2099-06-30)" in shown

    page = strangler("report", "html", "--db", str(db)).stdout
    assert re.findall(r'data-signature="(\w+)"', page) == [TAX, PRICE]
    row = page.split(f'data-signature="{PRICE}"', 1)[1].split("</tr>", 1)[0]
    assert re.search(r'<span class="badge accepted"[^>]*>accepted</span>\s*'
                     r'<span class="accepted-reason">prices now include tax \(until 2099-06-30\)</span>', row)
    assert "badge accepted" not in page.split(f'data-signature="{TAX}"', 1)[1].split("</tr>", 1)[0]

    [(by, reason)] = sqlite3.connect(db).execute("SELECT by, reason FROM accepted").fetchall()
    assert (by, reason) == (getpass.getuser(), "prices now include tax")


def test_unaccept_withdraws_and_says_when_there_is_nothing_to_withdraw(db):
    assert strangler("report", "accept", PRICE, "--reason", "intended", "--db", str(db)).returncode == 0
    assert summary_json(db)["accepted"] == 3
    done = strangler("report", "unaccept", PRICE[:6], "--db", str(db))
    assert (done.returncode, done.stdout) == (0, f"withdrew the acceptance of {PRICE} (orders: intended)\n")
    route = summary_json(db)
    assert (route["accepted"], route["divergence_rate_unaccepted"]) == (0, 0.4)
    again = strangler("report", "unaccept", PRICE, "--db", str(db))
    assert (again.returncode, again.stderr) == (3, f"strangler report: no accepted signature {PRICE!r} in {db}\n")


def test_the_command_line_records_who_acts_as_the_console_does(db):
    assert strangler("report", "accept", PRICE, "--reason", "intended", "--by", "ana", "--db", str(db)).returncode == 0
    done = strangler("report", "unaccept", PRICE, "--reason", "the fix landed", "--by", "bo", "--db", str(db))
    assert done.returncode == 0
    rows = sqlite3.connect(db).execute("SELECT action, by, subject, reason, origin FROM actions ORDER BY at").fetchall()
    assert rows == [("accept", "ana", PRICE, "intended", "cli"), ("unaccept", "bo", PRICE, "the fix landed", "cli")]


def test_a_prefix_names_one_signature_or_is_refused(tmp_path):
    path = tmp_path / "d.db"
    sink = sink_at(path)
    for sig, field in (("abcdef012345", "$.a"), ("abcdef999999", "$.b")):
        sink.record(divergence(path=field, signature=sig))
    sink.close()
    ambiguous = strangler("report", "accept", "abcdef", "--reason", "r", "--db", str(path))
    assert ambiguous.returncode == 2
    assert ambiguous.stderr.splitlines() == ["strangler report: 'abcdef' is ambiguous: it starts 2 signatures",
                                             "  abcdef012345  (orders: $.a)", "  abcdef999999  (orders: $.b)"]
    short = strangler("report", "accept", "abcde", "--reason", "r", "--db", str(path))
    assert (short.returncode, "at least 6 characters" in short.stderr) == (2, True)
    unknown = strangler("report", "accept", "ffffff", "--reason", "r", "--db", str(path))
    assert (unknown.returncode, unknown.stderr) == (3, f"strangler report: no signature 'ffffff' in {path}\n")
    assert strangler("report", "accept", "abcdef9", "--reason", "r", "--db", str(path)).returncode == 0
    database = open_database(str(path))
    assert accepted.active(database, time.time()) == {"abcdef999999"}
    database.close()


@pytest.mark.parametrize("args, message", [
    (["--reason", "r", "--expires", "2020-01-01"], "the expiry 2020-01-01 is in the past"),
    (["--reason", "r", "--expires", "2020-01-01T10:00:00Z"], "the expiry 2020-01-01T10:00:00Z is in the past"),
    (["--reason", "r", "--expires", "next week"], "the expiry wants YYYY-MM-DD or an ISO datetime"),
    (["--reason", "   "], "the reason must say why the difference is intended"),
    ([], "the following arguments are required: --reason"),
])
def test_a_bad_reason_or_expiry_is_refused_and_nothing_is_accepted(db, args, message):
    done = strangler("report", "accept", PRICE, *args, "--db", str(db))
    assert (done.returncode, message in done.stderr) == (2, True), done.stderr
    assert summary_json(db)["accepted"] == 0


def test_an_expired_acceptance_no_longer_counts(db):
    database = open_database(str(db))
    now = time.time()
    accepted.accept(database, PRICE, "orders", "for the demo", now + 60, "ada", now - 10)
    assert accepted.active(database, now) == {PRICE}
    assert accepted.active(database, now + 61) == frozenset()
    database.execute("UPDATE accepted SET expires = ?", [now - 1])  # the minute has passed
    assert accepted.active(database, time.time()) == frozenset()
    route = summary_json(db)
    assert (route["accepted"], route["signatures"][1]["accepted"]) == (0, None)
    with pytest.raises(ValueError, match="not in the future"):
        accepted.accept(database, PRICE, "orders", "again", now - 1, "ada", now)
    database.close()


def test_a_database_older_than_the_table_has_no_acceptances(db):
    old = sqlite3.connect(db)
    old.executescript("DROP TABLE accepted; DROP TABLE replays;")
    old.close()
    database = open_for_reading(str(db))
    assert accepted.active(database, 0) == frozenset()
    database.close()
    route = summary_json(db)  # the reports read it as it is
    assert (route["accepted"], route["divergence_rate_unaccepted"]) == (0, 0.4)


@pytest.mark.parametrize("text, until", [
    ("2099-06-30", "2099-06-30"),  # through that day, UTC
    ("2099-06-30T18:00:00+02:00", "2099-06-30T16:00:00Z"),
    ("2099-06-30T18:00", "2099-06-30T18:00:00Z"),  # no offset: UTC, as the reports
])
def test_an_expiry_reads_back_as_written(text, until):
    assert accepted.until_text(accepted.parse_expiry(text, time.time())) == until


def test_once_the_only_signature_is_accepted_the_headline_says_what_the_gates_count(tmp_path):
    """The walkthrough's case: after the only signature is accepted, the headline is 0.0%, not 100.0% in red,
    and the trend's last minute shows nothing open."""
    path = tmp_path / "divergence.db"
    sink = sink_at(path)
    for _ in range(4):
        sink.count("orders", True, time.time())
        sink.record(divergence(signature=PRICE))
    sink.close()
    assert strangler("report", "accept", PRICE, "--reason", "tax included", "--db", str(path)).returncode == 0
    route = summary_json(path)
    assert (route["divergence_rate"], route["open_rate"], route["open"], route["accepted"]) == (1.0, 0.0, 0, 4)
    page = strangler("report", "html", "--db", str(path)).stdout
    stats = page.split('data-route="orders"', 1)[1].split("</dl>", 1)[0]
    assert re.search(r'<dd class="rate"\s[^>]*data-field="rate">0.0%</dd>', stats)  # not "rate bad"
    assert re.search(r'data-field="accepted">4<', stats)
    minute = page.split('data-chart="trend"', 1)[1].split("</svg>", 1)[0]
    # the last minute with comparisons (the page may be made in the minute after them)
    last_minute = [g for g in re.findall(r'<g class="bucket">(.*?)</g>', minute) if "no comparisons" not in g][-1]
    assert 'class="accepted"' in last_minute and 'class="open"' not in last_minute  # green, nothing red
    assert "0 of 4 compared open (0.0%), 4 more accepted" in last_minute


def test_summary_and_the_html_agree_on_every_number(db):
    assert strangler("report", "accept", PRICE, "--reason", "tax included", "--db", str(db)).returncode == 0
    route = summary_json(db)
    page = strangler("report", "html", "--db", str(db)).stdout
    stats = page.split('data-route="orders"', 1)[1].split("</dl>", 1)[0]
    shown = dict(re.findall(r'data-field="(\w+)">([^<]*)<', stats))
    assert shown == {"rate": f"{route['open_rate']:.1%}", "compared": str(route["compared"]),
                     "open": str(route["open"]), "accepted": str(route["accepted"]),
                     "diverged": str(route["diverged"]), "noise": str(sum(n["count"] for n in route["noise"]))}
    overview = page.split('class="overview"', 2)[2].split("</tbody>", 1)[0]
    cells = re.findall(r'<td class="num">([^<]*)</td>', overview)
    assert cells == [str(route["compared"]), str(route["open"]), str(route["accepted"]), f"{route['open_rate']:.1%}"]
