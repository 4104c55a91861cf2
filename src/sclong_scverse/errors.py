"""The package's errors: one vocabulary for everything a user can get wrong.

Every public function of :mod:`sclong_scverse` reports a problem with the user's data, files or
arguments as a :class:`ScLongError`, in one line that names the file or argument and says what
to do. Each error also subclasses the built-in exception an ``except`` clause written before
this vocabulary would expect, so such clauses keep working:

=============================  ======================  =========================================
error                          also a                  raised when
=============================  ======================  =========================================
:class:`ScLongInputError`      :class:`ValueError`     data or an argument cannot be used as it is
:class:`ScLongKeyError`        :class:`KeyError`       a key, column or name the call needs is
                               (and ValueError)        missing
:class:`ScLongTypeError`       :class:`TypeError`      an argument of the wrong type
                               (and ValueError)
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
import csv
import os
import pickle
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path

__all__ = [
    "DatasetDownloadError",
    "ModelIntegrityError",
    "OfficialFormatError",
    "ScLongError",
    "ScLongFileError",
    "ScLongFileNotFound",
    "ScLongInputError",
    "ScLongKeyError",
    "ScLongTypeError",
    "UnsafeFileError",
    "reading",
]


class ScLongError(Exception):
    """The base of every error this package raises about the user's data, files or arguments."""


class ScLongInputError(ScLongError, ValueError):
    """The data handed to scLong cannot be used as it is; the message says what to do."""


class ScLongKeyError(ScLongInputError, KeyError):
    """A key, column or name the call needs is not there (also a :class:`KeyError`)."""

    def __str__(self) -> str:  # the message itself, not KeyError's quoted repr
        return str(self.args[0]) if len(self.args) == 1 else super().__str__()


class ScLongTypeError(ScLongInputError, TypeError):
    """An argument of the wrong type (e.g. a number where a path is needed); says what to give.

    Also a :class:`TypeError`, which is what such an argument raised before it was checked.
    """


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


# What reading a damaged file raises from the standard library, numpy, pandas, h5py, zarr and
# torch: every one is (a subclass of) these. Errors of this package pass through (on one line).
_CONTENT_ERRORS: tuple[type[BaseException], ...] = (
    ValueError,  # UnicodeDecodeError, pandas' EmptyDataError / ParserError, numpy, json
    KeyError,
    IndexError,
    TypeError,
    AttributeError,
    EOFError,
    OSError,  # h5py's "file signature not found", gzip's BadGzipFile, truncated reads
    RuntimeError,  # h5py's "bad symbol table node", torch's zip reader
    RecursionError,
    OverflowError,
    MemoryError,
    zlib.error,  # inside gzip and zip files ("invalid distance too far back")
    zipfile.BadZipFile,
    pickle.UnpicklingError,
    csv.Error,
)


def _reason(exc: BaseException) -> str:
    """An error as one line: its type and its text (at most 200 characters)."""
    text = " ".join(str(exc).split())
    text = text if len(text) <= 200 else text[:197] + "..."
    if isinstance(exc, UnicodeDecodeError):
        text = "it is not text (not UTF-8)"
    elif isinstance(exc, KeyError):
        text = f"missing entry {text}"
    name = type(exc).__name__
    return f"{name}: {text}" if text else name


def _names(message: str, path: Path) -> bool:
    return str(path) in message or (bool(path.name) and path.name in message)


@contextlib.contextmanager
def reading(
    path: str | os.PathLike,
    what: str,
    hint: str = "",
    also: tuple[type[BaseException], ...] = (),
    error: type[ScLongFileError] = ScLongFileError,
) -> Iterator[None]:
    """Report any failure to read ``path`` as one line of this package that names the file.

    A missing path becomes :class:`ScLongFileNotFound`; a folder where a file is expected, a
    file that is not text, an empty or truncated file and any parsing error become
    :class:`ScLongFileError` with the original error chained (``raise ... from``). An error of
    this package raised inside keeps its type; its message is put on one line and, when it
    does not name the file, starts with the file.

    Parameters
    ----------
    path
        The file or folder being read.
    what
        What it should be, e.g. ``"GMT file"`` or ``"saved model folder"``.
    hint
        What the user can do (the format, where such files come from), appended to the
        messages of the errors converted here.
    also
        More error types that mean a damaged file here (e.g. ``(Exception,)`` around a call
        into a parsing library with errors of its own).
    error
        The error raised for a damaged file (default :class:`ScLongFileError`; e.g.
        :class:`OfficialFormatError` for the official release files).
    """
    path = Path(path)
    suffix = f"; {hint}" if hint else ""
    try:
        yield
    except ScLongError as exc:
        message = " ".join(str(exc).split())
        if not _names(message, path):
            message = f"{what} {path}: {message}"
        if message != str(exc):
            exc.args = (message,)
        raise
    except FileNotFoundError as exc:
        raise ScLongFileNotFound(f"{what} not found: {path}{suffix}") from exc
    except IsADirectoryError as exc:
        raise ScLongFileError(f"{what} {path} is a folder; give the file itself") from exc
    except _CONTENT_ERRORS + tuple(also) as exc:
        raise error(f"cannot read {what} {path}: {_reason(exc)}{suffix}") from exc
