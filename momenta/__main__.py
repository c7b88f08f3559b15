"""``python -m momenta`` is the ``momenta`` command."""

import sys

from momenta.cli import main

sys.exit(main())
