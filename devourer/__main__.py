"""`python -m devourer` is the same as the `devourer` command."""

from devourer.cli import main

raise SystemExit(main())
