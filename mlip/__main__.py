"""``python -m mlip`` runs the command line."""

import sys

from mlip.cli import main

sys.exit(main())
