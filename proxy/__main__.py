"""`python -m proxy` is the `strangler` command."""

from proxy.cli.main import main

raise SystemExit(main())
