"""Naming what to read: a divergence id, a signature, or a unique prefix of either (`report show`), and a
signature's examples listed with their ids (`report examples`)."""

from __future__ import annotations

import dataclasses
import json
import time

import pytest

from reports import lookup
from tests.test_divergence_store import divergence, sink_at, strangler
from tests.test_store import sink_on


def planted(sink) -> None:
    """Signatures abc123aa (three divergences, /api/orders/1..3 in order) and abc123bb (one) and ffee0011."""
    start = time.time() - 60
    for n, signature in enumerate(["abc123aa", "abc123aa", "abc123bb", "abc123aa", "ffee0011"]):
        found = divergence(signature=signature, at=start + n)
        sink.record(dataclasses.replace(found, request=found.request._replace(target=f"/api/orders/{n}")))
        sink.flush()
    sink.close()


def test_a_name_is_found_whole_or_by_a_unique_prefix_on_either_engine(store):
    planted(sink_on(store, examples_per_signature=5))
    assert lookup.find([store], "abc123aa") == lookup.Named(lookup.Kind.SIGNATURE, "abc123aa", "orders: $.price")
    assert lookup.find([store], "ffee00").key == "ffee0011"
    some = lookup.examples([store], "abc123aa")
    assert [(e.target, e.role) for e in some] == [("/api/orders/3", "latest"), ("/api/orders/1", "sample"),
                                                  ("/api/orders/0", "first")]
    assert lookup.find([store], some[0].id) == lookup.Named(lookup.Kind.DIVERGENCE, some[0].id,
                                                            "orders: GET /api/orders/3")
    with pytest.raises(lookup.Unclear) as ambiguous:
        lookup.find([store], "abc123")
    assert str(ambiguous.value).splitlines() == ["'abc123' is ambiguous: it starts 2 names",
                                                 "  signature abc123aa  (orders: $.price)",
                                                 "  signature abc123bb  (orders: $.price)"]
    with pytest.raises(lookup.Unclear, match="too short"):
        lookup.find([store], "abc")
    with pytest.raises(lookup.NotFound):
        lookup.find([store], "0123456789")


def test_report_examples_lists_ids_and_show_takes_a_signature_for_its_latest(tmp_path):
    database = tmp_path / "d.db"
    planted(sink_at(database))
    db = ["--db", str(database)]
    done = strangler("report", "examples", "abc123a", *db)
    lines = done.stdout.splitlines()
    assert done.returncode == 0 and lines[0] == ("signature abc123aa  (orders: $.price): 3 kept examples, "
                                                 "newest first")
    assert [line.split()[2:] for line in lines[1:]] == [
        ["latest", "200", "->", "200", "GET", "/api/orders/3"], ["sample", "200", "->", "200", "GET", "/api/orders/1"],
        ["first", "200", "->", "200", "GET", "/api/orders/0"]]
    listed = json.loads(strangler("report", "examples", "abc123aa", "--format", "json", *db).stdout)
    assert listed["signature"] == "abc123aa" and [e["role"] for e in listed["examples"]] == ["latest", "sample", "first"]
    latest = listed["examples"][0]["id"]

    shown = strangler("report", "show", "abc123a", *db)
    assert shown.returncode == 0
    assert shown.stdout.splitlines()[:3] == ["latest of 3 kept examples of signature abc123aa", "",
                                             f"divergence {latest}  route orders  signature abc123aa"]
    assert json.loads(strangler("report", "show", latest[:8], "--format", "json", *db).stdout)["id"] == latest

    unclear = strangler("report", "show", "abc123", *db)
    assert unclear.returncode == 2 and "abc123aa" in unclear.stderr and "abc123bb" in unclear.stderr
    assert strangler("report", "show", "nope", *db).returncode == 3
    assert strangler("report", "examples", "0123456789", *db).returncode == 3
    not_a_signature = strangler("report", "examples", latest, *db)
    assert not_a_signature.returncode == 2 and f"strangler report show {latest}" in not_a_signature.stderr
