"""``python -m gateway``: same entry point as the ``gateway`` console script."""

import sys

from gateway.cli import main

sys.exit(main())
