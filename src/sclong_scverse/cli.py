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
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import re
import secrets
import shutil
import signal
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from datetime import timedelta
from pathlib import Path

PROG = "sclong"

# var columns that commonly hold gene symbols (10x / Cell Ranger, CELLxGENE, scanpy, ...)
SYMBOL_COLUMNS = (
    "gene_symbols",
    "gene_symbol",
    "symbol",
    "symbols",
    "feature_name",
    "gene_name",
    "gene_names",
    "gene_short_name",
)


class CliError(Exception):
    """A user error: reported in one line, exit code 2."""


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


# ---------------------------------------------------------------------- paths
def _input_file(path: str, what: str = "input file") -> Path:
    """An existing, readable file (a one-line :class:`CliError` otherwise)."""
    result = Path(path)
    if not result.exists():
        raise CliError(f"{what} not found: {path}")
    if result.is_dir():
        raise CliError(f"{what} {path} is a folder; give a file")
    if not os.access(result, os.R_OK):
        raise CliError(f"cannot read {what} {path}: permission denied")
    return result


def _input_folder(path: str, what: str) -> Path:
    """An existing folder (a one-line :class:`CliError` otherwise)."""
    result = Path(path)
    if not result.exists():
        raise CliError(f"{what} not found: {path}")
    if not result.is_dir():
        raise CliError(f"{what} {path} is a file; give a folder")
    return result


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def _is_inside(path: Path, folder: Path) -> bool:
    return path.resolve().is_relative_to(folder.resolve())


def _check_writable(path: Path, option: str) -> None:
    """Check that ``path`` can be created: its nearest existing parent is a writable folder.

    Writability is probed by creating (and removing) a hidden file, which also works for root
    and for read-only file systems. Missing parents are created only when outputs are written.
    """
    existing = path.absolute().parent
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise CliError(f"{option} {path}: {existing} is a file, not a folder")
    probe = existing / f".{PROG}-probe-{os.getpid()}-{secrets.token_hex(3)}"
    try:
        probe.touch(exist_ok=False)
        probe.unlink()
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise CliError(f"{option} {path}: cannot write in {existing} ({reason})") from None


def _output_file(
    path: str,
    option: str = "--out",
    *,
    inputs: Sequence[Path] = (),
    overwrite: bool = False,
    example: str = "result.h5ad",
) -> Path:
    """Check an output file path; refuse an input as output unless ``overwrite``."""
    result = Path(path)
    if result.is_dir() or path.endswith(("/", os.sep)):
        raise CliError(f"{option} {path} is a folder; give a file name, e.g. {result / example}")
    for source in inputs:
        if _same_file(result, source) and not overwrite:
            raise CliError(
                f"{option} {path} is the input file {source}; choose another name, or pass "
                "--overwrite to replace the input"
            )
    _check_writable(result, option)
    return result


def _output_folder(
    path: str,
    option: str = "--out",
    *,
    inputs: Sequence[Path] = (),
    replace: bool = False,
    overwrite: bool = False,
) -> Path:
    """Check an output folder path.

    ``replace``: the command replaces the whole folder, which must then be new or empty unless
    ``overwrite`` (and must not hold an input).
    """
    result = Path(path)
    if result.exists() and not result.is_dir():
        raise CliError(f"{option} {path} is a file; give a folder name")
    if replace and result.is_dir():
        if any(result.iterdir()) and not overwrite:
            raise CliError(f"{option} {path} exists and is not empty (use --overwrite)")
        for source in inputs:
            if _is_inside(source, result):
                raise CliError(
                    f"{option} {path} holds the input {source}, which replacing the folder would "
                    "delete; choose another folder"
                )
    _check_writable(result / "x" if result.is_dir() else result, option)
    return result


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


# ---------------------------------------------------------------------- helpers
def _say(*values) -> None:
    print(*values, flush=True)


def _warn(message: str) -> None:
    print(f"{PROG}: warning: {' '.join(message.split())}", file=sys.stderr, flush=True)


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Show a warning as one line, without the source line (``warnings.showwarning``)."""
    _warn(str(message))


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("sclong-scverse")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "0.0.0"


def _read_h5ad(source: Path):
    import anndata as ad

    try:
        return ad.read_h5ad(source)
    except Exception as error:  # any reader failure means a bad input file
        reason = " ".join(str(error).split()) or type(error).__name__
        raise CliError(f"cannot read {source} as .h5ad: {reason}") from None


_SENTENCE_END = re.compile(r"(?<!e\.g)(?<!i\.e)\.\s")


def _diagnosis(error: Exception, source: Path) -> str:
    """The first sentence of a value-check error, naming the file instead of ``adata``."""
    text = " ".join(str(error).split())
    end = _SENTENCE_END.search(text)
    if end is not None:
        text = text[: end.start()]
    text = re.sub(
        r"adata\.layers\[('[^']*')\]", lambda match: f"layers[{match[1]}] of {source}", text
    )
    return text.replace("adata.X", f"X of {source}")


def _counts_advice(target: str, layer_option: bool) -> str:
    already = (
        "--layer L for a layer already normalised as scLong expects (total 1e4, log1p, "
        "maximum 10 per cell)"
        if layer_option
        else f"store values already normalised as scLong expects in layers[{target!r}]"
    )
    return (
        "pass --counts-layer L if a layer holds raw counts; "
        f"{already}; --allow-non-integer for non-integer counts (e.g. ambient-RNA-corrected); "
        "if only log1p(normalize_total) values are left, store their expm1 in a layer and pass "
        "--counts-layer L --allow-non-integer"
    )


def _prepare_values(
    adata,
    source: Path,
    layer: str | None,
    counts_layer: str | None,
    target: str,
    *,
    allow_non_integer: bool = False,
    layer_option: bool = False,
) -> str:
    """Make sure ``adata.layers[target]`` holds scLong's values; return the layer used.

    ``layer``: already normalised values there. Otherwise ``adata.layers[target]`` when present,
    else the raw counts of ``counts_layer`` (or ``X``) are normalised into it. Value-check errors
    end in command-line advice.
    """
    from .pp import ScLongInputError, normalize

    if layer is not None:
        if layer not in adata.layers:
            raise CliError(f"layer {layer!r} not in the layers of {source}: {list(adata.layers)}")
        return layer
    if target in adata.layers and counts_layer is None:
        return target
    where = f"layers[{counts_layer!r}]" if counts_layer else "X"
    if counts_layer is not None and counts_layer not in adata.layers:
        raise CliError(
            f"counts layer {counts_layer!r} not in the layers of {source}: {list(adata.layers)}"
        )
    _say(f"normalising raw counts from {where} into layers[{target!r}] (scl.pp.normalize)")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        try:
            normalize(
                adata, layer=counts_layer, key_added=target, allow_non_integer=allow_non_integer
            )
        except ScLongInputError as error:
            raise CliError(
                f"{_diagnosis(error, source)}; raw counts are needed: "
                + _counts_advice(target, layer_option)
            ) from None
    for warning in caught:
        if issubclass(warning.category, UserWarning):
            _warn(_diagnosis(Exception(warning.message), source))
    return target


@contextlib.contextmanager
def _quiet_libraries() -> Iterator[None]:
    """Silence the info lines of scvi-tools and Lightning while the block runs.

    scvi-tools logs e.g. a colour-coded "File ... already downloaded" when a model loads;
    Lightning logs accelerator lines and third-party tips ("Tip: ... try installing
    litlogger"). Warnings and errors still show.
    """
    # imported first: importing Lightning sets its loggers to INFO, undoing a level set before
    import lightning.pytorch  # noqa: F401
    import scvi  # noqa: F401

    names = ("scvi", "lightning", "lightning.pytorch", "lightning.fabric")
    loggers = [logging.getLogger(name) for name in names]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


class _DropLines:
    """A text stream that forwards whole lines to ``stream`` except those starting with ``drop``."""

    def __init__(self, stream, drop: tuple[str, ...]) -> None:
        self._stream, self._drop, self._pending = stream, drop, ""

    def write(self, text: str) -> int:
        self._pending += text
        *lines, self._pending = self._pending.split("\n")
        for line in lines:
            if not line.startswith(self._drop):
                self._stream.write(line + "\n")
        return len(text)

    def flush(self) -> None:
        if self._pending and not self._pending.startswith(self._drop):
            self._stream.write(self._pending)
            self._pending = ""
        self._stream.flush()

    def __getattr__(self, name: str):
        return getattr(self._stream, name)


@contextlib.contextmanager
def _without_scvi_exception_print() -> Iterator[None]:
    """Drop the stdout line scvi-tools prints when training stops on any exception.

    ``scvi.train.TrainRunner`` prints ``Exception raised during training. <class 'NameError'>
    ...`` (whatever the exception) before raising it again; the command line reports the
    exception itself.
    """
    stream = _DropLines(sys.stdout, ("Exception raised during training.",))
    with contextlib.redirect_stdout(stream):
        try:
            yield
        finally:
            stream.flush()


def _model_folder(path: str) -> Path:
    directory = _input_folder(path, "model folder")
    if not (directory / "model.pt").is_file():
        raise CliError(f"{path} is not a saved scLong model (no model.pt)")
    return directory


def _saved_setup(model_dir: Path) -> dict:
    """What the CLI needs from a saved model: its layer, gene-id key, genes and gene ids."""
    import numpy as np

    from .model._saving import read_saved_model

    saved = read_saved_model(model_dir)
    try:
        setup = saved["attr_dict"]["registry_"]["setup_args"]
        init = saved["attr_dict"].get("init_params_", {}).get("non_kwargs", {})
        return {
            "layer": setup.get("layer"),
            "gene_id_key": setup.get("gene_id_key"),
            "var_names": [str(name) for name in np.asarray(saved["var_names"])],
            "vocabulary": [str(gene) for gene in init.get("vocabulary") or []],
        }
    except (KeyError, TypeError, AttributeError):
        raise CliError(f"{model_dir} is not a saved scLong model (unexpected model.pt)") from None


def _saved_layer(model_dir: str) -> str | None:
    """The layer a saved model was set up with (``None``: ``X``)."""
    return _saved_setup(_model_folder(model_dir))["layer"]


def _use_model_gene_names(
    adata, source: Path, saved: dict, gene_id_key: str | None
) -> Callable[[], None]:
    """Rename ``adata``'s genes to the model's by gene id; return a function undoing it.

    The ids of the input are ``var[gene_id_key]``, else the model's own gene-id column when the
    input has it, else ``var_names``; they are matched (Ensembl version suffixes ignored) to the
    model's ids (its vocabulary when it was set up with a gene-id key, else its genes).
    """
    import numpy as np
    import pandas as pd

    from .genes import strip_version

    model_key = saved["gene_id_key"]
    columns = list(adata.var.columns)
    if gene_id_key is not None and gene_id_key not in columns:
        raise CliError(f"--gene-id-key {gene_id_key!r} is not a var column of {source}: {columns}")
    column = gene_id_key if gene_id_key is not None else model_key
    if column not in columns:
        column = None
    ids = adata.var[column] if column is not None else adata.var_names
    where = f"var[{column!r}]" if column is not None else "var_names"
    model_names = np.asarray(saved["var_names"], dtype=object)
    model_ids = np.asarray(saved["vocabulary"], dtype=object)
    if model_key is None or len(model_ids) != len(model_names):
        model_ids = model_names
    lookup = pd.Index([strip_version(str(gene)) for gene in model_ids])
    position = lookup.get_indexer([strip_version(str(gene)) for gene in ids])
    found = position >= 0
    if not found.any():
        raise CliError(
            f"none of the gene ids in {where} of {source} (like {list(ids[:3])}) are the model's "
            f"(like {list(model_ids[:3])}); pass --gene-id-key COLUMN naming the var column "
            "that holds ids like the model's"
        )
    names = np.where(found, model_names[np.maximum(position, 0)], np.asarray(adata.var_names))
    if not pd.Index(names).is_unique:
        raise CliError(f"several genes of {source} have the same id in {where}; make it unique")
    if model_key is None and (names == np.asarray(adata.var_names)).all():
        return lambda: None
    original_names = adata.var_names.copy()
    original_column = adata.var[model_key].copy() if model_key in columns else None
    adata.var_names = pd.Index(names.astype(str))
    if model_key is not None:
        adata.var[model_key] = np.where(found, model_ids[np.maximum(position, 0)], ids).astype(str)

    def restore() -> None:
        adata.var_names = original_names
        if original_column is not None:
            adata.var[model_key] = original_column.to_numpy()
        elif model_key is not None:
            del adata.var[model_key]

    return restore


def _load_model(model_dir: Path, adata, accelerator: str, device: str):
    from .model import SCLONG

    device = int(device) if device.isdigit() else device
    with _quiet_libraries():
        return SCLONG.load(str(model_dir), adata=adata, accelerator=accelerator, device=device)


def _write_h5ad(adata, path: Path) -> None:
    with _staged() as staging:
        adata.write_h5ad(staging.path(path))
    _say(f"wrote {path}")


def _undirected(edges):
    """Drop the reverse copy of each edge (cosine scores are symmetric)."""
    import numpy as np
    import pandas as pd

    pairs = np.sort(edges[["source", "target"]].to_numpy().astype(str), axis=1)
    return edges[~pd.DataFrame(pairs).duplicated().to_numpy()].reset_index(drop=True)


def _gene_symbols(genes: Sequence[str], var) -> list[str] | None:
    """Symbols of Ensembl ``genes``, ``None`` when they are not Ensembl ids (symbols already).

    From a symbol column of ``var`` (indexed by gene; see ``SYMBOL_COLUMNS``), else from the
    embedded NCBI table.
    """
    import pandas as pd

    from .genes import detect_id_type, map_gene_ids

    genes = [str(gene) for gene in genes]
    if not genes or detect_id_type(genes) != "ensembl":
        return None
    symbols = pd.Series([None] * len(genes), index=genes, dtype=object)
    columns = [] if var is None else list(var.columns)
    column = next((name for name in SYMBOL_COLUMNS if name in columns), None)
    if column is not None:
        known = var[column].astype(object).where(var[column].notna(), None)
        known.index = var.index.astype(str)
        known = known[~known.index.duplicated()]
        symbols = known.reindex(genes).astype(object)
    missing = symbols.isna().to_numpy()
    if missing.any():
        table = map_gene_ids([g for g, m in zip(genes, missing, strict=True) if m], to="symbol")
        symbols[missing] = table.to_numpy()
    return ["" if value is None or pd.isna(value) else str(value) for value in symbols]


def _edge_table(target, key: str, n_edges: int, var=None):
    """The ``n_edges`` highest-scoring gene pairs, each once, with symbols beside Ensembl ids."""
    from . import tl

    # a pair is listed at most twice (A-B, B-A, same score): 2n directed edges hold the top n
    edges = _undirected(tl.grn_edges(target, key=key, n_top=2 * n_edges)).head(n_edges)
    genes = list(dict.fromkeys([*edges["source"], *edges["target"]]))
    symbols = _gene_symbols(genes, target.var if var is None else var)
    if symbols is not None:
        lookup = dict(zip(genes, symbols, strict=True))
        edges["source_symbol"] = [lookup[gene] for gene in edges["source"]]
        edges["target_symbol"] = [lookup[gene] for gene in edges["target"]]
    return edges


def _last(history, key: str) -> float | None:
    frame = history.get(key) if history is not None else None
    if frame is None or not len(frame):
        return None
    return float(frame.iloc[-1, 0])


# ---------------------------------------------------------------------- demo
def _leiden(adata, neighbors_key: str, seed: int) -> str:
    import scanpy as sc

    try:
        import igraph  # noqa: F401

        sc.tl.leiden(
            adata,
            neighbors_key=neighbors_key,
            flavor="igraph",
            n_iterations=2,
            directed=False,
            random_state=seed,
        )
        return "Leiden (igraph)"
    except ImportError:
        pass
    try:
        import leidenalg  # noqa: F401
    except ImportError:
        return ""
    sc.tl.leiden(adata, neighbors_key=neighbors_key, flavor="leidenalg", random_state=seed)
    return "Leiden (leidenalg; igraph's own Leiden unavailable)"


def run_demo(
    out: str = "sclong_demo",
    epochs: int = 12,
    max_train_minutes: float | None = None,
    max_cells: int | None = None,
    batch_size: int = 16,
    lr: float = 5e-3,
    top_k: int = 20,
    seed: int = 0,
    progress: bool = True,
    accelerator: str = "auto",
) -> Path:
    """Pretrain, embed, cluster and build a GRN on ``pbmc68k_reduced``; write files to ``out``.

    Parameters
    ----------
    out
        Output folder (created).
    epochs
        Pretraining epochs of the tiny preset.
    max_train_minutes
        Stop pretraining after this many minutes even if ``epochs`` are not done. ``None``
        (default): no limit, so the result does not depend on how busy the machine is.
    max_cells
        Use a random subset of cells (for quick checks).
    batch_size, lr
        Pretraining batch size and learning rate.
    top_k
        Partners kept per gene in the GRN.
    seed
        Seed of training, UMAP and Leiden.
    progress
        Show the training progress bar.
    accelerator
        Lightning accelerator.

    Returns
    -------
    The output folder, holding ``demo.h5ad`` (``layers["sclong"]``, ``obsm["X_sclong"]``,
    ``obsm["X_sclong_umap"]``, ``obs["leiden"]``, ``varp["sclong_grn"]``), ``umap.png``,
    ``training.png``, ``grn_heatmap.png``, ``grn_network.png``, ``grn_edges.csv`` and
    ``summary.txt``.
    """
    folder = Path(out)
    if folder.exists() and not folder.is_dir():
        raise CliError(f"--out {out} is a file; give a folder name")
    with _staged() as staging:  # every file is renamed into ``folder`` at the end
        text = _demo_files(
            staging, folder, epochs, max_train_minutes, max_cells, batch_size, lr, top_k, seed,
            progress, accelerator,
        )  # fmt: skip
    _say()
    _say(text)
    _say(f"wrote {folder}/")
    return folder


def _demo_files(
    staging: _Staging,
    folder: Path,
    epochs: int,
    max_train_minutes: float | None,
    max_cells: int | None,
    batch_size: int,
    lr: float,
    top_k: int,
    seed: int,
    progress: bool,
    accelerator: str,
) -> str:
    """The demo's work (see :func:`run_demo`): its files go to ``staging``; returns the summary."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import scanpy as sc
    import scvi
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    from . import pl, pp, tl
    from .datasets import pbmc68k_counts
    from .model import SCLONG

    def dest(name: str) -> Path:
        return staging.path(folder / name)

    start = time.perf_counter()
    timings: dict[str, float] = {}

    def lap(name: str, since: float) -> float:
        now = time.perf_counter()
        timings[name] = now - since
        return now

    tick = time.perf_counter()
    adata = pbmc68k_counts(max_cells=max_cells, seed=seed)
    _say(f"pbmc68k_reduced: {adata.n_obs} cells x {adata.n_vars} genes (integer counts)")
    pp.normalize(adata, layer="counts")
    scvi.settings.seed = seed
    SCLONG.setup_anndata(adata, layer="sclong", labels_key="bulk_labels")
    model = SCLONG(adata, config="tiny")
    _say(model._model_summary_string)
    tick = lap("load + normalise + build", tick)

    _say(f"pretraining the tiny preset for {epochs} epoch(s) ...")
    model.train(
        max_epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        accelerator=accelerator,
        enable_progress_bar=progress,
        **({"max_time": timedelta(minutes=max_train_minutes)} if max_train_minutes else {}),
    )
    tick = lap("pretraining", tick)
    done = model.history.get("masked_mse_train")
    epochs_done = len(done) if done is not None else epochs
    validation = model.evaluate_masked_mse(seed=seed, batch_size=64)
    tick = lap("held-out masked MSE", tick)

    tl.embed(adata, model, pooling="max", batch_size=64)
    tick = lap("embedding", tick)
    sc.pp.neighbors(adata, use_rep="X_sclong", key_added="X_sclong_neighbors", random_state=seed)
    sc.tl.umap(
        adata, neighbors_key="X_sclong_neighbors", key_added="X_sclong_umap", random_state=seed
    )
    leiden_method = _leiden(adata, "X_sclong_neighbors", seed)
    tick = lap("UMAP + Leiden", tick)

    # centred cosine: a small self-pretrained model's gene embeddings share a large common
    # component (plain cosine ~0.98 for every pair); see tl.grn
    tl.grn(adata, model, center=True, top_k=top_k, batch_size=64)
    edges = _edge_table(adata, "sclong_grn", 100)
    edges.to_csv(dest("grn_edges.csv"), index=False)
    tick = lap("GRN", tick)

    colors = ["bulk_labels"] + (["leiden"] if leiden_method else [])
    pl.embedding(adata, colors, basis="X_sclong", show=False, wspace=0.6)
    plt.gcf().savefig(dest("umap.png"), dpi=120, bbox_inches="tight")
    plt.close("all")
    pl.training_history(
        model, baseline=validation["baseline_mse"], show=False, save=dest("training.png")
    )
    plt.close("all")
    pl.grn(adata, n_top=30, kind="heatmap", show=False, save=dest("grn_heatmap.png"))
    plt.close("all")
    pl.grn(adata, n_top=30, kind="network", show=False, save=dest("grn_network.png"))
    plt.close("all")
    tick = lap("plots", tick)

    adata.obs["leiden"] = adata.obs["leiden"] if leiden_method else "n/a"
    adata.write_h5ad(dest("demo.h5ad"))
    lap("writing", tick)
    total = time.perf_counter() - start

    labels = adata.obs["bulk_labels"].astype(str)
    lines = [
        "sclong demo: scLong (tiny preset) pretrained on scanpy's pbmc68k_reduced",
        "",
        "[data]",
        f"cells: {adata.n_obs}",
        f"genes: {adata.n_vars}",
        f"cell types (bulk_labels): {labels.nunique()}",
        "",
        "[model]",
        model._model_summary_string.replace("\n", " "),
        f"GO graph: {model.gene_graph_summary}",
        "",
        "[training]",
        f"epochs: {epochs_done} of {epochs}"
        + ("" if epochs_done >= epochs else f" (stopped at the {max_train_minutes}-minute limit)")
        + f", batch size {batch_size}, lr {lr}",
    ]
    for name, key in (
        ("final train masked MSE", "masked_mse_train"),
        ("final validation masked MSE", "masked_mse_validation"),
    ):
        value = _last(model.history, key)
        lines.append(f"{name}: {'n/a' if value is None else f'{value:.4f}'}")
    lines += [
        f"held-out cells, all chosen values masked: model MSE {validation['model_mse']:.4f} vs "
        f"per-gene mean baseline {validation['baseline_mse']:.4f} "
        f"({validation['n_masked']} values)",
        "model beats the per-gene mean baseline: "
        + (
            "yes"
            if validation["model_mse"] < validation["baseline_mse"]
            else "NO (train longer: --epochs; the embedding and GRN below are not to be trusted)"
        ),
        "",
        "[clustering]",
    ]
    if leiden_method:
        leiden = adata.obs["leiden"].astype(str)
        lines += [
            f"method: {leiden_method} on the kNN graph of X_sclong (max pooling)",
            f"clusters: {leiden.nunique()}",
            f"ARI (Leiden vs bulk_labels): {adjusted_rand_score(labels, leiden):.3f}",
            f"NMI (Leiden vs bulk_labels): {normalized_mutual_info_score(labels, leiden):.3f}",
        ]
    else:
        lines.append("Leiden skipped: install igraph (or leidenalg)")
    if "louvain" in adata.obs:
        reference = adata.obs["louvain"].astype(str)
        lines.append(
            "for reference, the dataset's own PCA Louvain vs bulk_labels: "
            f"ARI {adjusted_rand_score(labels, reference):.3f}, "
            f"NMI {normalized_mutual_info_score(labels, reference):.3f}"
        )
    lines += [
        "",
        "[GRN] cosine similarity of centred contextual gene embeddings (tl.grn(center=True)), "
        f"top {top_k} per gene",
    ]
    lines += ["top 10 edges:"] + [
        f"  {row.source} - {row.target}: {row.score:.4f}"
        for row in edges.head(10).itertuples(index=False)
    ]
    lines += ["", "[runtime]"]
    lines += [f"{name}: {seconds:.1f} s" for name, seconds in timings.items()]
    lines += [f"total: {total:.1f} s", "", "[files]"]
    lines += [
        "demo.h5ad, umap.png, training.png, grn_heatmap.png, grn_network.png, grn_edges.csv",
    ]
    text = "\n".join(lines) + "\n"
    dest("summary.txt").write_text(text)
    return text


# ---------------------------------------------------------------------- subcommands
def _cmd_demo(args: argparse.Namespace) -> None:
    _output_folder(args.out)
    with _quiet_libraries():  # no Lightning accelerator lines or third-party tips
        run_demo(
            out=args.out,
            epochs=args.epochs,
            max_train_minutes=args.max_train_minutes or None,
            max_cells=args.max_cells,
            batch_size=args.batch_size,
            lr=args.lr,
            top_k=args.top_k,
            seed=args.seed,
            progress=args.progress,
            accelerator=args.accelerator,
        )


def _uses_corpus(args: argparse.Namespace) -> bool:
    """Whether ``sclong pretrain`` streams a corpus (many stores, a folder, a glob, a zarr)."""
    corpus_options = (
        args.checkpoint_dir,
        args.resume,
        args.max_steps,
        args.num_nodes != 1,
        args.strategy != "auto",
        args.precision,
        args.accumulate_grad_batches != 1,
        args.num_workers,
    )
    if len(args.inputs) != 1 or any(corpus_options):
        return True
    text = args.inputs[0]
    path = Path(text)
    if any(char in text for char in "*?["):
        return True
    return path.is_dir()  # a folder of stores or a .zarr store; a file (or nothing) is one .h5ad


def _cmd_pretrain(args: argparse.Namespace) -> None:
    if _uses_corpus(args):
        _cmd_pretrain_corpus(args)
        return
    source = _input_file(args.inputs[0])
    out = _output_folder(args.out, inputs=[source], replace=True, overwrite=args.overwrite)
    adata = _read_h5ad(source)
    for option, key in (("--batch-key", args.batch_key), ("--labels-key", args.labels_key)):
        if key is not None and key not in adata.obs:
            raise CliError(f"{option} {key!r} is not an obs column of {source}")
    if args.gene_id_key is not None and args.gene_id_key not in adata.var:
        raise CliError(
            f"--gene-id-key {args.gene_id_key!r} is not a var column of {source}: "
            f"{list(adata.var.columns)}"
        )
    layer = _prepare_values(
        adata,
        source,
        args.layer,
        args.counts_layer,
        "sclong",
        allow_non_integer=args.allow_non_integer,
        layer_option=True,
    )
    from .model import SCLONG
    from .pp import ScLongInputError

    try:
        SCLONG.setup_anndata(
            adata,
            layer=layer,
            batch_key=args.batch_key,
            labels_key=args.labels_key,
            gene_id_key=args.gene_id_key,
        )
    except ScLongInputError as error:
        raise CliError(
            f"{_diagnosis(error, source)}; scLong-normalised values are needed: omit --layer to "
            "normalise the raw counts of X, or " + _counts_advice("sclong", True)
        ) from None
    model = SCLONG(adata, config=args.config)
    _say(model._model_summary_string)
    devices = int(args.devices) if args.devices.isdigit() else args.devices
    _say(
        f"pretraining: {args.epochs} epoch(s), batch size {args.batch_size}, lr {args.lr}, "
        f"accelerator {args.accelerator}"
    )
    with _quiet_libraries(), _without_scvi_exception_print():
        model.train(
            max_epochs=args.epochs,
            batch_size=args.batch_size,
            lr=args.lr,
            accelerator=args.accelerator,
            devices=devices,
            gradient_checkpointing=args.gradient_checkpointing,
            enable_progress_bar=args.progress,
        )
    for name, key in (("train", "masked_mse_train"), ("validation", "masked_mse_validation")):
        value = _last(model.history, key)
        if value is not None:
            _say(f"final {name} masked MSE: {value:.4f}")
    with _staged() as staging:
        model.save(str(staging.path(out)), save_anndata=False, overwrite=True)
    _say(f"wrote {out}/ (load with scl.SCLONG.load({str(out)!r}, adata=...))")


def _cmd_pretrain_corpus(args: argparse.Namespace) -> None:
    """``sclong pretrain`` over many stores: streamed, spread over processes, resumable."""
    for option, value in (
        ("--counts-layer", args.counts_layer),
        ("--batch-key", args.batch_key),
        ("--labels-key", args.labels_key),
    ):
        if value is not None:
            raise CliError(
                f"{option} applies to one in-memory .h5ad; a corpus reads --layer (counts or "
                "scLong-normalised values, detected per store) or X"
            )
    from .data import ScLongCorpus, expand_corpus_paths
    from .model import SCLONG
    from .pp import ScLongInputError

    try:
        stores = expand_corpus_paths(args.inputs)
    except FileNotFoundError as error:
        raise CliError(str(error)) from None
    out = _output_folder(args.out, inputs=stores, replace=True, overwrite=args.overwrite)
    try:
        corpus = ScLongCorpus(
            stores,
            layer=args.layer,
            gene_id_key=args.gene_id_key,
            allow_non_integer=args.allow_non_integer,
            seed=args.seed,
        )
    except (ScLongInputError, KeyError) as error:
        raise CliError(str(error).strip("'\"")) from None
    _say(corpus.summary())
    devices = int(args.devices) if args.devices.isdigit() else args.devices
    if args.resume in ("last", "auto") and args.checkpoint_dir is None:
        raise CliError(f"--resume {args.resume} needs --checkpoint-dir (the run's folder)")
    import torch

    torch.manual_seed(args.seed)  # every process builds the same model (DDP also broadcasts)
    model = SCLONG.from_corpus(corpus, config=args.config)
    _say(model._model_summary_string)
    _say(
        f"pretraining on {corpus.n_obs:,} cells: {args.epochs} epoch(s)"
        + (f", at most {args.max_steps} steps" if args.max_steps else "")
        + f", batch size {args.batch_size} per process, lr {args.lr}, accelerator "
        f"{args.accelerator}, devices {args.devices} x {args.num_nodes} node(s), strategy "
        f"{args.strategy}"
    )
    with _quiet_libraries(), _without_scvi_exception_print():
        losses = model.pretrain(
            corpus,
            max_epochs=args.epochs,
            max_steps=args.max_steps or -1,
            batch_size=args.batch_size,
            lr=args.lr,
            accelerator=args.accelerator,
            devices=devices,
            num_nodes=args.num_nodes,
            strategy=args.strategy,
            precision=args.precision,
            accumulate_grad_batches=args.accumulate_grad_batches,
            checkpoint_dir=args.checkpoint_dir,
            checkpoint_every_n_steps=args.checkpoint_every,
            resume=args.resume,
            num_workers=args.num_workers,
            gradient_checkpointing=args.gradient_checkpointing,
            enable_progress_bar=args.progress,
        )
    for line in getattr(model, "pretrain_report_", []):
        _say(f"  {line}")
    if int(os.environ.get("RANK", "0")) != 0:
        return  # one process writes the model
    if len(losses):
        _say(f"final masked MSE (last step): {losses['masked_mse'].iloc[-1]:.4f}")
    with _staged() as staging:
        model.save(str(staging.path(out)), save_anndata=False, overwrite=True)
    _say(f"wrote {out}/ (load with scl.SCLONG.load({str(out)!r}, adata=...))")


def _load_for_query(args: argparse.Namespace, source: Path, model_dir: Path):
    """The input, the loaded model, and a function restoring the input's gene names."""
    saved = _saved_setup(model_dir)
    adata = _read_h5ad(source)
    if saved["layer"] is not None:
        _prepare_values(
            adata,
            source,
            None,
            args.counts_layer,
            saved["layer"],
            allow_non_integer=args.allow_non_integer,
        )
    restore = _use_model_gene_names(adata, source, saved, args.gene_id_key)
    model = _load_model(model_dir, adata, args.accelerator, args.device)
    return adata, model, restore


def _cmd_embed(args: argparse.Namespace) -> None:
    source = _input_file(args.input)
    model_dir = _model_folder(args.model)
    out = _output_file(args.out, inputs=[source], overwrite=args.overwrite)
    from . import tl

    adata, model, restore = _load_for_query(args, source, model_dir)
    tl.embed(
        adata,
        model,
        pooling=args.pooling,
        batch_size=args.batch_size,
        key_added=args.key,
        progress_bar=args.progress,
    )
    restore()
    _say(f"obsm[{args.key!r}]: {adata.obsm[args.key].shape} ({args.pooling} pooling)")
    _write_h5ad(adata, out)


def _cmd_grn(args: argparse.Namespace) -> None:
    source = _input_file(args.input)
    model_dir = _model_folder(args.model)
    out = _output_file(args.out, inputs=[source], overwrite=args.overwrite)
    edges_path = None
    if args.edges is not None:
        edges_path = _output_file(
            args.edges, "--edges", inputs=[source], overwrite=args.overwrite, example="edges.csv"
        )
        if edges_path.absolute() == out.absolute() or _same_file(edges_path, out):
            raise CliError(f"--edges {args.edges} and --out {args.out} are the same file")
    if args.n_edges < 1:
        raise CliError(f"--n-edges must be at least 1, got {args.n_edges}")
    from . import tl

    adata, model, restore = _load_for_query(args, source, model_dir)
    target = adata
    if not adata.var_names.equals(model.adata.var_names):
        _say("the input's genes differ from the model's: the GRN is written for the model's genes")
        target = model.adata
    top_k = None if args.top_k <= 0 else args.top_k
    tl.grn(
        target,
        model,
        kind=args.kind,
        center=args.center,
        top_k=top_k,
        batch_size=args.batch_size,
        key_added=args.key,
        progress_bar=args.progress,
    )
    restore()  # the input's own gene names again (varp is by position)
    edges = _edge_table(target, args.key, args.n_edges, var=adata.var)
    _say(f"varp[{args.key!r}]: {target.n_vars} x {target.n_vars}, top gene pairs:")
    _say(edges.head(10).to_string(index=False))
    with _staged() as staging:
        if edges_path is not None:
            edges.to_csv(staging.path(edges_path), index=False)
        target.write_h5ad(staging.path(out))
    if edges_path is not None:
        _say(f"wrote {edges_path} ({len(edges)} unique gene pairs)")
    _say(f"wrote {out}")


def _cmd_convert_official(args: argparse.Namespace) -> None:
    inputs = [
        _input_file(args.checkpoint, "checkpoint file"),
        _input_file(args.hparams, "hparams file"),
        _input_file(args.genes, "genes file"),
    ]
    stem = args.name
    if not stem or stem in (".", "..") or "/" in stem or os.sep in stem:
        raise CliError(f"--name {stem!r} must be a plain file stem (no folder), e.g. sclong")
    if args.sha256 is not None and not re.fullmatch(r"[0-9a-fA-F]{64}", args.sha256):
        raise CliError(f"--sha256 {args.sha256!r} is not a sha256 (64 hexadecimal digits)")
    out = _output_folder(args.out)
    names = (f"{stem}.pth", f"{stem}.pkl", f"{stem}_genes.txt", f"{stem}_config.json")
    targets = [out / name for name in names]
    for target in targets:
        if target.is_dir():
            raise CliError(f"{target} is a folder; choose another --name or --out")
        for source in inputs:
            if _same_file(target, source) and not args.overwrite:
                raise CliError(
                    f"writing {target} would replace the input {source}; choose another --out "
                    "or --name, or pass --overwrite"
                )
    import torch

    from .io import load_official, save_official

    release = load_official(*inputs, expected_sha256=args.sha256)
    network, config = release.network, release.network.config
    n_parameters = sum(p.numel() for p in network.parameters())
    n_buffers = sum(b.numel() for b in network.buffers())
    with _staged() as staging:
        files = [staging.path(target) for target in targets]
        save_official(network, files[0], files[1], genes=release.genes, genes_path=files[2])
        files[3].write_text(json.dumps(config.to_dict(), indent=2) + "\n")
        # round trip: read what was written and compare every tensor
        again = load_official(*files[:3]).network
        before, after = network.state_dict(), again.state_dict()
        identical = before.keys() == after.keys() and all(
            torch.equal(before[k], after[k].to(before[k].dtype)) for k in before
        )
        if not identical:
            raise CliError("the written release does not read back identically; nothing written")
    _say("official scLong release")
    for key, value in config.to_dict().items():
        _say(f"  {key}: {value}")
    _say(f"  genes: {len(release.genes)}")
    _say(f"  parameters: {n_parameters:,}; buffer elements: {n_buffers:,}")
    _say(f"wrote {', '.join(str(t) for t in targets[:3])} and {names[3]}")
    _say("round trip (write, read back): identical tensors")


# ---------------------------------------------------------------------- parser
class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each option's default, except ``None`` and the ``False`` of on/off flags."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.default is None or action.default is False:
            return text
        return super()._get_help_string(action) if text else text


def _add_parser(commands, name: str, **kwargs) -> argparse.ArgumentParser:
    return commands.add_parser(name, formatter_class=_HelpFormatter, **kwargs)


def _add_value_options(parser: argparse.ArgumentParser, layer: bool) -> None:
    """Options choosing the values a model reads (raw counts normalised, or a ready layer)."""
    if layer:
        source = parser.add_mutually_exclusive_group()
        source.add_argument("--layer", metavar="L", help="layer with scLong-normalised values")
        source.add_argument(
            "--counts-layer", metavar="L", help="layer with raw counts to normalise (default: X)"
        )
    else:
        parser.add_argument(
            "--counts-layer",
            metavar="L",
            help="normalise the raw counts of layers[L] (default: use the model's layer when "
            "present, else normalise the counts in X)",
        )
    parser.add_argument(
        "--allow-non-integer",
        action="store_true",
        help="accept non-integer counts (e.g. ambient-RNA-corrected) when normalising",
    )


def _add_query_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", metavar="INPUT.h5ad", help="cells to run the model on")
    parser.add_argument("--model", required=True, metavar="MODEL_DIR", help="saved model folder")
    parser.add_argument("--out", required=True, metavar="OUTPUT.h5ad", help="result file")
    parser.add_argument(
        "--overwrite", action="store_true", help="allow --out to be the input file (replaced)"
    )
    _add_value_options(parser, layer=False)
    parser.add_argument(
        "--gene-id-key",
        metavar="COLUMN",
        help="var column of INPUT with gene ids like the model's (default: the model's own "
        "gene-id column when INPUT has it, else var_names)",
    )
    parser.add_argument(
        "--batch-size", type=int, default=64, metavar="B", help="cells per forward pass"
    )
    parser.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="progress bar on stderr (cells done, cells/s, time left)",
    )
    parser.add_argument("--accelerator", default="auto", help="Lightning accelerator")
    parser.add_argument("--device", default="auto", help="device index or 'auto'")


def build_parser() -> argparse.ArgumentParser:
    """The ``sclong`` argument parser (one subparser per command)."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="scLong single-cell foundation model for scanpy / scvi-tools users.",
        epilog="Exit codes: 0 success, 2 user error (one line on stderr; SCLONG_DEBUG=1 for a "
        "traceback), 130 / 143 interrupted by SIGINT / SIGTERM.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    demo = _add_parser(
        commands,
        "demo",
        help="offline demo on scanpy's bundled pbmc68k_reduced (a few minutes on a laptop CPU)",
        description="Pretrain the tiny preset on scanpy's bundled pbmc68k_reduced (700 PBMCs, "
        "765 genes, integer counts recovered), embed, UMAP + Leiden, GRN; write demo.h5ad, PNG "
        "plots and summary.txt. Offline, no GPU needed.",
    )
    demo.add_argument("--out", default="sclong_demo", metavar="DIR", help="output folder")
    demo.add_argument("--epochs", type=int, default=12, metavar="N", help="pretraining epochs")
    demo.add_argument(
        "--max-train-minutes",
        type=float,
        default=0.0,
        metavar="M",
        help="stop pretraining after M minutes (0: no limit, the default, so that the result "
        "does not depend on the machine's load)",
    )
    demo.add_argument("--seed", type=int, default=0, help="random seed")
    demo.add_argument("--accelerator", default="auto", help="Lightning accelerator")
    demo.add_argument(
        "--progress", action=argparse.BooleanOptionalAction, default=True, help="progress bar"
    )
    demo.add_argument("--max-cells", type=int, default=None, help=argparse.SUPPRESS)
    demo.add_argument("--batch-size", type=int, default=16, help=argparse.SUPPRESS)
    demo.add_argument("--lr", type=float, default=5e-3, help=argparse.SUPPRESS)
    demo.add_argument("--top-k", type=int, default=20, help=argparse.SUPPRESS)
    demo.set_defaults(func=_cmd_demo)

    pretrain = _add_parser(
        commands,
        "pretrain",
        help="pretrain a new scLong model on an .h5ad or a corpus of stores",
        description="Pretrain scLong by masked-expression modelling and save the model. One "
        ".h5ad is read into memory: values --layer (already scLong-normalised), else "
        "layers['sclong'] when present, else the raw counts of --counts-layer (or X) "
        "normalised with scl.pp.normalize. Several inputs, a folder, a glob pattern (quoted) or "
        "a .zarr store are streamed from disk as a corpus (scl.data.ScLongCorpus: genes aligned "
        "per store, counts normalised per batch), and so is one .h5ad with any of the "
        "multi-process / checkpoint options. Several processes: launch this command once per "
        "device with torchrun or srun (see the docs' 'Pretraining at scale').",
    )
    pretrain.add_argument(
        "inputs",
        nargs="+",
        metavar="INPUT",
        help="an .h5ad, or several .h5ad / .zarr stores, folders of them or glob patterns",
    )
    pretrain.add_argument("--out", required=True, metavar="MODEL_DIR", help="model folder")
    pretrain.add_argument("--overwrite", action="store_true", help="replace MODEL_DIR")
    _add_value_options(pretrain, layer=True)
    pretrain.add_argument(
        "--gene-id-key",
        metavar="COLUMN",
        help="var column with the gene ids (symbols or Ensembl) (default: var_names)",
    )
    pretrain.add_argument("--batch-key", help="obs column of batches (recorded)")
    pretrain.add_argument("--labels-key", help="obs column of cell labels (recorded)")
    pretrain.add_argument("--config", default="tiny", help="preset: tiny, small, bench or 1b")
    pretrain.add_argument("--epochs", type=int, default=10, metavar="N", help="training epochs")
    pretrain.add_argument("--batch-size", type=int, default=16, metavar="B", help="cells a step")
    pretrain.add_argument("--lr", type=float, default=1e-3, help="learning rate")
    pretrain.add_argument("--accelerator", default="auto", help="Lightning accelerator")
    pretrain.add_argument("--devices", default="auto", help="Lightning devices")
    pretrain.add_argument(
        "--progress", action=argparse.BooleanOptionalAction, default=True, help="progress bar"
    )
    scale = pretrain.add_argument_group("corpus and scale-out (streamed from disk)")
    scale.add_argument("--num-nodes", type=int, default=1, help="Lightning num_nodes")
    scale.add_argument("--strategy", default="auto", help="Lightning strategy: ddp, fsdp, ...")
    scale.add_argument("--precision", help="Lightning precision, e.g. bf16-mixed on GPUs")
    scale.add_argument(
        "--accumulate-grad-batches", type=int, default=1, metavar="K", help="gradient accumulation"
    )
    scale.add_argument("--max-steps", type=int, metavar="N", help="stop after N optimiser steps")
    scale.add_argument("--checkpoint-dir", metavar="DIR", help="write Lightning checkpoints here")
    scale.add_argument(
        "--checkpoint-every", type=int, metavar="N", help="a checkpoint every N steps"
    )
    scale.add_argument(
        "--resume",
        metavar="CKPT",
        help="continue a run: 'last' (in --checkpoint-dir), 'auto' (last when there is one: "
        "for requeued jobs) or a checkpoint path",
    )
    scale.add_argument(
        "--num-workers", type=int, default=0, metavar="W", help="reader processes per process"
    )
    scale.add_argument(
        "--gradient-checkpointing",
        action="store_true",
        help="recompute each Performer layer in the backward pass (less memory, ~1/3 more time)",
    )
    scale.add_argument("--seed", type=int, default=0, help="seed of the order, masks and model")
    pretrain.set_defaults(func=_cmd_pretrain)

    embed = _add_parser(
        commands,
        "embed",
        help="cell embeddings -> obsm['X_sclong']",
        description="Embed cells with a saved model; writes the input with obsm[KEY] added.",
    )
    _add_query_options(embed)
    embed.add_argument(
        "--pooling", default="max", choices=("max", "mean", "sum"), help="over genes"
    )
    embed.add_argument("--key", default="X_sclong", help="obsm key")
    embed.set_defaults(func=_cmd_embed)

    grn = _add_parser(
        commands,
        "grn",
        help="gene network -> varp['sclong_grn'] (+ edge table)",
        description="Gene-gene network from the cosine similarity of scLong gene embeddings; "
        "writes the input with varp[KEY] added and optionally a table of the highest-scoring "
        "gene pairs (each pair once; Ensembl ids get their symbols beside them).",
    )
    _add_query_options(grn)
    grn.add_argument("--top-k", type=int, default=50, help="partners kept per gene (0: dense)")
    grn.add_argument(
        "--kind", default="contextual", choices=("contextual", "static"), help="gene embeddings"
    )
    grn.add_argument(
        "--center",
        action="store_true",
        help="subtract the mean gene embedding before the cosine (not in the article; mostly "
        "scores regulatory pairs better for small self-pretrained models)",
    )
    grn.add_argument("--edges", metavar="EDGES.csv", help="write the top gene pairs here")
    grn.add_argument(
        "--n-edges", type=int, default=1000, metavar="N", help="gene pairs in EDGES.csv"
    )
    grn.add_argument("--key", default="sclong_grn", help="varp key")
    grn.set_defaults(func=_cmd_grn)

    convert = _add_parser(
        commands,
        "convert-official",
        help="load an official scLong release, write it back, check the round trip",
        description="Read an official release (.pth, .pkl, genes .txt) into this package's "
        "network, print its configuration and size, and write it back in the official layout "
        "(readable by the original scripts and by SCLONG.from_official) plus a config JSON, "
        "checking that the written files read back to identical tensors.",
    )
    convert.add_argument("--checkpoint", required=True, metavar="X.pth", help="weights")
    convert.add_argument("--hparams", required=True, metavar="X.pkl", help="hyper-parameters")
    convert.add_argument("--genes", required=True, metavar="genes.txt", help="gene list")
    convert.add_argument("--out", required=True, metavar="DIR", help="output folder")
    convert.add_argument("--name", default="sclong", help="file stem in DIR")
    convert.add_argument(
        "--sha256", metavar="HEX", help="expected sha256 of X.pth (refused when different)"
    )
    convert.add_argument(
        "--overwrite", action="store_true", help="allow the written files to replace the inputs"
    )
    convert.set_defaults(func=_cmd_convert_official)
    return parser


# user errors: one line, exit code 2 (ScLongInputError, OfficialFormatError and
# ModelIntegrityError are ValueErrors; FileNotFoundError and PermissionError are OSErrors)
USER_ERRORS = (CliError, ValueError, KeyError, OSError)


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
        print(f"{PROG} {args.command}: error: {' '.join(str(message).split())}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
