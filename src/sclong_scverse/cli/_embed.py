"""``sclong embed``: cell embeddings of a saved model -> ``obsm['X_sclong']``.

One ``.h5ad`` is read into memory and written back with the embeddings added. Several inputs, a
folder, a glob pattern or a ``.zarr`` store (or any of the multi-process options) are embedded as
a corpus streamed from disk (:meth:`SCLONG.embed_corpus <sclong_scverse.SCLONG.embed_corpus>`):
``--out`` is then a folder with one AnnData zarr store per input, resumable after a kill.
"""

from __future__ import annotations

import argparse
import ast
import os
from functools import cache
from pathlib import Path

from .._settings import quiet_libraries
from ._common import (
    CliError,
    _add_query_options,
    _devices,
    _load_for_query,
    _model_folder,
    _output_folder,
    _query_paths,
    _say,
    _write_h5ad,
    count_int,
    fraction,
    positive_int,
)

NAME = "embed"
HELP = "cell embeddings -> obsm['X_sclong'] (one .h5ad, or a corpus of stores)"
DESCRIPTION = (
    "Embed cells with a saved model. One .h5ad: writes the input with obsm[KEY] added to --out "
    "(a file). Several inputs, a folder, a glob pattern (quoted) or a .zarr store: the stores "
    "are streamed from disk as a corpus (scl.data.ScLongCorpus: genes aligned per store, raw "
    "counts of X or --counts-layer normalised per batch, scLong-normalised values read as they "
    "are) and --out is a folder holding one AnnData zarr store per input (obsm[KEY], the "
    "input's obs_names), resumed where it stopped when run again. Several processes: launch "
    "this command once per device with torchrun or srun, with --devices / --num-nodes."
)


# where the poolings are defined; read as text, since importing it imports torch and scvi-tools
_MODULE_SOURCE = Path(__file__).resolve().parents[1] / "module" / "_module.py"


@cache
def _poolings() -> tuple[tuple[str, ...], str]:
    """``POOLINGS`` and ``DEFAULT_POOLING`` of :mod:`sclong_scverse.module._module`.

    Read from the module's source (literal assignments), so that ``sclong embed --help`` needs
    no torch; imported when the source cannot be read that way.
    """
    names = ("POOLINGS", "DEFAULT_POOLING")
    found: dict[str, object] = {}
    try:
        for node in ast.parse(_MODULE_SOURCE.read_text(encoding="utf-8")).body:
            if isinstance(node, ast.Assign) and len(node.targets) == 1:
                target, value = node.targets[0], node.value
            elif isinstance(node, ast.AnnAssign) and node.value is not None:
                target, value = node.target, node.value
            else:
                continue
            if isinstance(target, ast.Name) and target.id in names:
                found[target.id] = ast.literal_eval(value)
    except (OSError, SyntaxError, ValueError, TypeError):
        found = {}
    if len(found) < len(names):
        from ..module._module import DEFAULT_POOLING, POOLINGS

        return tuple(POOLINGS), DEFAULT_POOLING
    return tuple(found["POOLINGS"]), str(found["DEFAULT_POOLING"])


def _uses_corpus(args: argparse.Namespace) -> bool:
    """Whether ``sclong embed`` embeds a corpus (many stores, a folder, a glob, a zarr)."""
    corpus_options = (
        args.devices is not None,
        args.num_nodes != 1,
        args.strategy != "auto",
        args.block_size is not None,
        not args.resume,
        args.num_workers,
    )
    if args.more_inputs or any(corpus_options):
        return True
    text = args.input
    return any(char in text for char in "*?[") or Path(text).is_dir()


def run(args: argparse.Namespace) -> None:
    """Run ``sclong embed`` (one .h5ad in memory, else a corpus)."""
    if _uses_corpus(args):
        _run_corpus(args)
        return
    source, model_dir, out = _query_paths(args)
    from .. import tl

    adata, model, restore = _load_for_query(args, source, model_dir)
    tl.embed(
        adata,
        model,
        pooling=args.pooling,
        batch_size=args.batch_size,
        key_added=args.key,
        progress_bar=args.progress,
        precision=args.precision,
        min_coverage=args.min_coverage,
    )
    restore()
    _say(f"obsm[{args.key!r}]: {adata.obsm[args.key].shape} ({args.pooling} pooling)")
    _write_h5ad(adata, out)


def _template(model_dir: Path):
    """A one-cell AnnData on a saved model's genes, registered as the model was (for loading).

    A model saved without its AnnData needs data to be set up on; embedding a corpus reads the
    stores instead, so the model gets this placeholder: the saved genes (and gene ids), one
    cell normalised as the model's registry records, and the registered obs columns.
    """
    import anndata as ad
    import numpy as np
    import pandas as pd
    from scipy import sparse

    from ..io._lean import load_mapped
    from ..model._saving import MODEL_FILE, from_plain

    try:
        content, _ = load_mapped(model_dir / MODEL_FILE)  # mapped: no weight is read here
        content = from_plain({k: v for k, v in content.items() if k != "model_state_dict"})
        registry = content["attr_dict"]["registry_"]
        setup = registry["setup_args"]
        names = [str(name) for name in np.asarray(content["var_names"])]
    except (KeyError, TypeError, ValueError, RuntimeError, OSError):
        raise CliError(f"{model_dir} is not a saved scLong model (unexpected model.pt)") from None
    values = np.zeros((1, len(names)), dtype=np.float32)
    values[0, 0] = float((setup.get("normalization") or {}).get("max_value", 10.0))
    if len(names) > 1:
        values[0, 1] = 0.5  # not an integer: not read as raw counts
    template = ad.AnnData(sparse.csr_matrix(values), var=pd.DataFrame(index=pd.Index(names)))
    template.obs_names = ["template"]
    if setup.get("layer") is not None:
        template.layers[setup["layer"]] = template.X.copy()
    if setup.get("gene_id_key") is not None and content.get("gene_ids") is not None:
        template.var[setup["gene_id_key"]] = np.asarray(content["gene_ids"]).astype(str)
    fields = registry.get("field_registries", {})
    for key, field in (("batch_key", "batch"), ("labels_key", "labels")):
        if setup.get(key) is not None:
            mapping = fields[field]["state_registry"]["categorical_mapping"]
            template.obs[setup[key]] = pd.Categorical([mapping[0]], categories=list(mapping))
    return template


def _run_corpus(args: argparse.Namespace) -> None:
    """Embed a corpus of stores into the folder ``--out`` (resumable)."""
    model_dir = _model_folder(args.model)
    inputs = [args.input, *args.more_inputs]
    out = _output_folder(args.out)
    from ..data import ScLongCorpus, expand_corpus_paths
    from ..model import SCLONG

    try:
        paths = expand_corpus_paths(inputs)
    except FileNotFoundError as error:
        raise CliError(str(error)) from None
    for path in paths:
        if path.resolve() == out.resolve():
            raise CliError(f"--out {out} is the input store {path}; choose another folder")
    corpus = ScLongCorpus(
        paths,
        layer=args.counts_layer,
        gene_id_key=args.gene_id_key,
        values="counts" if args.counts_layer else "auto",
        allow_non_integer=args.allow_non_integer,
    )
    first = int(os.environ.get("RANK", "0")) == 0  # torchrun / srun: one message per run
    if first:
        _say(corpus.summary())
    with quiet_libraries(True):
        model = SCLONG.load(
            str(model_dir),
            adata=_template(model_dir),
            accelerator="cpu",  # Lightning moves it to each process's device
            dtype=args.dtype,
        )
        table = model.embed_corpus(
            corpus,
            out,
            batch_size=args.batch_size,
            block_size=args.block_size or 1024,
            pooling=args.pooling,
            precision=args.precision,
            key=args.key,
            resume=args.resume,
            accelerator=args.accelerator,
            devices=_devices(args.devices) if args.devices is not None else 1,
            num_nodes=args.num_nodes,
            strategy=args.strategy,
            num_workers=args.num_workers,
            enable_progress_bar=args.progress,
        )
    if first:
        for row in table.itertuples():
            _say(
                f"{Path(row.output).name}: {row.n_obs:,} cells, obsm[{args.key!r}] "
                f"({row.n_done_before:,} done before, {row.n_embedded:,} now)"
            )
        _say(f"{int(table['n_embedded'].sum()):,} cells embedded; wrote {out}/")


def add_options(parser: argparse.ArgumentParser) -> None:
    """The options of ``sclong embed``."""
    _add_query_options(parser)
    parser.add_argument(
        "more_inputs",
        nargs="*",
        metavar="INPUT",
        help="more stores (.h5ad, .zarr, folders, quoted globs): embedded as a corpus into the "
        "folder --out",
    )
    choices, default = _poolings()
    parser.add_argument("--pooling", default=default, choices=choices, help="over genes")
    parser.add_argument("--key", default="X_sclong", help="obsm key")
    parser.add_argument(
        "--min-coverage",
        type=fraction,
        default=0.5,
        help="one .h5ad: fewest of the model's genes (fraction) it must hold; below it the input "
        "is refused (lower it knowingly: missing genes enter as 0)",
    )
    parser.add_argument(
        "--precision",
        choices=("32", "bf16", "16", "auto"),
        help="of the forward passes (default: float32; auto for --dtype bf16: bf16 where the "
        "device has bfloat16 instructions, else float32 with the weights widened block by "
        "block; 16 on GPUs only)",
    )
    parser.add_argument(
        "--dtype",
        choices=("float32", "bf16"),
        help="hold the weights in this dtype (bf16: half the memory, for inference; default: "
        "as saved)",
    )
    corpus = parser.add_argument_group("corpus of stores (--out is a folder)")
    corpus.add_argument(
        "--devices", metavar="N", help="processes per node (one per device; default 1)"
    )
    corpus.add_argument("--num-nodes", type=positive_int, default=1, help="nodes")
    corpus.add_argument("--strategy", default="auto", help="Lightning strategy, e.g. ddp")
    corpus.add_argument(
        "--block-size",
        type=positive_int,
        metavar="N",
        help="consecutive cells per block, the unit of work and of resumption (default 1024)",
    )
    corpus.add_argument(
        "--resume",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="continue the run recorded in --out (--no-resume: refuse a folder holding one)",
    )
    corpus.add_argument(
        "--num-workers", type=count_int, default=0, help="reader processes per process"
    )
