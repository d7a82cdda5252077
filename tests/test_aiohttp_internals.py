"""aiohttp's internals that the wire layer stands on still have their shape, and the pin says which versions."""

import re
import tomllib

import aiohttp
import pytest
from aiohttp.base_protocol import BaseProtocol

from proxy.wire import internals
from tests.helpers import REPO


async def test_the_internals_the_wire_layer_uses_have_their_shape():
    assert await internals.problems() == [], (
        f"aiohttp {aiohttp.__version__} changed what proxy/wire stands on: adapt the wire layer, then the pin")


def test_aiohttp_is_a_tested_version_and_the_pin_says_so():
    assert aiohttp.__version__.startswith(internals.TESTED + "."), (
        f"aiohttp {aiohttp.__version__} is not {internals.TESTED}.x, the version proxy/wire was tested on")
    [pin] = [d for d in tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
             if d.startswith("aiohttp")]
    major, minor = map(int, internals.TESTED.split("."))
    assert re.fullmatch(rf"aiohttp>=\s*{major}\.{minor}\.\d+\s*,\s*<\s*{major}\.{minor + 1}", pin), pin


async def test_a_changed_shape_is_named(monkeypatch):
    monkeypatch.delattr(BaseProtocol, "_drain_helper")
    assert await internals.problems() == ["BaseProtocol has no '_drain_helper'"]
    with pytest.raises(RuntimeError, match="not one the wire layer was tested on"):
        await internals.require()
