"""The command line's grammar and what each command imports: `strangler check` reads routes.yaml without
importing the server, its telemetry, the store's drivers or the comparators, and every command's code is
found where its parser names it."""

import argparse
import json
import subprocess
import sys

from proxy.cli.commands import Lazy, parser
from tests.helpers import REPO, route, routes_yaml

HEAVY = ("aiohttp.web_server", "aiohttp.client", "opentelemetry", "prometheus_client", "psycopg", "sqlite_utils",
         "deepdiff", "UnleashClient", "uvloop", "reports", "comparators", "proxy.app", "proxy.wire", "proxy.serve")
LOADED = """
import json, runpy, sys
sys.argv = ["strangler", *sys.argv[1:]]
try:
    runpy.run_module("proxy", run_name="__main__")
except SystemExit as exit:
    print(json.dumps({"status": exit.code, "modules": sorted(sys.modules)}), file=sys.stderr)
"""


def loaded_by(*args: str) -> tuple[int, list[str], str]:
    done = subprocess.run([sys.executable, "-c", LOADED, *args], capture_output=True, text=True, timeout=60,
                          cwd=REPO)
    result = json.loads(done.stderr.splitlines()[-1])
    return result["status"], result["modules"], done.stdout


def test_check_imports_none_of_what_serving_and_the_store_need(tmp_path):
    path = tmp_path / "routes.yaml"
    path.write_text(routes_yaml({"monolith": "http://127.0.0.1:9001"}, [route("all", "/", legacy="monolith")]))
    status, modules, out = loaded_by("check", "--config", str(path))
    assert (status, out) == (0, "ok: 1 routes, 1 upstreams\n")
    assert [m for m in modules if m.startswith(HEAVY)] == []


def test_every_command_names_a_function_that_exists():
    found = []

    def walk(at: argparse.ArgumentParser) -> None:
        run = at.get_default("run")
        if run is not None:
            found.append(run)
        for action in at._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub in action.choices.values():
                    walk(sub)

    walk(parser())
    assert len(found) == 17 and all(isinstance(run, Lazy) for run in found)
    for run in found:
        __import__(run.module)
        assert callable(getattr(sys.modules[run.module], run.function)), run
