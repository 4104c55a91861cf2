"""What the ``sclong`` commands share: errors, paths, messages, input values, models, options.

Only the standard library at import time: the heavy libraries (torch, scanpy, scvi-tools) are
imported inside the functions that need them, when a command runs.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import secrets
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from .._settings import quiet_libraries
from ..errors import ScLongError
from ._staging import _staged

PROG = "sclong"


class CliError(ScLongError):
    """A user error of the command line: reported in one line, exit code 2."""


# ---------------------------------------------------------------------- messages
def _one_line(text: object) -> str:
    """``text`` with every run of white space (newlines included) made one space."""
    return " ".join(str(text).split())


def _say(*values) -> None:
    print(*values, flush=True)


def _warn(message: str) -> None:
    print(f"{PROG}: warning: {_one_line(message)}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------- paths
def _input_path(path: str, what: str, *, folder: bool) -> Path:
    """An existing file (``folder=False``, readable) or folder (a one-line :class:`CliError`)."""
    result = Path(path)
    if not result.exists():
        raise CliError(f"{what} not found: {path}")
    if result.is_dir() != folder:
        wanted, given = ("folder", "file") if folder else ("file", "folder")
        raise CliError(f"{what} {path} is a {given}; give a {wanted}")
    if not folder and not os.access(result, os.R_OK):
        raise CliError(f"cannot read {what} {path}: permission denied")
    return result


def _input_file(path: str, what: str = "input file") -> Path:
    """An existing, readable file (a one-line :class:`CliError` otherwise)."""
    return _input_path(path, what, folder=False)


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def _input_at(target: Path, inputs: Sequence[Path]) -> Path | None:
    """The input that ``target`` is (the same file), else ``None``."""
    return next((source for source in inputs if _same_file(target, source)), None)


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
    source = _input_at(result, inputs)
    if source is not None and not overwrite:
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
            if source.resolve().is_relative_to(result.resolve()):
                raise CliError(
                    f"{option} {path} holds the input {source}, which replacing the folder would "
                    "delete; choose another folder"
                )
    _check_writable(result / "x" if result.is_dir() else result, option)
    return result


# ---------------------------------------------------------------------- input values
def _read_h5ad(source: Path):
    import anndata as ad

    try:
        return ad.read_h5ad(source)
    except Exception as error:  # any reader failure means a bad input file
        reason = _one_line(error) or type(error).__name__
        raise CliError(f"cannot read {source} as .h5ad: {reason}") from None


def _require_var_column(adata, source: Path, key: str | None) -> None:
    """Refuse a ``--gene-id-key`` that is not a var column of the input."""
    columns = list(adata.var.columns)
    if key is not None and key not in columns:
        raise CliError(f"--gene-id-key {key!r} is not a var column of {source}: {columns}")


_SENTENCE_END = re.compile(r"(?<!e\.g)(?<!i\.e)\.\s")


def _diagnosis(error: Exception, source: Path) -> str:
    """The first sentence of a value-check error, naming the file instead of ``adata``."""
    text = _one_line(error)
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
    from ..pp import ScLongInputError, normalize

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


# ---------------------------------------------------------------------- library output
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
def _quiet_training() -> Iterator[None]:
    """Quiet libraries (``quiet_libraries(True)``), and no stdout line from a failed training.

    ``scvi.train.TrainRunner`` prints ``Exception raised during training. <class 'NameError'>
    ...`` (whatever the exception) before raising it again; the command line reports the
    exception itself.
    """
    stream = _DropLines(sys.stdout, ("Exception raised during training.",))
    with quiet_libraries(True), contextlib.redirect_stdout(stream):
        try:
            yield
        finally:
            stream.flush()


# ---------------------------------------------------------------------- models
def _devices(text: str) -> int | str:
    """A device count or index given as digits, else the text (``"auto"``, ``"0,1"``, ...)."""
    return int(text) if text.isdigit() else text


def _final_losses(history) -> list[tuple[str, float | None]]:
    """The last train and validation masked MSE of a training history (``None``: not logged)."""
    values = []
    for name in ("train", "validation"):
        frame = history.get(f"masked_mse_{name}") if history is not None else None
        values.append(
            (name, float(frame.iloc[-1, 0]) if frame is not None and len(frame) else None)
        )
    return values


def _save_model(model, out: Path) -> None:
    """Save a pretrained model to the folder ``out`` (staged) and say how to load it."""
    with _staged() as staging:
        model.save(str(staging.path(out)), save_anndata=False, overwrite=True)
    _say(f"wrote {out}/ (load with scl.SCLONG.load({str(out)!r}, adata=...))")


def _write_h5ad(adata, path: Path) -> None:
    with _staged() as staging:
        adata.write_h5ad(staging.path(path))
    _say(f"wrote {path}")


def _model_folder(path: str) -> Path:
    """A saved SCLONG's folder (a one-line :class:`CliError` for anything else).

    A folder of another model of the package (a downstream head, a classifier), named by its
    manifest, is refused with what it holds and how to load it.
    """
    directory = _input_path(path, "model folder", folder=True)
    if not (directory / "model.pt").is_file():
        raise CliError(f"{path} is not a saved scLong model (no model.pt)")
    if (directory / "manifest.json").is_file():
        from ..model._saved_schema import read_manifest

        held = read_manifest(directory / "manifest.json").get("model", "SCLONG")
        if held != "SCLONG":
            raise CliError(
                f"{path} holds a {held}, not a scLong model (SCLONG): the commands embed and "
                f"grn need the backbone. Load this one in Python with "
                f"sclong_scverse.model.{held}.load."
            )
    return directory


def _saved_setup(model_dir: Path) -> dict:
    """What the CLI needs from a saved model: its layer, gene-id key, genes and gene ids."""
    import numpy as np

    from ..model._saving import read_saved_model

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

    from ..genes import strip_version

    model_key = saved["gene_id_key"]
    columns = list(adata.var.columns)
    _require_var_column(adata, source, gene_id_key)
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


def _query_paths(args: argparse.Namespace) -> tuple[Path, Path, Path]:
    """The checked input file, model folder and ``--out`` file of a query command."""
    source = _input_file(args.input)
    model_dir = _model_folder(args.model)
    return source, model_dir, _output_file(args.out, inputs=[source], overwrite=args.overwrite)


def _load_for_query(args: argparse.Namespace, source: Path, model_dir: Path):
    """The input, the loaded model, and a function restoring the input's gene names."""
    from ..model import SCLONG
    from ..model._anndata import MIN_QUERY_COVERAGE

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
    with quiet_libraries(True):
        model = SCLONG.load(
            str(model_dir),
            adata=adata,
            accelerator=args.accelerator,
            device=_devices(args.device),
            dtype=getattr(args, "dtype", None),
            min_coverage=getattr(args, "min_coverage", MIN_QUERY_COVERAGE),
        )
    return adata, model, restore


# ---------------------------------------------------------------------- options
class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each option's default, except ``None`` and the ``False`` of on/off flags."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.default is None or action.default is False:
            return text
        return super()._get_help_string(action) if text else text


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (``sclong pretrain: error: ...``), rc 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {_one_line(message)} (see {self.prog} --help)\n")


def _add_parser(commands, name: str, **kwargs) -> argparse.ArgumentParser:
    return commands.add_parser(name, formatter_class=_HelpFormatter, **kwargs)


def _number(kind: type, low: float, strict: bool, high: float | None = None):
    """An argparse ``type``: a ``kind`` number above ``low`` (or from it), at most ``high``."""
    if high is not None:
        wanted = f"a number from {low:g} to {high:g}"
    elif kind is int:
        wanted = f"a whole number, {low + strict:g} or more"
    else:
        wanted = f"a number above {low:g}" if strict else f"a number, {low:g} or more"

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {wanted}") from None
        if value != value or (value <= low if strict else value < low):
            raise argparse.ArgumentTypeError(f"{text!r} is not {wanted}")
        if high is not None and value > high:
            raise argparse.ArgumentTypeError(f"{text!r} is not {wanted}")
        return value

    parse.__name__ = wanted  # what argparse names in its messages
    return parse


#: argparse types: whole numbers >= 1 (sizes, steps), >= 0 (counts, seeds, workers),
#: numbers > 0 (learning rates), >= 0 (minutes) and fractions in [0, 1]
positive_int = _number(int, 0, strict=True)
count_int = _number(int, 0, strict=False)
positive_float = _number(float, 0, strict=True)
non_negative_float = _number(float, 0, strict=False)
fraction = _number(float, 0, strict=False, high=1)


def _add_accelerator(parser) -> None:
    parser.add_argument("--accelerator", default="auto", help="Lightning accelerator")


def _add_progress(parser, help: str = "progress bar") -> None:
    parser.add_argument(
        "--progress", action=argparse.BooleanOptionalAction, default=True, help=help
    )


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
    """The input, model, output and run options of the commands that query a saved model."""
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
        "--batch-size", type=positive_int, default=64, metavar="B", help="cells per forward pass"
    )
    _add_progress(parser, "progress bar on stderr (cells done, cells/s, time left)")
    _add_accelerator(parser)
    parser.add_argument("--device", default="auto", help="device index or 'auto'")
