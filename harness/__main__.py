"""`python -m harness` is the `fwbench` command."""
from harness.cli import main

raise SystemExit(main())
