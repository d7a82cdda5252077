"""The `strangler` command: its entry point, and the commands that read routes.yaml (serve, check, explain,
demo). Each imports what it needs when it runs (proxy.cli.commands says why).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import replace
from typing import Any, Callable, Coroutine

from proxy import config as config_file
from proxy.cli.commands import parser
from proxy.config import environment
from proxy.config.environment import checked
from proxy.model import Address, Config
from proxy.model.errors import ConfigError, one_line
from proxy.observe import logs

EXIT_OK, EXIT_INVALID, EXIT_USAGE, EXIT_NO_MATCH = 0, 1, 2, 3


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logs.setup(args.log_level)
    try:
        return args.run(args)
    except BrokenPipeError:  # `strangler rollout status | head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except Exception as exc:
        if not _from_the_store(exc):
            raise
        print(f"strangler: the divergence store: {one_line(exc)}", file=sys.stderr)
        return EXIT_INVALID


def _from_the_store(exc: Exception) -> bool:
    """Whether `exc` is the divergence store's: only a command that imported the store (and its drivers)
    can have met one, so a command that did not (check) never imports them to ask."""
    db = sys.modules.get("reports.db")
    return db is not None and isinstance(exc, db.STORE_ERRORS)


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


def check(args: argparse.Namespace) -> int:
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


def explain(args: argparse.Namespace) -> int:
    from multidict import CIMultiDict

    from proxy import app
    from proxy.cli import rollout
    from proxy.cli.explain import explain as explained

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
    toggles = app.toggles_for(config, None)
    toggles.start()  # with a server: one fetch (falling back on the cached state), then evaluate
    try:
        caps = {} if toggles.shared_rollouts else rollout.plan_caps(config)
        result = explained(config, toggles, args.method.upper(), args.path, headers, args.client_ip, caps)
    finally:
        toggles.close()
    print(json.dumps(result.as_json()) if args.format == "json" else result.as_text())
    return EXIT_OK if result.decision else EXIT_NO_MATCH


def serve(args: argparse.Namespace) -> int:
    from proxy import app

    if args.workers < 1:
        print("strangler serve: --workers must be at least 1", file=sys.stderr)
        return EXIT_USAGE
    config = _load(args, to_serve=True)
    if config is None:
        return EXIT_INVALID
    listen = Address(args.host or config.listen.host, args.port if args.port is not None else config.listen.port)
    options = app.Options(args.config, listen=listen, drain_timeout=args.drain_timeout)
    if args.workers == 1:
        return _run(lambda: app.serve(options, config))
    from proxy.workers import supervise

    return _run(lambda: supervise(options, config, args.workers, args.log_level))


def demo(args: argparse.Namespace) -> int:
    from proxy import app
    from proxy.demo.run import run_demo

    config = _load(args, to_serve=True)
    if config is None:
        return EXIT_INVALID
    return _run(lambda: run_demo(app.Options(args.config), config))


def _run(start: Callable[[], Coroutine[Any, Any, int]]) -> int:
    """Run until stopped; report start-up failures in one line."""
    from proxy import app

    try:
        return app.run_loop(start)
    except ConfigError as exc:
        print("\n".join(str(p) for p in exc.problems), file=sys.stderr)
        return EXIT_INVALID
    except (OSError, RuntimeError) as exc:
        print(f"strangler: {exc}", file=sys.stderr)
        return EXIT_INVALID
