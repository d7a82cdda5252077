"""The docs stay true: every routes.yaml key the parser knows is documented, and every relative link lands.

The keys come from the parser itself, not from a list kept by hand: each mapping of
routes.yaml is read through `.section(...)` with the set of keys it allows, so the calls
in proxy/config/ are read with `ast` and their allowed sets evaluated in their module.
"""

from __future__ import annotations

import ast
import importlib
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers import REPO

PARSER = REPO / "proxy" / "config"
CONFIGURATION = REPO / "docs" / "configuration.md"
PAGES = sorted([REPO / "README.md", *(REPO / "docs").rglob("*.md")])
ANY = "*"  # a name the user chooses (an upstream's) or a list index (a route's), in a key's path


# The parser's keys

@dataclass(frozen=True)
class Read:
    """One `.section(...)` call: where it reads, and the keys that mapping allows.

    `Reader.section(path, data, where, allowed)` reads a mapping at an absolute path (a
    tuple); `Section.section(key, allowed)` reads the mapping under `key` of some other
    section, which is the one whose allowed keys include `key`."""

    at: tuple[str, ...] | str
    allowed: frozenset[str]
    origin: str


def reads_in(source: str, namespace: dict, origin: str) -> list[Read]:
    """Every `.section(...)` call in `source`, its allowed keys evaluated in `namespace` (the module's
    globals), so a set literal, a named constant or an expression over them all count."""
    found = []
    for call, inside in _calls(ast.parse(source)):
        if not (isinstance(call.func, ast.Attribute) and call.func.attr == "section") or inside == "section":
            continue  # `def section` itself forwards its caller's keys: the callers are what count
        where = f"{origin}:{call.lineno}"
        at = _anchor(call.args[0] if call.args else None, where)
        allowed = _argument(call, 3 if isinstance(at, tuple) else 1, "allowed", where)
        keys = eval(compile(ast.Expression(allowed), where, "eval"), dict(namespace))  # noqa: S307 - our own code
        assert isinstance(keys, (set, frozenset)) and all(isinstance(k, str) for k in keys), \
            f"{where}: the allowed keys are not a set of strings: {ast.unparse(allowed)}"
        found.append(Read(at, frozenset(keys), where))
    return found


def _calls(tree: ast.AST, inside: str = "") -> list[tuple[ast.Call, str]]:
    """The calls in `tree`, each with the name of the function that holds it."""
    found = []
    for node in ast.iter_child_nodes(tree):
        name = node.name if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) else inside
        if isinstance(node, ast.Call):
            found.append((node, inside))
        found += _calls(node, name)
    return found


def _anchor(node: ast.expr | None, where: str) -> tuple[str, ...] | str:
    if isinstance(node, ast.Tuple):
        return tuple(e.value if isinstance(e, ast.Constant) and isinstance(e.value, str) else ANY for e in node.elts)
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    raise AssertionError(f"{where}: cannot tell which mapping this .section() reads (a tuple path or a key)")


def _argument(call: ast.Call, index: int, name: str, where: str) -> ast.expr:
    for keyword in call.keywords:
        if keyword.arg == name:
            return keyword.value
    assert len(call.args) > index, f"{where}: .section() without its allowed keys"
    return call.args[index]


def keys_of(reads: list[Read]) -> set[str]:
    """Dotted paths of every allowed key: `server.send_timeout`, `upstreams.*.breaker.failures`."""
    paths: dict[Read, str] = {}

    def path(read: Read) -> str:
        if read not in paths:
            if isinstance(read.at, tuple):
                paths[read] = ".".join(read.at)
            else:
                parents = [r for r in reads if read.at in r.allowed]
                assert len(parents) == 1, (f"{read.origin}: section '{read.at}' sits under "
                                           f"{len(parents)} sections' allowed keys; it must be exactly one")
                paths[read] = _join(path(parents[0]), read.at)
        return paths[read]

    return {_join(path(read), key) for read in reads for key in read.allowed}


def _join(parent: str, key: str) -> str:
    return f"{parent}.{key}" if parent else key


def parser_keys() -> set[str]:
    reads = []
    for file in sorted(PARSER.rglob("*.py")):
        module = importlib.import_module(".".join(file.relative_to(REPO).with_suffix("").parts))
        reads += reads_in(file.read_text(), vars(module), str(file.relative_to(REPO)))
    return keys_of(reads)


# The documented keys

def documented_keys(text: str) -> set[str]:
    """The first cell of every table row that is one `key`, in the parser's spelling: `NAME` and
    `routes[]` (a name you choose, a list entry) stand for any."""
    keys = set()
    for line in text.splitlines():
        m = re.match(r"\|\s*`([^`]+)`\s*\|", line)
        if m:
            parts = m[1].replace("[]", "." + ANY).split(".")
            keys.add(".".join(ANY if p.isupper() else p for p in parts))
    return keys


def undocumented(known: set[str], documented: set[str]) -> list[str]:
    """Known keys with no row of their own, nor rows for keys beneath them (a section such as `admin`
    is documented by its keys)."""
    return sorted(k for k in known if k not in documented and not any(d.startswith(k + ".") for d in documented))


def test_every_key_the_parser_knows_is_in_docs_configuration():
    missing = undocumented(parser_keys(), documented_keys(CONFIGURATION.read_text()))
    assert not missing, f"routes.yaml keys missing from docs/configuration.md: {', '.join(missing)}"


def test_every_key_in_docs_configuration_is_one_the_parser_knows():
    stale = sorted(documented_keys(CONFIGURATION.read_text()) - parser_keys())
    assert not stale, f"docs/configuration.md documents keys the parser refuses: {', '.join(stale)}"


def test_the_parser_keys_are_found_where_they_are_read():
    keys = parser_keys()
    assert {"version", "server.send_timeout", "upstreams.*.breaker.probes", "routes.*.match.path",
            "routes.*.rollout_plan.rollback.window", "toggles.unleash.project"} <= keys


FAKE_PARSER = '''
TOP = {"version", "server", "routes"}

def read(reader, top, route):
    top = reader.section((), data, "", TOP)
    top.section("server", {"max_in_flight", "brand_new_limit"}, "server")
    route = reader.section(("routes", index), data, where, allowed={"name", "match"})
    route.section("match", TOP - {"version", "server", "routes"} | {"path"})
'''


def test_a_key_added_to_the_parser_without_docs_fails():
    namespace = {"TOP": {"version", "server", "routes"}}
    keys = keys_of(reads_in(FAKE_PARSER, namespace, "fake.py"))
    assert keys == {"version", "server", "routes", "server.max_in_flight", "server.brand_new_limit",
                    "routes.*.name", "routes.*.match", "routes.*.match.path"}
    docs = "| `version` | |\n| `server.max_in_flight` | |\n| `routes[].name` | |\n| `routes[].match.path` | |\n"
    assert undocumented(keys, documented_keys(docs)) == ["server.brand_new_limit"]


def test_a_section_that_no_parent_allows_is_an_error():
    with pytest.raises(AssertionError, match="'orphan' sits under 0 sections"):
        keys_of(reads_in('top.section("orphan", {"a"})\n', {}, "fake.py"))


# Links

FENCE = re.compile(r"^ {0,3}(```|~~~)")
INLINE_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*<?([^)\s>]*)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE = re.compile(r"^ {0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s|$)")
HEADING = re.compile(r"^ {0,3}#{1,6}\s+(.*?)\s*#*\s*$")
EXTERNAL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")  # http:, https:, mailto: ... never fetched


def prose_lines(text: str) -> list[str]:
    """The lines outside fenced code blocks, with inline code removed: neither holds links or headings."""
    return [re.sub(r"(`+)(?!`).*?(?<!`)\1(?!`)", "", line) for line in outside_fences(text)]


def links(text: str) -> list[str]:
    found = []
    for line in prose_lines(text):
        found += INLINE_LINK.findall(line)
        found += REFERENCE.findall(line)
    return found


def slugs(text: str) -> set[str]:
    """GitHub's anchors for a page's headings: the heading's text, lower case, spaces to '-', punctuation
    other than '-' and '_' dropped; a repeated slug gets -1, -2..."""
    found: set[str] = set()
    for line in outside_fences(text):
        m = HEADING.match(line)
        if not m:
            continue
        heading = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", m[1])  # a link's text only
        slug = re.sub(r"[^\w\- ]", "", heading.replace("`", "").lower()).replace(" ", "-")
        base, n = slug, 0
        while slug in found:
            n += 1
            slug = f"{base}-{n}"
        found.add(slug)
    return found


def outside_fences(text: str) -> list[str]:
    lines, fenced = [], False
    for line in text.splitlines():
        if FENCE.match(line):
            fenced = not fenced
        elif not fenced:
            lines.append(line)
    return lines


def broken_links(page: Path) -> list[str]:
    broken = []
    for target in links(page.read_text()):
        if not target or EXTERNAL.match(target):
            continue
        path, _, fragment = target.partition("#")
        file = (REPO / path.lstrip("/")) if path.startswith("/") else (page.parent / path) if path else page
        if not file.exists():
            broken.append(f"{target}: no such file")
        elif fragment and file.suffix == ".md" and fragment not in slugs(file.read_text()):
            broken.append(f"{target}: no heading '#{fragment}' in {file.relative_to(REPO)}")
    return broken


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_resolves(page: Path):
    assert not broken_links(page)


def test_every_docs_page_is_linked_from_the_readme():
    linked = {(REPO / t.partition("#")[0]).resolve() for t in links((REPO / "README.md").read_text())
              if not EXTERNAL.match(t) and t.partition("#")[0]}
    unlinked = [str(p.relative_to(REPO)) for p in PAGES if p.name != "README.md" and p.resolve() not in linked]
    assert not unlinked, f"docs pages a newcomer cannot reach from the README: {', '.join(unlinked)}"


@pytest.mark.parametrize(("heading", "slug"), [
    ("## Feature toggles: moving users a percentage at a time", "feature-toggles-moving-users-a-percentage-at-a-time"),
    ("### Walkthrough: the orders route's whole migration, with `strangler demo`",
     "walkthrough-the-orders-routes-whole-migration-with-strangler-demo"),
    ("## `server.send_timeout` and [links](x.md)", "serversend_timeout-and-links"),
    ("# Choices made where the contract is silent", "choices-made-where-the-contract-is-silent"),
])
def test_slugs_follow_github(heading: str, slug: str):
    assert slugs(heading) == {slug}


def test_a_repeated_heading_gets_a_number_and_code_blocks_hold_no_headings():
    assert slugs("## Retries\n```sh\n# not a heading\n```\n## Retries\n") == {"retries", "retries-1"}


def test_links_in_code_are_not_links():
    assert links("see [a](a.md), `[b](b.md)`\n```\n[c](c.md)\n```\n[d]: d.md\n") == ["a.md", "d.md"]
