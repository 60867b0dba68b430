"""`python -m votive.cli`: the same as the `votive` command."""

import sys

from votive.cli import main

sys.exit(main())
