"""The ``sclong`` command line: demo, pretrain, embed, grn, convert-official.

Every subcommand has ``--help`` (with the defaults). The command line answers at once: the
heavy libraries (torch, scanpy, scvi-tools) are imported only when a command runs.

Exit codes
----------
0
    Success.
2
    A user error (a missing or unreadable file, an output path that is a file where a folder is
    needed or the reverse, ``--out`` equal to an input without ``--overwrite``, raw counts where
    normalised values are needed, ...): one line on stderr. Set ``SCLONG_DEBUG=1`` for the full
    traceback.
130, 143
    Interrupted by SIGINT (Ctrl+C) or SIGTERM (e.g. a scheduler's time limit), whatever the
    phase: one line on stderr.

Outputs are written under a temporary name beside their destination (a hidden name holding
``.partial-``, e.g. ``.embedded.partial-4242-1a2b3c.h5ad``) and renamed only when the command
succeeds; a failed or interrupted run removes them, so no file or folder that looks complete is
left behind.

One module per command (``_demo``, ``_pretrain``, ``_embed``, ``_grn``, ``_convert``), each with
its ``NAME``, ``HELP`` and ``DESCRIPTION``, its options (``add_options``) and its work
(``run``); what they share is in ``_common`` (errors, paths, input values, saved models,
options) and ``_staging`` (signals, outputs renamed on success).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import warnings
from collections.abc import Sequence

from ..errors import ScLongError
from . import _convert, _demo, _embed, _grn, _pretrain
from ._common import PROG, CliError, _add_parser, _one_line, _Parser, _warn
from ._demo import run_demo
from ._grn import SYMBOL_COLUMNS
from ._grn import _gene_symbols as _gene_symbols
from ._staging import Interrupted, _raise_on_signals, _written
from ._staging import _on_signal as _on_signal
from ._staging import _replace as _replace
from ._staging import _staged as _staged

__all__ = [
    "PROG",
    "SYMBOL_COLUMNS",
    "USER_ERRORS",
    "CliError",
    "Interrupted",
    "build_parser",
    "main",
    "run_demo",
]


# user errors: one line, exit code 2: every error of the package's vocabulary
# (sclong_scverse.errors, CliError included) and the built-in ones they extend
USER_ERRORS = (ScLongError, ValueError, KeyError, OSError)


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Show a warning as one line, without the source line (``warnings.showwarning``)."""
    _warn(str(message))


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("sclong-scverse")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "0.0.0"


def build_parser() -> argparse.ArgumentParser:
    """The ``sclong`` argument parser (one subparser per command)."""
    parser = _Parser(
        prog=PROG,
        description="scLong single-cell foundation model for scanpy / scvi-tools users.",
        epilog="Exit codes: 0 success, 2 user error (one line on stderr; SCLONG_DEBUG=1 for a "
        "traceback), 130 / 143 interrupted by SIGINT / SIGTERM.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in (_demo, _pretrain, _embed, _grn, _convert):
        subparser = _add_parser(
            commands, command.NAME, help=command.HELP, description=command.DESCRIPTION
        )
        command.add_options(subparser)
        subparser.set_defaults(func=command.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``sclong`` command line.

    Parameters
    ----------
    argv
        The arguments (default: ``sys.argv[1:]``).

    Returns
    -------
    The exit code: 0 success, 2 user error, 130 / 143 interrupted by SIGINT / SIGTERM.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    debug = bool(os.environ.get("SCLONG_DEBUG"))
    _written.clear()
    try:
        with _raise_on_signals(), warnings.catch_warnings():
            if not debug:
                warnings.filterwarnings("ignore", category=FutureWarning)
                warnings.filterwarnings("ignore", category=DeprecationWarning)
                # Lightning's advice on trainer settings the command line does not expose
                warnings.filterwarnings("ignore", message=".*log_every_n_steps")
                warnings.filterwarnings("ignore", message=".*does not have many workers")
                warnings.showwarning = _show_warning
            args.func(args)
    except (Interrupted, KeyboardInterrupt) as interrupt:
        signum = getattr(interrupt, "signum", signal.SIGINT)
        done = f"; already written: {', '.join(map(str, _written))}" if _written else ""
        print(
            f"{PROG} {args.command}: interrupted by {signal.Signals(signum).name}, stopped "
            f"without finishing (partial outputs removed{done})",
            file=sys.stderr,
            flush=True,
        )
        return 128 + signum
    except SystemExit as exit_info:
        # Lightning's own SIGTERM path (when this process's handler could not be installed)
        if type(exit_info).__name__ == "SIGTERMException":
            print(f"{PROG} {args.command}: interrupted by SIGTERM", file=sys.stderr, flush=True)
            return 128 + signal.SIGTERM
        raise
    except USER_ERRORS as error:
        if debug:
            raise
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        print(f"{PROG} {args.command}: error: {_one_line(message)}", file=sys.stderr)
        return 2
    return 0
