"""A generated routes.yaml the size of a large monolith's migration: prefixes, methods, hosts and headers
mixed, and one last route that the benchmark's requests match.

    python -m benchmarks.routefile COUNT > routes.yaml

Every file of this shape ends the same way: two routes on the last route's own path that do not take its
requests (another method; another header value), then the last route (a path, a method, a host and a
header). So a file of 10 routes and one of 1,000 differ only in how many routes come before those three,
and what a request to the last route costs more in the second is what the other routes cost it.
"""

from __future__ import annotations

import sys

import yaml

LAST_PATH = "/api/v3/catalog/items"
LAST_REQUEST = "/api/v3/catalog/items/42"  # the path the benchmark's requests ask for
LAST_HEADERS = {"Host": "shop.example.com", "X-Tenant": "acme"}  # what the last route asks of them
RESOURCES = ("orders", "customers", "invoices", "catalog", "carts", "payments", "shipping", "search")


def routes_file(count: int, listen: str, admin: str, upstream: str, database: str) -> str:
    """routes.yaml (block-style YAML, as people write it) with `count` routes in front of `upstream`, which
    serves as both the monolith and the new services."""
    routes = [_route(n) for n in range(count - 3)] + [
        {"name": "catalog-items-writes", "match": {"path": LAST_PATH, "methods": ["POST", "PUT"]},
         "legacy": "monolith"},
        {"name": "catalog-items-beta", "match": {"path": LAST_PATH, "headers": {"X-Tenant": "beta"}},
         "legacy": "monolith", "new": "services", "serve": "new"},
        {"name": "catalog-items", "match": {"path": LAST_PATH, "methods": ["GET", "HEAD"],
                                            "host": LAST_HEADERS["Host"],
                                            "headers": {"X-Tenant": LAST_HEADERS["X-Tenant"]}},
         "legacy": "monolith", "new": "services", "serve": "new"},
    ]
    config = {"version": 1, "listen": listen, "admin": {"listen": admin},
              "upstreams": {"monolith": {"url": upstream, "max_connections": 200},
                            "services": {"url": upstream, "max_connections": 200}},
              "reports": {"database": database}, "routes": routes}
    return yaml.safe_dump(config, sort_keys=False, default_flow_style=False)


def _route(n: int) -> dict:
    """The n-th of the routes before the last three: one of five kinds in turn, none taking the last
    route's requests (their paths are elsewhere, or their host or header is another)."""
    resource = f"{RESOURCES[n % len(RESOURCES)]}-{n}"
    version = f"v{n % 3 + 1}"
    route: dict = {"name": f"route-{n}", "legacy": "monolith"}
    kind = n % 5
    if kind == 0:  # a plain prefix, moved to its new service
        route |= {"match": {"path": f"/api/{version}/{resource}"}, "new": "services", "serve": "new"}
    elif kind == 1:  # writes only, still the monolith's
        route |= {"match": {"path": f"/api/{version}/{resource}", "methods": ["POST", "PUT", "DELETE"]}}
    elif kind == 2:  # another host's pages
        route |= {"match": {"path": f"/{resource}", "host": f"*.shop-{n}.example.com"}}
    elif kind == 3:  # one tenant on the new service first, under a shared prefix
        route |= {"match": {"path": f"/api/{version}/catalog/{resource}", "headers": {"X-Tenant": f"t{n}"}},
                  "new": "services", "serve": "new"}
    else:  # an old page, reads only
        route |= {"match": {"path": f"/pages/{resource}.php", "methods": ["GET"]}}
    return route


if __name__ == "__main__":
    print(routes_file(int(sys.argv[1]), "127.0.0.1:8080", "127.0.0.1:9901", "http://127.0.0.1:9001",
                      "strangler.db"), end="")
