"""`python -m proxy` is the `strangler` command."""

from proxy.cli import main

raise SystemExit(main())
