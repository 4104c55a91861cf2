"""Optional dependencies (installed with an extra): imported where needed, with an install line."""

from __future__ import annotations

import importlib
from types import ModuleType


def import_optional(*names: str, message: str) -> ModuleType:
    """Import optional modules, or raise one :class:`ImportError` that says how to install them.

    Parameters
    ----------
    *names
        The modules needed (e.g. a package and the submodules used).
    message
        What needs them and the ``pip install`` line that provides them.

    Returns
    -------
    The first module of ``names``.

    Raises
    ------
    ImportError
        ``message``, with the original failure chained.
    """
    try:
        modules = [importlib.import_module(name) for name in names]
    except ImportError as error:  # pragma: no cover - exercised only without the extra
        raise ImportError(message) from error
    return modules[0]
