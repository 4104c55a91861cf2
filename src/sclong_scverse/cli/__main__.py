"""``python -m sclong_scverse.cli``: the ``sclong`` command."""

import sys

from . import main

sys.exit(main())
