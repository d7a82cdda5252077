"""routes.yaml's `toggles:`: the local provider, or a real Unleash server, and the rule that one toggle
has one definition."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from proxy.config.fields import ENV_NAME, Reader, Section
from proxy.model import Provider, Route, TogglesSpec, UnleashSpec

UNLEASH_CACHE = "var/unleash-cache"  # the SDK's last known state, kept across restarts


def read_toggles(top: Section) -> TogglesSpec:
    sec = top.section("toggles", {"provider", "unleash"}, "toggles")
    if sec is None:
        return TogglesSpec()
    provider = sec.text("provider", "local")
    if provider not in tuple(Provider):
        sec.error("provider", f"'provider' must be local or unleash, got {provider!r}")
        provider = Provider.LOCAL
    unleash = _unleash(sec)
    if provider == Provider.UNLEASH and unleash is None and not sec.has("unleash"):
        sec.error("provider", "provider unleash needs an 'unleash:' block with at least 'url'")
    return TogglesSpec(Provider(provider), unleash)



def _unleash(parent: Section) -> UnleashSpec | None:
    sec = parent.section("unleash", {"url", "app_name", "environment", "token_env", "refresh_interval",
                                     "cache_directory", "admin_token_env", "project"}, "toggles.unleash")
    if sec is None:
        return None
    url = sec.text("url")
    if isinstance(url, str) and _scheme(url) not in ("http", "https"):
        sec.error("url", f"'url' must be an http(s) URL, got {url!r}")
    token_env, admin_token_env = sec.text("token_env", None), sec.text("admin_token_env", None)
    for key, name in (("token_env", token_env), ("admin_token_env", admin_token_env)):
        if name is not None and not ENV_NAME.match(name):
            sec.error(key, f"'{key}' names an environment variable, got {name!r}")
    cache_directory = sec.text("cache_directory", UNLEASH_CACHE)
    return UnleashSpec(url=url if isinstance(url, str) else "",
                       app_name=sec.text("app_name", "strangler"),
                       environment=sec.text("environment", "development"),
                       token_env=token_env,
                       admin_token_env=admin_token_env,
                       project=sec.text("project", "default"),
                       refresh_interval=sec.integer("refresh_interval", 15, 1, 3600),
                       cache_directory=str(Path(parent.reader.doc.source).parent / cache_directory))


def _scheme(url: str) -> str | None:
    try:
        return urlsplit(url).scheme
    except ValueError:  # "http://[::1" and the like: not a URL at all
        return None


def check_toggles(reader: Reader, routes: tuple[Route, ...], provider: Provider) -> None:
    """Local toggles are defined by their routes, so two routes must not define one differently."""
    first: dict[str, Route] = {}
    for route in routes:
        toggle = route.toggle
        if toggle is None:
            continue
        if provider is Provider.UNLEASH and toggle.rollout is not None:
            reader.at_line(route.line, f"route '{route.name}': 'rollout' is ignored with provider unleash; "
                                       "the rollout is set in Unleash", warning=True)
        earlier = first.setdefault(toggle.name, route)
        if provider is Provider.LOCAL and (earlier.toggle.local_rollout, earlier.toggle.stickiness) != (
                toggle.local_rollout, toggle.stickiness):
            reader.at_line(route.line, f"route '{route.name}' defines toggle '{toggle.name}' differently from "
                                       f"route '{earlier.name}' (line {earlier.line}); one toggle, one definition")
