"""``python -m sclong_scverse.cli``: the ``sclong`` command."""

import sys

from . import main

if __name__ == "__main__":  # importing this module (docs, tools that walk the package) runs nothing
    sys.exit(main())
