"""The HTML divergence report: one self-contained page (inline CSS and SVG, no script), every value escaped.

Bodies, paths and headers come from upstreams: Jinja2 escapes all of them (autoescape on, no `|safe`). The
charts' SVG comes through the `svg` filter (reports/charts.py), which escapes every text it places.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from reports import charts
from reports.query import Place
from reports.view import Console, Page, page

TEMPLATES = Environment(loader=FileSystemLoader(Path(__file__).with_name("templates")),
                        autoescape=select_autoescape(default=True, default_for_string=True),
                        undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
TEMPLATES.filters["svg"] = charts.draw


def render(databases: list[Place], now: float | None = None, missing_ok: bool = False,
           ignored: Mapping[str, tuple[str, ...]] | None = None, console: Console | None = None,
           since: float | None = None, until: float | None = None) -> str:
    """The report on `databases` read as one; with `missing_ok`, files not created yet show as empty;
    `ignored`: each route's ignore_paths, from routes.yaml; `console`: the admin listener's filters and
    forms (none in a snapshot).

    Raises FileNotFoundError for a missing file otherwise."""
    return render_page(page(databases, now, missing_ok, ignored, console, since, until))


def render_page(report: Page) -> str:
    return TEMPLATES.get_template("report.html").render(page=report)
