"""Execute the tutorial notebooks (tutorials/*.ipynb) in fast mode.

Each notebook runs in a fresh IPython kernel of the Python running pytest (a kernel spec written
for ``sys.executable``, so that a user-level ``python3`` kernel of another environment cannot be
picked up), in a temporary working directory, with ``SCLONG_TUTORIAL_FAST=1`` and the data
locations of ``tests/conftest.py`` in its environment. The committed notebooks are never
written to by the tests.

A notebook declares the shared files it needs in its metadata, ``"sclong": {"requires": [...]}``
with ``"shared_data"`` (``../shared/data``, else the subsets in ``tests/data``) and/or ``"parity"``
(``../shared/parity``, else ``tests/data/parity``); it is skipped when one is absent (never in a
checkout, which has ``tests/data``). A notebook without that entry is assumed to need both.

To refresh the committed outputs (full mode, figures inline), run from the repository root::

    .venv/bin/python tests/test_tutorials.py tutorials/01_quickstart.ipynb [...]
"""

from __future__ import annotations

import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
from nbclient.exceptions import CellExecutionError  # noqa: E402

from conftest import DATA_DIR, PARITY_DIR, REPO  # noqa: E402

TUTORIALS = REPO / "tutorials"
NOTEBOOKS = sorted(TUTORIALS.glob("*.ipynb"))
KERNEL = "sclong-tutorials"  # written for sys.executable by execute()
CELL_TIMEOUT = 1200  # seconds per cell: generous for loaded machines (fast mode: < 2 min each)
ANSI_CODES = re.compile(r"\x1b\[[0-9;]*m")  # colours in IPython tracebacks
RESOURCES = {
    "shared_data": (DATA_DIR, DATA_DIR.is_dir(), "SCLONG_SHARED_DATA"),
    "parity": (PARITY_DIR, (PARITY_DIR / "tiny_ckpt.pth").exists(), "SCLONG_PARITY_DIR"),
}


def requirements(notebook) -> list[str]:
    """The shared resources a notebook declares in ``metadata["sclong"]["requires"]``."""
    declared = notebook.metadata.get("sclong", {}).get("requires")
    if declared is None:
        return list(RESOURCES)
    unknown = sorted(set(declared) - set(RESOURCES))
    if unknown:
        raise ValueError(f"unknown requirements {unknown}; choose from {sorted(RESOURCES)}")
    return list(declared)


def kernel_environment(fast: bool) -> dict[str, str]:
    """Environment variables for the notebook's kernel."""
    env = {
        "SCLONG_SHARED_DATA": str(DATA_DIR),
        "SCLONG_PARITY_DIR": str(PARITY_DIR),
        "PYDEVD_DISABLE_FILE_VALIDATION": "1",  # no debugger notice on the kernel's stderr
    }
    if fast:
        env["SCLONG_TUTORIAL_FAST"] = "1"
    return env


def execute(notebook, workdir: Path, fast: bool, record_timing: bool = True):
    """Execute ``notebook`` in place with a kernel of this Python, in ``workdir``."""
    saved = dict(os.environ)
    specs = tempfile.TemporaryDirectory()
    spec = Path(specs.name) / "kernels" / KERNEL
    spec.mkdir(parents=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    kernel = {"argv": argv, "display_name": "Python 3 (ipykernel)", "language": "python"}
    (spec / "kernel.json").write_text(json.dumps(kernel))
    os.environ.update(kernel_environment(fast))  # the kernel inherits the environment
    os.environ["JUPYTER_PATH"] = os.pathsep.join(
        filter(None, [specs.name, saved.get("JUPYTER_PATH")])
    )
    if not fast:
        os.environ.pop("SCLONG_TUTORIAL_FAST", None)
    try:
        client = nbclient.NotebookClient(
            notebook,
            kernel_name=KERNEL,
            timeout=CELL_TIMEOUT,
            resources={"metadata": {"path": str(workdir)}},
            record_timing=record_timing,
        )
        client.execute()
    finally:
        os.environ.clear()
        os.environ.update(saved)
        specs.cleanup()
    return notebook


def test_tutorials_are_found():
    assert len(NOTEBOOKS) >= 2, f"tutorial notebooks missing in {TUTORIALS}"


def test_kernel_is_the_python_running_the_tests(tmp_path):
    """The kernel is this environment's Python (e.g. the CI's fresh venv)."""
    notebook = nbformat.v4.new_notebook(
        cells=[nbformat.v4.new_code_cell("import sys\nprint(sys.prefix)\nprint(sys.executable)")]
    )
    execute(notebook, tmp_path, fast=True)
    prefix, executable = notebook.cells[0].outputs[0]["text"].split()
    assert Path(prefix) == Path(sys.prefix)
    assert Path(executable).parent == Path(sys.executable).parent


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_tutorial_runs(path, tmp_path, capsys):
    notebook = nbformat.read(path, as_version=4)
    for name in requirements(notebook):
        where, present, variable = RESOURCES[name]
        if not present:
            pytest.skip(f"{path.name} needs {name} in {where} (set {variable})")
    start = time.perf_counter()
    try:
        execute(notebook, tmp_path, fast=True)
    except CellExecutionError as error:
        message = ANSI_CODES.sub("", str(error))
        pytest.fail(f"{path.name} failed (fast mode):\n{message}", pytrace=False)
    with capsys.disabled():
        print(f"\n{path.name}: executed in fast mode in {time.perf_counter() - start:.0f} s")


def _clean(notebook) -> None:
    """Drop per-run metadata so that refreshed notebooks differ only where results do."""
    for cell in notebook.cells:
        cell.metadata.pop("execution", None)
        if cell.cell_type == "code":
            # scvi-tools / Lightning notices on stderr that say nothing about the results
            cell.outputs = [
                output
                for output in cell.outputs
                if not (output.get("name") == "stderr" and _noise(output.get("text", "")))
            ]


def _noise(text: str) -> bool:
    return all(
        any(marker in line for marker in ("Seed set to", "GPU available", "TPU available"))
        or not line.strip()
        for line in text.splitlines()
    )


def main(paths: list[str]) -> None:
    """Execute notebooks in full mode and write them back with their outputs."""
    for name in paths or [str(p) for p in NOTEBOOKS]:
        path = Path(name).resolve()
        notebook = nbformat.read(path, as_version=4)
        start = time.perf_counter()
        with tempfile.TemporaryDirectory() as workdir:
            execute(notebook, Path(workdir), fast=False, record_timing=False)
        _clean(notebook)
        nbformat.write(notebook, path)
        size = path.stat().st_size / 1e6
        print(f"{path.name}: {time.perf_counter() - start:.0f} s (full mode), {size:.2f} MB")


if __name__ == "__main__":
    main(sys.argv[1:])
