"""Serving a request: the edge's handler, forwarding with its resilience, and the configuration in force."""
