"""The package's errors: one vocabulary for everything a user can get wrong.

Every public function of :mod:`sclong_scverse` reports a problem with the user's data, files or
arguments as a :class:`ScLongError`, in one line that names the file or argument and says what
to do. Each error also subclasses the built-in exception an ``except`` clause written before
this vocabulary would expect, so such clauses keep working:

=============================  ======================  =========================================
error                          also a                  raised when
=============================  ======================  =========================================
:class:`ScLongInputError`      :class:`ValueError`     data or an argument cannot be used as it is
:class:`ScLongFileError`       :class:`ValueError`     a file or folder exists but does not hold
                                                       what it should (truncated, corrupted,
                                                       binary, empty, another format)
:class:`ScLongFileNotFound`    :class:`FileNotFoundError`  a file or folder is missing
:class:`UnsafeFileError`       :class:`ValueError`     a file asks to run code while loading
:class:`OfficialFormatError`   :class:`ValueError`     an official release file has unexpected
                                                       content
:class:`ModelIntegrityError`   :class:`ValueError`     a saved model's files do not match their
                                                       manifest or hold non-finite weights
:class:`DatasetDownloadError`  :class:`OSError`        a public data file could not be
                                                       downloaded or failed its checksum
=============================  ======================  =========================================

The command line turns every one of them into one line on stderr and exit code 2.

This module imports nothing from the package: every other module may import it.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

__all__ = [
    "DatasetDownloadError",
    "ModelIntegrityError",
    "OfficialFormatError",
    "ScLongError",
    "ScLongFileError",
    "ScLongFileNotFound",
    "ScLongInputError",
    "UnsafeFileError",
    "reading",
]


class ScLongError(Exception):
    """The base of every error this package raises about the user's data, files or arguments."""


class ScLongInputError(ScLongError, ValueError):
    """The data handed to scLong cannot be used as it is; the message says what to do."""


class ScLongFileError(ScLongError, ValueError):
    """A file or folder exists but does not hold what it should; the message names it."""


class ScLongFileNotFound(ScLongError, FileNotFoundError):
    """A file or folder the call needs does not exist; the message names it."""


class UnsafeFileError(ScLongFileError):
    """A file asks to run code (or build objects) that this package does not allow while loading."""


class OfficialFormatError(ScLongFileError):
    """An official scLong file does not have the expected content."""


class ModelIntegrityError(ScLongFileError):
    """A saved model's files do not match their manifest, or hold non-finite weights."""


class DatasetDownloadError(ScLongError, OSError):
    """A public data file could not be downloaded or did not match its published checksum."""


# What reading a damaged file raises from the standard library, numpy, pandas, h5py and zarr:
# every one is (a subclass of) these. Errors of this package pass through unchanged.
_CONTENT_ERRORS: tuple[type[BaseException], ...] = (
    ValueError,  # UnicodeDecodeError, pandas' EmptyDataError / ParserError, numpy, json
    KeyError,
    IndexError,
    TypeError,
    AttributeError,
    EOFError,
    OSError,  # h5py's "file signature not found", gzip's BadGzipFile, truncated reads
    RecursionError,
    OverflowError,
    MemoryError,
)


def _reason(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    if isinstance(exc, UnicodeDecodeError):
        text = "it is not text (not UTF-8)"
    elif isinstance(exc, KeyError):
        text = f"missing entry {text}"
    name = type(exc).__name__
    return f"{name}: {text}" if text else name


@contextlib.contextmanager
def reading(path: str | os.PathLike, what: str, hint: str = "") -> Iterator[None]:
    """Report any failure to read ``path`` as one :class:`ScLongFileError` naming the file.

    Parameters
    ----------
    path
        The file or folder being read.
    what
        What it should be, e.g. ``"GMT file"`` or ``"saved model folder"``.
    hint
        What the user can do, appended to the message (e.g. where such files come from).

    A missing path becomes :class:`ScLongFileNotFound`; a folder where a file is expected, a
    file that is not text, an empty or truncated file and any parsing error become
    :class:`ScLongFileError` with the original error chained (``raise ... from``). Errors of
    this package pass through unchanged.
    """
    try:
        yield
    except ScLongError:
        raise
    except FileNotFoundError as exc:
        raise ScLongFileNotFound(
            f"{what} not found: {path}" + (f"; {hint}" if hint else "")
        ) from exc
    except IsADirectoryError as exc:
        raise ScLongFileError(f"{what} {path} is a folder; give the file itself") from exc
    except _CONTENT_ERRORS as exc:
        message = f"cannot read {what} {path}: {_reason(exc)}"
        raise ScLongFileError(message + (f"; {hint}" if hint else "")) from exc
