"""`python -m bench`: calls cli.main(), nothing else."""

from bench.cli import main

raise SystemExit(main())
