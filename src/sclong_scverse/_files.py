"""What every reader of files does first: check the path it was given, and speak for the file.

The readers of this package (GO annotations, official release files, L1000 / DeepCE / DeepDDS /
DeepCDR tables, GEARS and scPerturb h5ad files) check their path argument with
:func:`as_path`, :func:`existing_file` or :func:`existing_folder`, and read inside
:func:`~sclong_scverse.errors.reading` (re-exported here), so that whatever a damaged,
truncated, empty or foreign file makes the parsing libraries raise reaches the user as one
:class:`~sclong_scverse.errors.ScLongError` line that names the file and says what to give
instead.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .errors import ScLongFileError, ScLongFileNotFound, ScLongTypeError, reading

__all__ = [
    "PathTypeError",
    "as_path",
    "existing_file",
    "existing_folder",
    "reading",
    "reading_file",
    "shown",
]

#: The error of a path argument that is not a path (an ``int``, ``None``, a list ...).
PathTypeError = ScLongTypeError

PathLike = str | os.PathLike


def shown(value: Any) -> str:
    """``repr(value)`` on one line, at most 60 characters (for messages)."""
    text = " ".join(repr(value).split())
    return text if len(text) <= 60 else text[:57] + "..."


def as_path(value: Any, what: str) -> Path:
    """``value`` as a :class:`~pathlib.Path`, or one line saying that it is not a path.

    Parameters
    ----------
    value
        The argument given.
    what
        What it should be the path of, e.g. ``"GMT file"``.

    Returns
    -------
    The path.

    Raises
    ------
    PathTypeError
        ``value`` is neither a ``str`` nor an :class:`os.PathLike`.
    """
    if isinstance(value, str | os.PathLike):
        return Path(value)
    raise PathTypeError(
        f"the {what} must be given as a path (str or pathlib.Path), not "
        f"{type(value).__name__} {shown(value)}; pass the path of the {what}."
    )


def existing_file(value: Any, what: str, hint: str = "") -> Path:
    """The path of an existing file (not a folder), or one line saying what is wrong.

    Parameters
    ----------
    value, what
        As for :func:`as_path`.
    hint
        Where such files come from, appended to the message of a missing file.

    Returns
    -------
    The path of the existing file.

    Raises
    ------
    PathTypeError
        ``value`` is not a path.
    ScLongFileNotFound
        Nothing exists at the path.
    ScLongFileError
        The path is a folder.
    """
    return _existing(value, what, hint, folder=False)


@contextlib.contextmanager
def reading_file(value: Any, what: str, hint: str = "") -> Iterator[Path]:
    """:func:`existing_file`, then read the file inside :func:`reading` (``with ... as path``).

    Parameters
    ----------
    value, what, hint
        As for :func:`existing_file`.

    Yields
    ------
    The path of the existing file.
    """
    path = existing_file(value, what, hint)
    with reading(path, what, hint):
        yield path


def existing_folder(value: Any, what: str, hint: str = "") -> Path:
    """The path of an existing folder: :func:`existing_file` for folders (a file is refused)."""
    return _existing(value, what, hint, folder=True)


def _existing(value: Any, what: str, hint: str, folder: bool) -> Path:
    path = as_path(value, what)
    if not path.exists():
        raise ScLongFileNotFound(f"{what} not found: {path}" + (f"; {hint}" if hint else "."))
    if path.is_dir() != folder:
        instead = "the folder that holds it" if folder else "the file itself"
        given = "file" if folder else "folder"
        raise ScLongFileError(f"the {what} {path} is a {given}; give {instead}.")
    return path
