"""`python -m gateway` is the same as the `edge-gateway` console script."""

import sys

from gateway.cli.main import main

sys.exit(main())
