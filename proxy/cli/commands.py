"""The `strangler` command line: every command with its arguments and help, each command's code named by
module and imported only when that command runs.

So `strangler check` reads routes.yaml without importing what other commands need: the
server and its telemetry, the store's drivers, the comparators, the report's pages.
"""

from __future__ import annotations

import argparse
import importlib
import os
from dataclasses import dataclass
from typing import Any

from proxy.model.exchange import MIN_PREFIX
from proxy.observe.logs import LEVELS

DESCRIPTION = "The `strangler` command: serve, check, explain, report, replay, rollout, store, demo."


@dataclass(frozen=True, slots=True)
class Lazy:
    """A command's code: `function` of `module`, imported when the command runs."""

    module: str
    function: str

    def __call__(self, args: argparse.Namespace) -> int:
        return getattr(importlib.import_module(self.module), self.function)(args)


def parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", default=os.environ.get("STRANGLER_CONFIG", "routes.yaml"),
                        help="routes.yaml to use (default: $STRANGLER_CONFIG or ./routes.yaml)")
    common.add_argument("--log-level", default=os.environ.get("STRANGLER_LOG_LEVEL", "INFO"),
                        choices=LEVELS, type=str.upper, help="least severe log level shown (default INFO)")
    top = argparse.ArgumentParser(prog="strangler", description=DESCRIPTION)
    commands = top.add_subparsers(required=True, metavar="COMMAND")
    _edge_commands(commands, common)
    _accept_commands(*_report_commands(commands, common))
    _replay_commands(commands, common)
    _rollout_commands(commands, common)
    _store_commands(commands, common)
    demo = commands.add_parser("demo", parents=[common], help="run the sample monolith and service behind the proxy")
    demo.set_defaults(run=Lazy("proxy.cli.main", "demo"))
    return top


def _edge_commands(commands: Any, common: argparse.ArgumentParser) -> None:
    serve = commands.add_parser("serve", parents=[common], help="run the edge proxy and the admin listener")
    serve.add_argument("--host", help="edge listen address (overrides routes.yaml)")
    serve.add_argument("--port", type=int, help="edge listen port (overrides routes.yaml)")
    serve.add_argument("--workers", type=int, default=1,
                       help="proxy processes sharing the edge port (default 1; about one per core)")
    serve.add_argument("--drain-timeout", type=float, default=30.0,
                       help="seconds in-flight requests get to finish on SIGTERM (default 30)")
    serve.set_defaults(run=Lazy("proxy.cli.main", "serve"))

    check = commands.add_parser("check", parents=[common], help="validate routes.yaml")
    check.set_defaults(run=Lazy("proxy.cli.main", "check"))

    why = commands.add_parser("explain", parents=[common], help="show which route and side would serve a request")
    why.add_argument("method")
    why.add_argument("path", help="path and query, as a client sends them")
    why.add_argument("-H", "--header", action="append", default=[], metavar="'Name: value'")
    why.add_argument("--client-ip", default="127.0.0.1", help="the client address to assume")
    why.add_argument("--format", choices=("text", "json"), default="text")
    why.set_defaults(run=Lazy("proxy.cli.main", "explain"))


def _report_commands(commands: Any, common: argparse.ArgumentParser) -> tuple[Any, argparse.ArgumentParser]:
    """The report commands; returns the subcommands and the --db parser, for accept's to join."""
    report = commands.add_parser("report", help="read the parallel run's divergence database(s)")
    which = report.add_subparsers(required=True, metavar="REPORT")
    dbs = argparse.ArgumentParser(add_help=False, parents=[common])
    dbs.add_argument("--db", action="append", default=[], metavar="PATH|URL",
                     help="a divergence store: a SQLite file or a postgresql:// URL; repeat to read several "
                          "as one (default: reports.database of routes.yaml)")
    summary = which.add_parser("summary", parents=[dbs], help="per-route comparison and divergence statistics")
    summary.add_argument("--route")
    summary.add_argument("--format", choices=("text", "json"), default="text")
    summary.add_argument("--by", choices=("route", "endpoint"), default="route",
                         help="a line per route (default), or per endpoint template of each route")
    summary.set_defaults(run=Lazy("proxy.cli.report", "summary"))
    show = which.add_parser("show", parents=[dbs], help="one recorded divergence, or a signature's latest example")
    show.add_argument("id", metavar="ID|SIGNATURE", help="a divergence id or a signature, or a unique prefix of "
                                                         f"at least {MIN_PREFIX} characters of either")
    show.add_argument("--format", choices=("text", "json"), default="text")
    show.set_defaults(run=Lazy("proxy.cli.report", "show"))
    listing = which.add_parser("examples", parents=[dbs], help="a signature's kept examples, with their ids")
    listing.add_argument("signature", help=f"a signature, or a unique prefix of at least {MIN_PREFIX} "
                                           "characters")
    listing.add_argument("--format", choices=("text", "json"), default="text")
    listing.set_defaults(run=Lazy("proxy.cli.report", "examples"))
    page = which.add_parser("html", parents=[dbs], help="a self-contained HTML report")
    page.add_argument("--out", metavar="FILE", help="write the page to FILE (default: standard output)")
    page.set_defaults(run=Lazy("proxy.cli.report", "html_page"))
    return which, dbs


def _accept_commands(which: Any, dbs: argparse.ArgumentParser) -> None:
    accept = which.add_parser("accept", parents=[dbs], help="mark a signature as an intended difference")
    accept.add_argument("signature", help=f"a signature, or a unique prefix of at least {MIN_PREFIX} characters")
    accept.add_argument("--reason", required=True, help="why the difference is intended (shown in the reports)")
    accept.add_argument("--expires", metavar="DATE", help="YYYY-MM-DD (through that day, UTC) or an ISO datetime "
                                                          "(default: until withdrawn)")
    accept.set_defaults(run=Lazy("proxy.cli.accept", "accept"))
    unaccept = which.add_parser("unaccept", parents=[dbs], help="withdraw the acceptance of a signature")
    unaccept.add_argument("signature", help=f"a signature, or a unique prefix of at least {MIN_PREFIX} characters")
    unaccept.add_argument("--reason", default="", help="why it is withdrawn (shown in the route's timeline)")
    unaccept.set_defaults(run=Lazy("proxy.cli.accept", "unaccept"))
    for command in (accept, unaccept):
        command.add_argument("--by", metavar="NAME", default=None, help="who acts, for the record (default: the OS "
                                                                        "user), as the console's 'by' field")


def _replay_commands(commands: Any, common: argparse.ArgumentParser) -> None:
    cmd = commands.add_parser("replay", parents=[common],
                              help="send a route's stored divergences again to both sides: do they match now?")
    cmd.add_argument("--route", required=True, metavar="NAME", help="the route whose divergences to replay")
    cmd.add_argument("--since", metavar="TIME", help="only divergences recorded at or after TIME: an ISO date or "
                                                     "datetime (UTC unless it says), or an age: 30m, 2h, 1d")
    cmd.add_argument("--limit", type=int, metavar="N", help="at most N requests, the newest")
    cmd.add_argument("--concurrency", type=int, default=8, metavar="N", help="requests at once (default 8)")
    cmd.add_argument("--format", choices=("text", "json"), default="text")
    cmd.add_argument("--db", action="append", default=[], metavar="PATH|URL",
                     help="a divergence store (SQLite file or postgresql:// URL); repeat for several "
                          "(default: reports.database)")
    cmd.set_defaults(run=Lazy("proxy.cli.replay", "run"))


def _rollout_commands(commands: Any, common: argparse.ArgumentParser) -> None:
    rollout = commands.add_parser("rollout", help="see and steer the routes' rollout plans")
    which = rollout.add_subparsers(required=True, metavar="ACTION")
    status = which.add_parser("status", parents=[common], help="each plan: step, evidence, gates, what comes next")
    status.add_argument("route", nargs="?")
    status.add_argument("--format", choices=("text", "json"), default="text")
    status.set_defaults(run=Lazy("proxy.cli.rollout", "status"))
    for name, text in (("advance", "move up one step now, whatever the gates say"),
                       ("hold", "stop advancing (rollback gates still watch)"),
                       ("resume", "advance on evidence again, gathered afresh"),
                       ("rollback", "move back one step (or --to legacy) and hold")):
        action = which.add_parser(name, parents=[common], help=text)
        action.add_argument("route")
        action.add_argument("--reason", default="", help="why, for the plan's timeline")
        action.add_argument("--by", metavar="NAME", default=None,
                            help="who moves it, for the timeline (default: the OS user), as the console's 'by'")
        if name == "rollback":
            action.add_argument("--to", choices=("previous", "legacy"), default="previous")
        action.set_defaults(run=Lazy("proxy.cli.rollout", name))


def _store_commands(commands: Any, common: argparse.ArgumentParser) -> None:
    store = commands.add_parser("store", help="the divergence store itself")
    which = store.add_subparsers(required=True, metavar="ACTION")
    copy = which.add_parser("copy", parents=[common], help="copy a SQLite store into the configured store (again: "
                                                           "only what is not there yet)")
    copy.add_argument("--from", dest="source", required=True, metavar="PATH", help="the SQLite file to copy")
    copy.add_argument("--to", metavar="URL", help="the store to copy into (default: reports.database)")
    copy.set_defaults(run=Lazy("proxy.cli.store", "copy"))
