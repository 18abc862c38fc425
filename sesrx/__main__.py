"""Allow ``python -m sesrx``."""

from sesrx.cli import main

raise SystemExit(main())
