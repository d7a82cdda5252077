"""The `strangler` command, one module per command group."""
