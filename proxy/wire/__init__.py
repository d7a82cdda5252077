"""HTTP/1.1 on the wire, ours: the edge's server and the upstreams' client over aiohttp's C parser.

The only package that touches aiohttp's internals (docs/architecture.md says why)."""
