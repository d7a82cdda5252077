"""strangler-proxy: the edge proxy of a strangler-fig migration."""

__version__ = "0.1.0"
