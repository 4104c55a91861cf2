"""Package-wide settings (``sclong_scverse.settings``), as scanpy's ``sc.settings``.

Standard library only: ``import sclong_scverse`` stays light.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass

#: The loggers whose information lines training silences (warnings and errors still show).
LIBRARY_LOGGERS = ("scvi", "lightning", "lightning.pytorch", "lightning.fabric")


@dataclass
class ScLongSettings:
    """Settings of the whole package; change them on ``sclong_scverse.settings``.

    Attributes
    ----------
    library_info
        Show what scvi-tools and Lightning print while a model trains: their information
        lines ("GPU available: False, used: False", "TPU available ...", third-party tips such
        as "Tip: ... try installing litlogger"), scvi-tools' "File ... already downloaded", and
        Lightning's validation progress bar under the step bar. Off by default, as the
        ``sclong`` command line: the package shows its own progress bar (steps or epochs, with
        cells/s) and every warning and error. Turn it on to debug a training set-up
        (``scl.settings.library_info = True``).
    """

    library_info: bool = False


#: The package's settings (``sclong_scverse.settings``).
settings = ScLongSettings()


@contextlib.contextmanager
def quiet_libraries(quiet: bool | None = None) -> Iterator[None]:
    """Silence the information lines of scvi-tools and Lightning while the block runs.

    Parameters
    ----------
    quiet
        ``None``: quiet unless ``settings.library_info`` is on; ``True``: always quiet (the
        command line); ``False``: leave the libraries' logging as it is.

    Notes
    -----
    Lightning and scvi-tools are imported first: importing Lightning sets its loggers to
    INFO, which would undo a level set before. The former levels are restored afterwards.
    """
    if quiet is None:
        quiet = not settings.library_info
    if not quiet:
        yield
        return
    import lightning.pytorch  # noqa: F401
    import scvi  # noqa: F401

    loggers = [logging.getLogger(name) for name in LIBRARY_LOGGERS]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)
