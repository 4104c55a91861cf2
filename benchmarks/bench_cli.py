"""How fast the ``sclong`` command line answers: help, a subcommand's help, a user error.

Each command runs in a fresh process of the installed ``sclong`` entry point (the one beside
this Python, else the one on PATH) several times; the table gives the median, the fastest and
the slowest wall time, and which heavy libraries (torch, scanpy, scvi-tools, anndata) the same
command imported (one more run of ``main`` in a probe process). Target (issue 11): under 2 s.

Usage: python benchmarks/bench_cli.py [--repeats N] [--sclong PATH]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGET_S = 2.0
HEAVY = ("torch", "scanpy", "scvi", "anndata")

# run main() in-process and report which heavy modules it imported (stderr, last line)
PROBE = """
import sys
from sclong_scverse.cli import main
try:
    code = main(sys.argv[1:])
except SystemExit as exit_info:
    code = exit_info.code
print("imported:", ",".join(m for m in {heavy!r} if m in sys.modules) or "-", file=sys.stderr)
sys.exit(code)
"""


def _cases(missing: Path, folder: Path) -> list[tuple[str, list[str], int]]:
    return [
        ("sclong --help", ["--help"], 0),
        ("sclong embed --help", ["embed", "--help"], 0),
        (
            "sclong embed MISSING.h5ad (error)",
            ["embed", str(missing), "--model", str(folder), "--out", str(folder / "o.h5ad")],
            2,
        ),
    ]


def _time(command: list[str], expected: int) -> float:
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if result.returncode != expected:
        raise RuntimeError(f"{command} exited {result.returncode}: {result.stderr[-500:]}")
    return seconds


def main() -> None:
    """Print the table of CLI start-up times."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="runs per command")
    parser.add_argument("--sclong", default=None, help="the sclong executable")
    args = parser.parse_args()
    beside = Path(sys.executable).with_name("sclong")
    executable = args.sclong or (str(beside) if beside.exists() else shutil.which("sclong"))
    if executable is None:
        raise SystemExit("no sclong executable: install the package (make install) or --sclong")

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        rows = []
        for name, argv, expected in _cases(folder / "missing.h5ad", folder):
            times = [_time([executable, *argv], expected) for _ in range(args.repeats)]
            probe = subprocess.run(
                [sys.executable, "-c", PROBE.format(heavy=HEAVY), *argv],
                capture_output=True,
                text=True,
            )
            imported = probe.stderr.strip().splitlines()[-1].removeprefix("imported: ")
            rows.append((name, statistics.median(times), min(times), max(times), imported))

    print(f"sclong start-up, {args.repeats} runs each ({executable})")
    print(f"{'command':<36} {'median s':>9} {'min s':>7} {'max s':>7}  target  heavy imports")
    for name, median, low, high, imported in rows:
        verdict = "ok" if median < TARGET_S else "SLOW"
        print(f"{name:<36} {median:>9.2f} {low:>7.2f} {high:>7.2f}  {verdict:<6}  {imported}")


if __name__ == "__main__":
    main()
