"""Interruptions and staged outputs of the ``sclong`` command line.

SIGTERM / SIGINT become :class:`Interrupted` while a command runs; outputs are written under
temporary names beside their destinations and renamed into place only when the command succeeds.
Standard library only (the command line answers ``--help`` without torch).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import threading
from collections.abc import Iterator
from pathlib import Path


class Interrupted(BaseException):
    """Raised by the command line's SIGTERM / SIGINT handler.

    A :class:`BaseException`, so that no ``except Exception`` on the way swallows it, and not a
    :class:`KeyboardInterrupt`, which Lightning's ``Trainer.fit`` turns into ``sys.exit(1)``.
    Lightning tears the trainer down on any other ``BaseException`` and raises it again.

    Parameters
    ----------
    signum
        The signal received.
    """

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum

    @property
    def signal_name(self) -> str:
        """``"SIGTERM"``, ``"SIGINT"``, ..."""
        return signal.Signals(self.signum).name


# outputs renamed into place by the running command (for the interruption message)
_written: list[Path] = []


# ---------------------------------------------------------------------- signals
class _SignalState:
    """What the command line's signal handler has seen (one command at a time)."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Forget earlier signals (a new command starts)."""
        self.received: int | None = None  # the signal being handled
        self.pending: int | None = None  # a signal held back by _signals_deferred
        self.deferring = 0


_signals = _SignalState()


def _on_signal(signum: int, frame: object) -> None:
    """SIGTERM / SIGINT handler: raise :class:`Interrupted` (once)."""
    if _signals.received is not None:
        return  # a second signal while the first is handled: let the clean-up finish
    if _signals.deferring:
        _signals.pending = signum
        return
    _signals.received = signum
    raise Interrupted(signum)


@contextlib.contextmanager
def _raise_on_signals() -> Iterator[None]:
    """Turn SIGTERM and SIGINT into :class:`Interrupted` while the block runs.

    Lightning composes its own SIGTERM handler with this one during ``fit`` (and restores this
    one afterwards). A second signal while the first is handled is ignored, so that the clean-up
    (trainer teardown, removal of partial outputs) completes; SIGKILL still ends the process.
    Only possible in the main thread; elsewhere nothing is installed.
    """
    _signals.reset()
    previous = {}
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGTERM, signal.SIGINT):
            previous[signum] = signal.signal(signum, _on_signal)
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


@contextlib.contextmanager
def _signals_deferred() -> Iterator[None]:
    """Hold SIGTERM and SIGINT back while the block runs (e.g. renames that belong together).

    A signal received meanwhile raises :class:`Interrupted` when the block has completed.
    """
    _signals.deferring += 1
    try:
        yield
    finally:
        _signals.deferring -= 1
    if not _signals.deferring and _signals.pending is not None and _signals.received is None:
        _signals.received, _signals.pending = _signals.pending, None
        raise Interrupted(_signals.received)


# ---------------------------------------------------------------------- staged outputs
def _temporary_name(target: Path) -> Path:
    """A hidden name beside ``target`` holding ``.partial-`` (keeps a file's suffix)."""
    token = f"partial-{os.getpid()}-{secrets.token_hex(3)}"
    if target.suffix and not target.is_dir():
        return target.with_name(f".{target.stem}.{token}{target.suffix}")
    return target.with_name(f".{target.name}.{token}")


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(OSError):
            path.unlink(missing_ok=True)


def _replace(temporary: Path, target: Path) -> None:
    """Rename ``temporary`` to ``target``; an existing folder ``target`` is replaced whole."""
    if target.is_dir() and not target.is_symlink():
        old = _temporary_name(target).with_name(f".{target.name}.replaced-{secrets.token_hex(3)}")
        os.replace(target, old)
        os.replace(temporary, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(temporary, target)
    _written.append(target)


class _Staging:
    """Outputs written under temporary names beside their targets, renamed when all succeeded."""

    def __init__(self) -> None:
        self._pairs: list[tuple[Path, Path]] = []

    def path(self, target: Path) -> Path:
        """The temporary path to write ``target`` to (a file, or a folder the writer creates)."""
        target.parent.mkdir(parents=True, exist_ok=True)
        temporary = _temporary_name(target)
        self._pairs.append((temporary, target))
        return temporary

    def commit(self) -> None:
        """Rename every output into place; SIGTERM / SIGINT wait until all are renamed."""
        with _signals_deferred():
            while self._pairs:
                temporary, target = self._pairs[0]
                _replace(temporary, target)
                self._pairs.pop(0)

    def discard(self) -> None:
        for temporary, _ in self._pairs:
            _remove(temporary)
        self._pairs.clear()


@contextlib.contextmanager
def _staged() -> Iterator[_Staging]:
    """Write outputs to temporary names in the block; rename them all at its end.

    On an error or an interruption the temporary files and folders are removed.
    """
    staging = _Staging()
    try:
        yield staging
        staging.commit()
    finally:
        staging.discard()
