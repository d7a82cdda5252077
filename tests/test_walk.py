"""The JSON walk agrees with DeepDiff alone, only faster, and is stricter where Python's == is loose."""

from typing import Any

from deepdiff import DeepDiff
from hypothesis import given, settings
from hypothesis import strategies as st

from comparators.walk import differences
from proxy.model import CompareSpec, Difference
from proxy.model.jsonpath import format_path

# floats as exact binary fractions: DeepDiff rounds numbers to 12 significant decimals, the walk does not
scalars = st.one_of(st.none(), st.integers(-5, 5), st.integers(-20, 20).map(lambda n: n / 4), st.text(max_size=3))
documents = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                          st.dictionaries(st.text(max_size=3), inner, max_size=4)),
                         max_leaves=20)


def deepdiff_paths(legacy: Any, new: Any, at: tuple = ()) -> set[str]:
    diff = DeepDiff(legacy, new, view="tree", threshold_to_diff_deeper=0, ignore_numeric_type_changes=True)
    return {format_path([*at, *level.path(output_format="list")]) for levels in diff.values() for level in levels}


def paired_paths(legacy: Any, new: Any, at: tuple = ()) -> set[str]:
    """DeepDiff's findings, with lists of one length paired item by item as the walk pairs them. (Left
    to itself DeepDiff may align such lists otherwise, [None, None, 0, None] against [None, 0, None, 0]
    as an item removed and one added, which is a choice, not a finding.)"""
    if isinstance(legacy, dict) and isinstance(new, dict):
        return set().union(*(paired_paths(legacy[key], new[key], (*at, key)) if key in legacy and key in new
                             else {format_path([*at, key])} for key in legacy.keys() | new.keys()))
    if isinstance(legacy, list) and isinstance(new, list) and len(legacy) == len(new):
        return set().union(*(paired_paths(old, now, (*at, index))
                             for index, (old, now) in enumerate(zip(legacy, new, strict=True))))
    return deepdiff_paths(legacy, new, at)


@settings(max_examples=400, deadline=None)
@given(documents, documents)
def test_the_walk_finds_what_deepdiff_finds(legacy, new):
    assert {d.path for d in differences(legacy, new, CompareSpec())} == paired_paths(legacy, new)


def test_lists_of_one_length_are_paired_item_by_item():
    assert [d.path for d in differences([None, None, 0, None], [None, 0, None, 0], CompareSpec())] == [
        "$[1]", "$[2]", "$[3]"]


@settings(max_examples=200, deadline=None)
@given(documents)
def test_a_document_never_differs_from_itself(document):
    assert differences(document, document, CompareSpec()) == []


def test_true_is_not_one_and_one_is_one_point_zero():
    assert differences({"ok": True, "n": 1}, {"ok": 1, "n": 1.0}, CompareSpec()) == [
        Difference("$.ok", True, 1, "type")]
    assert differences([{"flags": [False]}], [{"flags": [0]}], CompareSpec()) == [
        Difference("$[0].flags[0]", False, 0, "type")]


def test_lists_of_other_lengths_are_aligned_by_deepdiff():
    assert differences({"items": [1, 2, 3]}, {"items": [1, 3]}, CompareSpec()) == [
        Difference("$.items[1]", 2, None, "removed")]  # one item gone, not two changed


def test_ignored_subtrees_are_not_walked_and_not_reported():
    legacy = {"orders": [{"id": 1, "etag": "a", "meta": {"at": 1}}], "at": "t1"}
    new = {"orders": [{"id": 2, "etag": "b", "meta": {"at": 2}}], "at": "t2"}
    spec = CompareSpec(ignore_paths=("$.at", "$.orders[*].etag", "$.orders[*].meta"))
    assert differences(legacy, new, spec) == [Difference("$.orders[0].id", 1, 2)]


def test_tolerance_and_order():
    assert differences({"p": 10.0}, {"p": 10.004}, CompareSpec(float_tolerance=0.01)) == []
    assert differences({"p": 10.0}, {"p": 10.02}, CompareSpec(float_tolerance=0.01)) == [
        Difference("$.p", 10.0, 10.02)]
    assert differences({"xs": [1, 2, 3]}, {"xs": [3, 2, 1]}, CompareSpec(ignore_order=True)) == []
