"""``python -m dashboard [--url ...]``."""

import sys

from dashboard.cli import run_options
from dashboard.options import parse_options

sys.exit(run_options(parse_options(sys.argv[1:])))
