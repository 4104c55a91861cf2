"""Tag each tutorial's test-plumbing cell (the fast-mode switch) ``hide-cell`` for the docs.

The tutorials' first code cell reads ``SCLONG_TUTORIAL_FAST`` (set by the test suite) and
chooses the run's size. MyST-NB renders a ``hide-cell`` cell collapsed ("Show code cell"), so
the documentation opens with the tutorial itself; Jupyter shows the cell as usual.

Usage (from the repository root)::

    python scripts/tag_tutorial_plumbing.py tutorials/*.ipynb
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

TAG = "hide-cell"
MARKER = "SCLONG_TUTORIAL_FAST"


def tag(path: Path) -> bool:
    """Add the tag to the first code cell of ``path`` that reads ``MARKER``; True if changed."""
    notebook = json.loads(path.read_text())
    for cell in notebook["cells"]:
        if cell["cell_type"] == "code" and MARKER in "".join(cell["source"]):
            tags = cell.setdefault("metadata", {}).setdefault("tags", [])
            if TAG in tags:
                return False
            tags.append(TAG)
            path.write_text(json.dumps(notebook, indent=1, ensure_ascii=False) + "\n")
            return True
    return False


if __name__ == "__main__":
    for name in sys.argv[1:]:
        print(name, "tagged" if tag(Path(name)) else "unchanged")
