"""routes.yaml -> Config (proxy.model): one validated, frozen value, or every problem as FILE:LINE: message."""

from proxy.config.file import load, parse

__all__ = ["load", "parse"]
