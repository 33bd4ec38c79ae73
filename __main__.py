"""`python -m fwbench` is the `fwbench` command."""
from fwbench.harness.cli import main

raise SystemExit(main())
