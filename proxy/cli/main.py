"""The `strangler` command: serve, check, explain, report, replay, rollout, store, demo."""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import replace
from typing import Any, Callable, Coroutine

from multidict import CIMultiDict

from proxy import config as config_file
from proxy.app import Options, run_loop, serve, toggles_for
from proxy.cli import accept, replay, report, rollout, store
from proxy.cli.explain import explain
from proxy.config import environment
from proxy.config.environment import checked
from proxy.model import Address, Config
from proxy.model.errors import ConfigError, one_line
from proxy.observe import logs
from reports.db import STORE_ERRORS

EXIT_OK, EXIT_INVALID, EXIT_USAGE, EXIT_NO_MATCH = 0, 1, 2, 3


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logs.setup(args.log_level)
    try:
        return args.run(args)
    except STORE_ERRORS as exc:
        print(f"strangler: the divergence store: {one_line(exc)}", file=sys.stderr)
        return EXIT_INVALID
    except BrokenPipeError:  # `strangler rollout status | head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", default=os.environ.get("STRANGLER_CONFIG", "routes.yaml"),
                        help="routes.yaml to use (default: $STRANGLER_CONFIG or ./routes.yaml)")
    common.add_argument("--log-level", default=os.environ.get("STRANGLER_LOG_LEVEL", "INFO"),
                        choices=logs.LEVELS, type=str.upper, help="least severe log level shown (default INFO)")
    parser = argparse.ArgumentParser(prog="strangler", description=__doc__)
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    serve_cmd = commands.add_parser("serve", parents=[common], help="run the edge proxy and the admin listener")
    serve_cmd.add_argument("--host", help="edge listen address (overrides routes.yaml)")
    serve_cmd.add_argument("--port", type=int, help="edge listen port (overrides routes.yaml)")
    serve_cmd.add_argument("--workers", type=int, default=1,
                           help="proxy processes sharing the edge port (default 1; about one per core)")
    serve_cmd.add_argument("--drain-timeout", type=float, default=30.0,
                           help="seconds in-flight requests get to finish on SIGTERM (default 30)")
    serve_cmd.set_defaults(run=_serve)

    check = commands.add_parser("check", parents=[common], help="validate routes.yaml")
    check.set_defaults(run=_check)

    why = commands.add_parser("explain", parents=[common], help="show which route and side would serve a request")
    why.add_argument("method")
    why.add_argument("path", help="path and query, as a client sends them")
    why.add_argument("-H", "--header", action="append", default=[], metavar="'Name: value'")
    why.add_argument("--client-ip", default="127.0.0.1", help="the client address to assume")
    why.add_argument("--format", choices=("text", "json"), default="text")
    why.set_defaults(run=_explain)

    accept.add_commands(*report.add_commands(commands, common))
    replay.add_commands(commands, common)
    rollout.add_commands(commands, common)
    store.add_commands(commands, common)

    demo = commands.add_parser("demo", parents=[common], help="run the sample monolith and service behind the proxy")
    demo.set_defaults(run=_demo)
    return parser


def _load(args: argparse.Namespace, to_serve: bool = False) -> Config | None:
    """routes.yaml, its problems printed; `to_serve`: the variables it names must be set too."""
    try:
        config = config_file.load(args.config)
        if to_serve:
            checked(config)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return None
    for warning in config.warnings:
        print(warning, file=sys.stderr)
    return config


def _check(args: argparse.Namespace) -> int:
    try:
        config = config_file.load(args.config)
    except ConfigError as exc:
        print("\n".join(str(p) for p in exc.problems))
        return EXIT_INVALID
    for warning in config.warnings:
        print(warning)
    for missing in environment.problems(config):  # here, not where it will run: a warning
        print(replace(missing, message=f"{missing.message} (`strangler serve` would refuse to start)",
                      warning=True))
    print(f"ok: {len(config.routes)} routes, {len(config.upstreams)} upstreams")
    return EXIT_OK


def _explain(args: argparse.Namespace) -> int:
    config = _load(args)
    if config is None:
        return EXIT_INVALID
    headers = CIMultiDict()
    for header in args.header:
        name, sep, value = header.partition(":")
        if not sep or not name.strip():
            print(f"strangler explain: -H wants 'Name: value', got {header!r}", file=sys.stderr)
            return EXIT_USAGE
        headers.add(name.strip(), value.strip())
    toggles = toggles_for(config, None)
    toggles.start()  # with a server: one fetch (falling back on the cached state), then evaluate
    try:
        caps = {} if toggles.shared_rollouts else rollout.plan_caps(config)
        result = explain(config, toggles, args.method.upper(), args.path, headers, args.client_ip, caps)
    finally:
        toggles.close()
    print(json.dumps(result.as_json()) if args.format == "json" else result.as_text())
    return EXIT_OK if result.decision else EXIT_NO_MATCH


def _serve(args: argparse.Namespace) -> int:
    if args.workers < 1:
        print("strangler serve: --workers must be at least 1", file=sys.stderr)
        return EXIT_USAGE
    config = _load(args, to_serve=True)
    if config is None:
        return EXIT_INVALID
    listen = Address(args.host or config.listen.host, args.port if args.port is not None else config.listen.port)
    options = Options(args.config, listen=listen, drain_timeout=args.drain_timeout)
    if args.workers == 1:
        return _run(lambda: serve(options, config))
    from proxy.workers import supervise

    return _run(lambda: supervise(options, config, args.workers, args.log_level))


def _demo(args: argparse.Namespace) -> int:
    from proxy.demo.run import run_demo

    config = _load(args, to_serve=True)
    if config is None:
        return EXIT_INVALID
    return _run(lambda: run_demo(Options(args.config), config))


def _run(start: Callable[[], Coroutine[Any, Any, int]]) -> int:
    """Run until stopped; report start-up failures in one line."""
    try:
        return run_loop(start)
    except ConfigError as exc:
        print("\n".join(str(p) for p in exc.problems), file=sys.stderr)
        return EXIT_INVALID
    except (OSError, RuntimeError) as exc:
        print(f"strangler: {exc}", file=sys.stderr)
        return EXIT_INVALID
