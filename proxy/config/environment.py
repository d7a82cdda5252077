"""What routes.yaml names that the process environment must supply, checked at start-up and on every reload.

routes.yaml holds only the names of variables that hold secrets; a named variable that is
unset or empty must stop the proxy, not quietly turn a protection off (an admin listener
with no token would answer anyone).
"""

from __future__ import annotations

import os
from typing import Mapping

from proxy.model import Config, Problem
from proxy.model.errors import ConfigError


def problems(config: Config, environ: Mapping[str, str] = os.environ) -> list[Problem]:
    """What the environment lacks: an admin token or store password variable that is unset or empty."""
    found = []
    name = config.admin.token_env
    if name is not None and not environ.get(name):
        found.append(Problem(config.source, config.admin.line, f"admin.token_env names {name}, which is not set "
                                                               "or is empty; set it to the admin bearer token"))
    name = config.reports.password_env
    if name is not None and not environ.get(name):
        found.append(Problem(config.source, config.reports.line, f"reports.password_env names {name}, which is "
                                                                 "not set or is empty; set it to the store's password"))
    return found


def checked(config: Config) -> Config:
    """`config`, when the environment supplies everything it names; else ConfigError."""
    found = problems(config)
    if found:
        raise ConfigError(found)
    return config
