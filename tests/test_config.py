"""routes.yaml as a user sees it: what loads, every problem as FILE:LINE: message, and `strangler check`."""

import dataclasses
import subprocess
import sys

import pytest

from proxy.config import load, parse, yamlsource
from proxy.model import (Address, AdminSpec, CompareSpec, Match, ParallelRun, Serve, Side, Stickiness, ToggleSpec,
                         TogglesSpec, UnleashSpec, Upstream)
from proxy.model.errors import ConfigError
from tests.helpers import REPO

CONTRACT_EXAMPLE = """\
version: 1
listen: "127.0.0.1:8080"           # the edge listener; bind an explicit interface
admin:
  listen: "127.0.0.1:9901"         # health, metrics, reports; never on the edge port
  token_env: STRANGLER_ADMIN_TOKEN # optional: when that variable is set, admin needs "Authorization: Bearer <token>"
upstreams:
  monolith:
    url: "http://127.0.0.1:9001"
    connect_timeout: 1.0           # seconds, includes waiting for a pooled connection
    timeout: 30.0                  # seconds for the whole exchange
    max_connections: 100           # this upstream's own pool (a bulkhead)
  orders:
    url: "http://127.0.0.1:9002"
toggles:
  provider: local                  # local: rollouts below, no server needed; unleash: a real Unleash server
  unleash:
    url: "http://127.0.0.1:4242/api"
    app_name: strangler
    environment: development
    token_env: UNLEASH_API_TOKEN
    refresh_interval: 5
reports:
  database: var/divergence.db      # SQLite, created on first use
routes:                            # first match wins, in file order
  - name: orders
    match:
      path: /api/orders            # segment prefix: /api/orders and /api/orders/7, not /api/ordersX
      methods: [GET, POST]         # optional; default any
      headers: {X-Beta: "1"}       # optional; exact values
    legacy: monolith
    new: orders
    serve: toggle                  # legacy | new | toggle
    toggle:
      name: orders-to-new          # the Unleash feature name
      rollout: 25                  # percent, used by the local provider
      stickiness: header:X-User-Id # header:NAME | cookie:NAME | ip | random
    fallback: legacy               # optional: when the new service fails (connect error, 5xx, open breaker), answer from legacy
    parallel_run:
      enabled: true
      sample: 1.0                  # fraction of eligible requests that are also sent to the other side
      methods: [GET, HEAD]         # default: GET and HEAD only; unsafe methods must be named here
    compare:
      ignore_paths: ["$.updated_at", "$.items[*].etag"]
      ignore_order: false
      float_tolerance: 0.0
      headers: [content-type]      # response headers that take part in the comparison
  - name: everything-else
    match: {path: /}
    legacy: monolith
    serve: legacy
"""

BASE = """\
version: 1                                  # line 1
upstreams:                                  # 2
  monolith: {url: "http://127.0.0.1:9001"}  # 3
  orders: {url: "http://127.0.0.1:9002"}    # 4
routes:                                     # 5
  - name: orders                            # 6
    match: {path: /api/orders}              # 7
    legacy: monolith                        # 8
    new: orders                             # 9
"""


def swap(old: str, new: str, text: str = BASE) -> str:
    assert old in text
    return text.replace(old, new, 1)


def spare(url: str) -> str:
    """BASE with an unused third upstream on line 5."""
    return swap("routes:", f'  spare: {{url: "{url}"}}\nroutes:')


def then(name: str, match: str, first: str = "path: /api/orders") -> str:
    """BASE (its route matching `first`) and one more route, lines 10 to 12."""
    return swap("path: /api/orders", first) + f"  - name: {name}\n    match: {{{match}}}\n    legacy: monolith\n"


def problems(text: str | bytes) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse(text if isinstance(text, bytes) else text.encode(), "routes.yaml")
    return [str(p) for p in caught.value.problems]


def errors(text: str | bytes) -> list[str]:
    return [p for p in problems(text) if ": warning: " not in p]


def strangler(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "proxy", *args], capture_output=True, text=True,
                          timeout=60, cwd=REPO)


@pytest.fixture
def example(tmp_path):
    path = tmp_path / "routes.yaml"
    path.write_text(CONTRACT_EXAMPLE)
    return load(path)


def test_contract_example_loads_top_level_and_upstreams(example, tmp_path):
    assert example.listen == Address("127.0.0.1", 8080)
    assert example.admin == AdminSpec(Address("127.0.0.1", 9901), "STRANGLER_ADMIN_TOKEN")
    assert example.toggles == TogglesSpec("local", UnleashSpec(
        "http://127.0.0.1:4242/api", "strangler", "development", "UNLEASH_API_TOKEN", 5,
        str(tmp_path / "var" / "unleash-cache")))
    assert example.reports.database == str(tmp_path / "var" / "divergence.db")
    assert example.warnings == ()
    assert dict(example.upstreams) == {
        "monolith": Upstream("monolith", "http://127.0.0.1:9001", 1.0, 30.0, 100),
        "orders": Upstream("orders", "http://127.0.0.1:9002", 1.0, 30.0, 100)}


def test_contract_example_routes(example):
    orders, rest = example.routes
    assert orders.match == Match("/api/orders", frozenset({"GET", "POST"}), (("x-beta", "1"),))
    assert (orders.legacy.name, orders.new.name, orders.serve, orders.fallback) == (
        "monolith", "orders", Serve.TOGGLE, Side.LEGACY)
    assert orders.toggle == ToggleSpec("orders-to-new", 25.0, Stickiness("header", "X-User-Id"))
    assert orders.parallel_run == ParallelRun(True, 1.0, frozenset({"GET", "HEAD"}))
    assert orders.compare == CompareSpec(("$.updated_at", "$.items[*].etag"), False, 0.0, ("content-type",))
    assert orders.line == CONTRACT_EXAMPLE.splitlines().index("  - name: orders") + 1
    assert (rest.name, rest.match, rest.new, rest.serve) == ("everything-else", Match("/"), None, Serve.LEGACY)


@pytest.mark.parametrize("part, field", [
    (lambda c: c, "routes"), (lambda c: c.routes[0], "serve"), (lambda c: c.routes[0].toggle, "rollout"),
    (lambda c: c.upstreams["orders"], "url"), (lambda c: c.routes[0].match, "path"),
], ids=["config", "route", "toggle", "upstream", "match"])
def test_config_values_are_frozen(example, part, field):
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(part(example), field, None)


def test_upstreams_mapping_is_read_only(example):
    with pytest.raises(TypeError):
        example.upstreams["orders"] = example.upstreams["monolith"]


@pytest.mark.parametrize("url, normalised", [
    ("http://127.0.0.1:9002/", "http://127.0.0.1:9002"),
    ("http://orders.internal", "http://orders.internal:80"),
    ("https://orders.internal", "https://orders.internal:443"),
    ("http://[::1]:9002", "http://[::1]:9002"),
], ids=["trailing-slash", "http-default-port", "https-default-port", "ipv6"])
def test_upstream_url_is_normalised_to_scheme_host_port(url, normalised):
    config = parse(swap("http://127.0.0.1:9002", url).encode(), "routes.yaml")
    assert config.upstreams["orders"].url == normalised


ROUTE = "route 'orders'"
MATCH = f"{ROUTE}, match"
TOGGLE = "    serve: toggle\n    toggle: {name: t, rollout: %s, stickiness: %s}\n"


@pytest.mark.parametrize("text, expected", [
    pytest.param(swap("new: orders", "new: ordres"),
                 f"routes.yaml:9: {ROUTE}: unknown upstream 'ordres' (known: monolith, orders)", id="unknown-upstream"),
    pytest.param(spare("ftp://127.0.0.1:9003"),
                 "routes.yaml:5: upstream 'spare': url must look like http://HOST:PORT, got 'ftp://127.0.0.1:9003'",
                 id="url-ftp"),
    pytest.param(spare("http://127.0.0.1:9003/api"),
                 "routes.yaml:5: upstream 'spare': url must be an origin with no path or query, "
                 "got 'http://127.0.0.1:9003/api'", id="url-path"),
    pytest.param(spare("http://user:secret@127.0.0.1:9003"),
                 "routes.yaml:5: upstream 'spare': url must not carry credentials; secrets never live in routes.yaml",
                 id="url-credentials"),
    pytest.param(spare("http://169.254.169.254"),
                 "routes.yaml:5: upstream 'spare': url points at a link-local address (169.254.169.254), "
                 "the home of cloud metadata", id="url-link-local"),
    pytest.param(then("orders", "path: /x"),
                 "routes.yaml:10: duplicate route name 'orders' (first at line 6)", id="duplicate-route-name"),
    pytest.param(BASE + "route: []\n",
                 "routes.yaml:10: unknown key 'route' at the top level; did you mean 'routes'?", id="unknown-top-key"),
    pytest.param(swap('9001"}', '9001", timout: 5}'),
                 "routes.yaml:3: unknown key 'timout' in upstream 'monolith'; did you mean 'timeout'?",
                 id="unknown-upstream-key"),
    pytest.param(BASE + "    serv: new\n",
                 f"routes.yaml:10: unknown key 'serv' in {ROUTE}; did you mean 'serve'?", id="unknown-route-key"),
    pytest.param(swap("/api/orders}", "/api/orders, method: [GET]}"),
                 f"routes.yaml:7: unknown key 'method' in {MATCH}; did you mean 'methods'?", id="unknown-match-key"),
    pytest.param(swap("version: 1", "# no version"), "routes.yaml:1: 'version' is required", id="no-version"),
    pytest.param(swap("version: 1", "version: 2"),
                 "routes.yaml:1: 'version' must be 1 (the only format version so far), got a number 2",
                 id="version-2"),
    pytest.param(BASE + "    serve: new: legacy\n",
                 "routes.yaml:10: YAML syntax error: mapping values are not allowed here", id="yaml-syntax"),
    pytest.param(swap("/api/orders}", "/api/orders"),
                 "routes.yaml:8: YAML syntax error: expected ',' or '}', but got '<scalar>' "
                 "(while parsing a flow mapping that starts at line 7)", id="yaml-unclosed-brace"),
    pytest.param(BASE + "    legacy: orders\n",
                 "routes.yaml:10: duplicate key 'legacy' (first at line 8)", id="duplicate-yaml-key"),
    pytest.param(swap("/api/orders}", "/api/orders, methods: [get]}"),
                 f"routes.yaml:7: {MATCH}: method 'get' must be an upper-case HTTP method (methods are case-sensitive)",
                 id="lowercase-method"),
    pytest.param(swap("/api/orders}", "/api/orders, headers: {X-Beta: 1}}"),
                 f'routes.yaml:7: {MATCH}: the value of X-Beta must be a string (quote it: X-Beta: "1")',
                 id="header-value-number"),
    pytest.param(swap("/api/orders}", "/api/orders, headers: {X-Beta: yes}}"),
                 f'routes.yaml:7: {MATCH}: the value of X-Beta must be a string (quote it: X-Beta: "yes")',
                 id="header-value-yes"),
    pytest.param(swap("path: /api/orders", "path: api/orders"),
                 f"routes.yaml:7: {MATCH}: 'path' must start with '/', got 'api/orders'", id="path-no-slash"),
    pytest.param(swap("path: /api/orders", "path: /api/../orders"),
                 f"routes.yaml:7: {MATCH}: 'path' '/api/../orders' must be plain segments: "
                 "no '//', '.', '..', '%', ';', '?' or '#'", id="path-dot-dot"),
    pytest.param(BASE + "    serve: both\n",
                 f"routes.yaml:10: {ROUTE}: 'serve' must be legacy or new or toggle, got 'both'", id="serve-unknown"),
    pytest.param(BASE + "    serve: toggle\n",
                 f"routes.yaml:10: {ROUTE}: serve: toggle needs a 'toggle:' block (name, rollout, stickiness)",
                 id="serve-toggle-without-toggle"),
    pytest.param(swap("new: orders", "serve: new"),
                 f"routes.yaml:9: {ROUTE}: 'new' (the extracted service's upstream) is required with serve: new",
                 id="serve-new-without-new"),
    pytest.param(BASE + TOGGLE % (25, "user"),
                 f"routes.yaml:11: {ROUTE}, toggle: 'stickiness' must be header:NAME, cookie:NAME, ip or random, "
                 "got 'user'", id="bad-stickiness"),
    pytest.param(BASE + TOGGLE % (150, "ip"),
                 f"routes.yaml:11: {ROUTE}, toggle: 'rollout' must be between 0 and 100, got 150", id="rollout-150"),
    pytest.param(BASE + "    parallel_run: {sample: 2}\n",
                 f"routes.yaml:10: {ROUTE}, parallel_run: 'sample' must be between 0 and 1, got 2", id="sample-2"),
    pytest.param(BASE + "    compare: {ignore_paths: [updated_at]}\n",
                 f"routes.yaml:10: {ROUTE}, compare: 'updated_at' is not a body path like $.updated_at, "
                 "$.items[*].etag or $['a.b']", id="bad-ignore-path"),
    pytest.param(swap("127.0.0.1:9002", "127.0.0.1:8080"),
                 "routes.yaml:4: upstream 'orders' points at this proxy's own listener", id="loop-to-listen"),
    pytest.param(swap("127.0.0.1:9002", "localhost:8080"),
                 "routes.yaml:4: upstream 'orders' points at this proxy's own listener", id="loop-via-localhost"),
    pytest.param("listen: '0.0.0.0:8080'\n" + swap("127.0.0.1:9002", "127.0.0.1:8080"),
                 "routes.yaml:5: upstream 'orders' points at this proxy's own listener", id="loop-via-wildcard"),
    pytest.param(BASE.encode() + b"    # caf\xe9\n", "routes.yaml:10: file is not valid UTF-8", id="not-utf8"),
    pytest.param("", "routes.yaml:1: routes.yaml is empty", id="empty"),
    pytest.param("# nothing yet\n", "routes.yaml:1: routes.yaml is empty", id="only-a-comment"),
    pytest.param("- version: 1\n", "routes.yaml:1: the top level must be a mapping, got a list", id="top-level-list"),
    pytest.param(BASE + "x: &loop [*loop]\n",
                 "routes.yaml:10: YAML alias '*loop' stands inside the collection it names (a loop)",
                 id="yaml-alias-loop"),
    pytest.param(swap('monolith: {url', 'monolith: &m {<<: *m, url'),
                 "routes.yaml:3: YAML alias '*m' stands inside the collection it names (a loop)",
                 id="yaml-merge-loop"),
    pytest.param(swap('9001"}', '9001", connect_timeout: 2001-13-14}'),
                 "routes.yaml:3: YAML syntax error: '2001-13-14' is not a valid timestamp (month must be in 1..12)",
                 id="yaml-bad-date"),
    pytest.param(swap('9001"}', '9001", max_connections: !!int 0x}'),
                 "routes.yaml:3: YAML syntax error: '0x' is not a valid int "
                 "(invalid literal for int() with base 16: '')", id="yaml-bad-int"),
    pytest.param(swap("legacy: monolith", "legacy: [monolith]"),
                 f"routes.yaml:8: {ROUTE}: 'legacy' must be a string, got a list", id="side-a-list"),
    pytest.param(BASE + "toggles: {provider: unleash, unleash: {url: 'http://[::1'}}\n",
                 "routes.yaml:10: toggles.unleash: 'url' must be an http(s) URL, got 'http://[::1'",
                 id="unleash-url-unparsable"),
])
def test_invalid_file_reports_file_line_message(text, expected):
    assert errors(text) == [expected]


@pytest.mark.parametrize("text, expected", [
    pytest.param(swap("127.0.0.1:9002", "127.0.0.1:9002/api"),
                 ["routes.yaml:4: upstream 'orders': url must be an origin with no path or query, "
                  "got 'http://127.0.0.1:9002/api'"], id="bad-url-of-a-used-upstream"),
    pytest.param(swap("path: /api/orders", "path: api/orders"),
                 [f"routes.yaml:7: {MATCH}: 'path' must start with '/', got 'api/orders'"], id="bad-path-of-a-route"),
])
def test_one_mistake_gives_one_problem_not_follow_on_noise(text, expected):
    assert problems(text) == expected


def test_every_problem_is_reported_sorted_by_line():
    text = swap("version: 1", "version: 1\nlisten: nowhere", BASE + "    serve: both\n    parallel_run: {sample: 2}\n")
    assert problems(swap("new: orders", "new: ordres", text)) == [
        "routes.yaml:2: 'listen' must be \"HOST:PORT\" (like \"127.0.0.1:8080\"), got 'nowhere'",
        "routes.yaml:5: warning: upstream 'orders' is not used by any route",
        f"routes.yaml:10: {ROUTE}: unknown upstream 'ordres' (known: monolith, orders)",
        f"routes.yaml:11: {ROUTE}: 'serve' must be legacy or new or toggle, got 'both'",
        f"routes.yaml:12: {ROUTE}, parallel_run: 'sample' must be between 0 and 1, got 2",
    ]


@pytest.mark.parametrize("text, expected", [
    pytest.param(then("api", "path: /api", first="path: /"),
                 ["routes.yaml:10: warning: route 'api' is unreachable: route 'orders' (line 6) "
                  "matches every request it would"], id="root-before-api"),
    pytest.param(then("orders-get", "path: /api/orders, methods: [GET]"),
                 ["routes.yaml:10: warning: route 'orders-get' is unreachable: route 'orders' (line 6) "
                  "matches every request it would"], id="same-path-after-any-method"),
    pytest.param(spare("http://127.0.0.1:9003"),
                 ["routes.yaml:5: warning: upstream 'spare' is not used by any route"], id="unused-upstream"),
    pytest.param(then("orders-any", "path: /api/orders", first="path: /api/orders, methods: [POST]"),
                 [], id="earlier-restricted-by-method"),
    pytest.param(then("orders-any", "path: /api/orders", first="path: /api/orders, headers: {X-Beta: '1'}"),
                 [], id="earlier-restricted-by-header"),
    pytest.param(then("orders-x", "path: /api/ordersX"), [], id="sibling-prefix"),
])
def test_warnings_do_not_fail_loading(text, expected):
    assert [str(w) for w in parse(text.encode(), "routes.yaml").warnings] == expected


def test_nodes_written_and_nodes_reached_through_aliases_have_budgets_of_their_own(monkeypatch):
    plain = BASE + "".join(f"  - {{name: r{n}, match: {{path: /r{n}}}, legacy: monolith}}\n" for n in range(20))
    merged = swap("orders: {url", "orders: {<<: *m, url", swap("monolith: {url", "monolith: &m {timeout: 9.0, url"))
    monkeypatch.setattr(yamlsource, "MAX_ALIASED", 50)
    assert len(parse(plain.encode(), "routes.yaml").routes) == 21  # 180 nodes, none through an alias
    assert parse(merged.encode(), "routes.yaml").upstreams["orders"].timeout == 9.0
    monkeypatch.setattr(yamlsource, "MAX_ALIASED", 4)  # *m stands for 5 nodes
    assert errors(merged) == ["routes.yaml:4: YAML aliases expand to more than 4 nodes (an alias bomb?)"]
    monkeypatch.setattr(yamlsource, "MAX_NODES", 50)
    assert errors(plain) == ["routes.yaml:12: YAML holds more than 50 nodes; a routes.yaml needs a few thousand"]


def test_yaml_too_deep_for_the_interpreter_is_one_problem_even_past_the_depth_bound(monkeypatch):
    monkeypatch.setattr(yamlsource, "MAX_DEPTH", 10_000)  # as if the bound were ever set too loose
    assert errors("a: " + "[" * 900 + "]" * 900 + "\n") == ["routes.yaml:1: YAML is nested too deeply"]


@pytest.mark.parametrize("text, status, lines", [
    pytest.param(BASE, 0, ["ok: 1 routes, 2 upstreams"], id="valid"),
    pytest.param(spare("http://127.0.0.1:9003"), 0,
                 ["FILE:5: warning: upstream 'spare' is not used by any route", "ok: 1 routes, 3 upstreams"],
                 id="valid-with-warning"),
    pytest.param(BASE + "    serve: both\n    parallel_run: {sample: 2}\n", 1,
                 [f"FILE:10: {ROUTE}: 'serve' must be legacy or new or toggle, got 'both'",
                  f"FILE:11: {ROUTE}, parallel_run: 'sample' must be between 0 and 1, got 2"], id="invalid"),
])
def test_strangler_check(tmp_path, text, status, lines):
    path = tmp_path / "routes.yaml"
    path.write_text(text)
    done = strangler("check", "--config", str(path))
    assert (done.returncode, done.stdout.splitlines()) == (status, [s.replace("FILE", str(path)) for s in lines])


def test_strangler_check_on_a_missing_file(tmp_path):
    missing = tmp_path / "nowhere.yaml"
    done = strangler("check", "--config", str(missing))
    assert (done.returncode, done.stdout) == (1, f"{missing}: cannot read the file: No such file or directory\n")


def test_shipped_routes_yaml_passes_check_quietly():
    done = strangler("check", "--config", "routes.yaml")
    assert (done.returncode, done.stdout, done.stderr) == (0, "ok: 2 routes, 2 upstreams\n", "")
