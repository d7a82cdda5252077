"""Comparing two answers: paths, bodies as content, and the differences a reviewer sees."""

import gzip
import json
import os
import zlib

import pytest

from comparators.bodies import lift
from comparators.deep import DeepDiffComparator
from proxy.model import CompareSpec, Comparison, Difference, Observation, Side
from proxy.model.codings import unpack
from proxy.model.jsonpath import covers, format_path, generalize, parse_path
from proxy.shadow.process import ComparisonProcess


@pytest.mark.parametrize("parts, path", [
    (["items", 0, "price"], "$.items[0].price"),
    (["a.b", "c d"], "$['a.b']['c d']"),
    ([], "$"),
])
def test_paths_are_written_as_users_write_ignore_paths(parts, path):
    assert format_path(parts) == path
    assert parse_path(path) == tuple(parts)


@pytest.mark.parametrize("pattern, path, covered", [
    ("$.updated_at", "$.updated_at", True),
    ("$.meta", "$.meta.updated_at", True),
    ("$.items[*].etag", "$.items[3].etag", True),
    ("$.items[*].etag", "$.items[3].price", False),
    ("$.items[*]", "$.items.etag", False),  # [*] stands for an index only
    ("$.items[1]", "$.items[10]", False),
    ("$['a.b']", "$['a.b'].c", True),
    ("status", "status", True),
    ("$.a", "status", False),
])
def test_a_path_covers_itself_and_what_is_below_it(pattern, path, covered):
    assert covers(pattern, path) is covered


def test_generalize_makes_one_path_for_every_item_of_a_list():
    assert generalize("$.orders[3].items[12].etag") == "$.orders[*].items[*].etag"


@pytest.mark.parametrize("body, encoding", [
    (gzip.compress(b'{"a": 1}'), "gzip"),
    (zlib.compress(b'{"a": 1}'), "deflate"),
    (zlib.compress(b'{"a": 1}')[2:-4], "deflate"),  # raw deflate, as some servers send it
    (b'{"a": 1}', "identity"),
    (gzip.compress(zlib.compress(b'{"a": 1}')), "deflate, gzip"),
])
def test_content_codings_are_undone(body, encoding):
    assert unpack(body, encoding) == b'{"a": 1}'


def answer(body: bytes, media: str = "application/json", status: int = 200, side: Side = Side.LEGACY,
           **headers: str) -> Observation:
    pairs = (("Content-Type", media),) + tuple((k.replace("_", "-"), v) for k, v in headers.items())
    return Observation(side, status, pairs, body, 0.01)


@pytest.mark.parametrize("observation, kind, value", [
    (answer(b'{"a": [1, 2]}'), "json", {"a": [1, 2]}),
    (answer(b'{"a": 1}', "application/problem+json"), "json", {"a": 1}),
    (answer(b"not json", "application/json"), "text", "not json"),
    (answer("café".encode("latin-1"), "text/plain; charset=latin-1"), "text", "café"),
    (answer(b"\x89PNG\r\n", "image/png"), "bytes", b"\x89PNG\r\n"),
])
def test_bodies_are_lifted_to_json_text_or_bytes(observation, kind, value):
    lifted = lift(observation)
    assert (lifted.kind, lifted.value) == (kind, value)


def compare(legacy: Observation, new: Observation, **spec) -> list[Difference]:
    return list(DeepDiffComparator().compare(legacy, new, CompareSpec(**spec)).differences)


def body(**fields) -> bytes:
    return json.dumps(fields).encode()


@pytest.mark.parametrize("legacy, new, spec, differences", [
    (body(price=10), body(price=11), {}, [Difference("$.price", 10, 11)]),
    (body(price=10), body(price=10.0), {}, []),  # one number to a JSON reader
    (body(price=10.0), body(price=10.004), {"float_tolerance": 0.01}, []),
    (body(items=[1, 2, 3]), body(items=[3, 1, 2]), {"ignore_order": True}, []),
    (body(at="t1", items=[{"etag": "a"}]), body(at="t2", items=[{"etag": "b"}]),
     {"ignore_paths": ("$.at", "$.items[*].etag")}, []),
    (body(id=1), body(id=1, extra=True), {}, [Difference("$.extra", None, True, "added")]),
    (body(id=1, gone=2), body(id=1), {}, [Difference("$.gone", 2, None, "removed")]),
    (body(id="1"), body(id=1), {}, [Difference("$.id", "1", 1, "type")]),
    (body(user={"address": {"zip": "1"}}), body(user={"address": {"zip": "2"}}), {},
     [Difference("$.user.address.zip", "1", "2")]),  # where it is, not the whole parent
])
def test_json_bodies_differ_field_by_field(legacy, new, spec, differences):
    assert compare(answer(legacy), answer(new, side=Side.NEW), **spec) == differences


def test_status_and_named_headers_take_part():
    legacy = answer(body(a=1), status=200, Cache_Control="max-age=60")
    new = answer(body(a=1), "application/json; charset=utf-8", status=201, side=Side.NEW)
    assert compare(legacy, new, headers=("content-type", "cache-control")) == [
        Difference("status", 200, 201),
        Difference("header:content-type", "application/json", "application/json; charset=utf-8"),
        Difference("header:cache-control", "max-age=60", None, "removed"),
    ]


def test_text_shows_the_first_differing_line_and_other_bodies_their_digest():
    text = compare(answer(b"a\nb\nc", "text/plain"), answer(b"a\nB\nc", "text/plain", side=Side.NEW))
    assert text == [Difference("$", "b", "B")]
    [digest] = compare(answer(b"\x00\x01", "image/png"), answer(b"\x00\x02", "image/png", side=Side.NEW))
    assert digest.path == "$" and digest.legacy.startswith("sha256:") and digest.legacy != digest.new


def test_a_side_without_an_answer_differs_in_status_only():
    failed = Observation(Side.NEW, None, (), None, 1.0, error="timeout")
    assert compare(answer(body(a=1)), failed) == [Difference("status", 200, "no answer (timeout)")]
    assert compare(Observation(Side.LEGACY, None, error="refused"), Observation(Side.NEW, None, error="refused")) == []


def test_the_comparator_survives_a_trip_to_a_worker_process():
    import pickle

    comparator = pickle.loads(pickle.dumps(DeepDiffComparator()))
    assert comparator.compare(answer(body(a=1)), answer(body(a=2), side=Side.NEW), CompareSpec()).differences


class Niceness:
    """A comparator that says at what CPU priority it ran."""

    def compare(self, legacy: Observation, new: Observation, spec: CompareSpec) -> Comparison:
        return Comparison((Difference("nice", 0, os.nice(0)),))


async def test_large_comparisons_run_in_a_worker_that_yields_the_cpu_to_the_proxy():
    worker = ComparisonProcess(Niceness())
    try:
        comparison = await worker(answer(body(a=1)), answer(body(a=2), side=Side.NEW), CompareSpec())
    finally:
        worker.close()
    assert comparison.differences[0].new == 19 and os.nice(0) < 19  # the proxy itself keeps its priority
