"""`python -m jaxvis.cli ...`: the `jaxvis` command."""

import sys

from jaxvis.cli import main

__all__: list[str] = []

sys.exit(main())
