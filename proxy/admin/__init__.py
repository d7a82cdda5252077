"""The admin listener: health, readiness, status, metrics and reports on an address of its own."""
