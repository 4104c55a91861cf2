"""``sclong pretrain``: pretrain a model on one .h5ad in memory or a corpus streamed from disk."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from ._common import (
    CliError,
    _add_accelerator,
    _add_progress,
    _add_value_options,
    _counts_advice,
    _devices,
    _diagnosis,
    _final_losses,
    _input_file,
    _output_folder,
    _prepare_values,
    _quiet_training,
    _read_h5ad,
    _require_var_column,
    _save_model,
    _say,
    count_int,
    positive_float,
    positive_int,
)

NAME = "pretrain"
HELP = "pretrain a new scLong model on an .h5ad or a corpus of stores"
DESCRIPTION = (
    "Pretrain scLong by masked-expression modelling and save the model. One "
    ".h5ad is read into memory: values --layer (already scLong-normalised), else "
    "layers['sclong'] when present, else the raw counts of --counts-layer (or X) "
    "normalised with scl.pp.normalize. Several inputs, a folder, a glob pattern (quoted) or "
    "a .zarr store are streamed from disk as a corpus (scl.data.ScLongCorpus: genes aligned "
    "per store, counts normalised per batch), and so is one .h5ad with any of the "
    "multi-process / checkpoint options. Several processes: launch this command once per "
    "device with torchrun or srun (see the docs' 'Pretraining at scale')."
)


def _training_options(args: argparse.Namespace) -> dict:
    """The training arguments of ``SCLONG.train`` and ``SCLONG.pretrain`` given as options."""
    return {
        "max_epochs": args.epochs,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "accelerator": args.accelerator,
        "devices": _devices(args.devices),
        "gradient_checkpointing": args.gradient_checkpointing,
        "enable_progress_bar": args.progress,
    }


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


def run(args: argparse.Namespace) -> None:
    """Run ``sclong pretrain`` (one .h5ad in memory, else a corpus)."""
    if _uses_corpus(args):
        _run_corpus(args)
        return
    source = _input_file(args.inputs[0])
    out = _output_folder(args.out, inputs=[source], replace=True, overwrite=args.overwrite)
    adata = _read_h5ad(source)
    for option, key in (("--batch-key", args.batch_key), ("--labels-key", args.labels_key)):
        if key is not None and key not in adata.obs:
            raise CliError(f"{option} {key!r} is not an obs column of {source}")
    _require_var_column(adata, source, args.gene_id_key)
    layer = _prepare_values(
        adata,
        source,
        args.layer,
        args.counts_layer,
        "sclong",
        allow_non_integer=args.allow_non_integer,
        layer_option=True,
    )
    from ..model import SCLONG
    from ..pp import ScLongInputError

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
    _say(
        f"pretraining: {args.epochs} epoch(s), batch size {args.batch_size}, lr {args.lr}, "
        f"accelerator {args.accelerator}"
    )
    with _quiet_training():
        model.train(**_training_options(args))
    for name, value in _final_losses(model.history):
        if value is not None:
            _say(f"final {name} masked MSE: {value:.4f}")
    with _quiet_training():
        held_out = model.evaluate_masked_mse(seed=0, batch_size=args.batch_size)
    _say(
        f"held-out masked MSE {held_out['model_mse']:.4f} vs {held_out['baseline_mse']:.4f} for "
        f"the per-gene mean ({held_out['n_masked']:,} masked values; lower is better, the model "
        "should be below the mean)"
    )
    _save_model(model, out)


def _run_corpus(args: argparse.Namespace) -> None:
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
    from ..data import ScLongCorpus, expand_corpus_paths
    from ..model import SCLONG
    from ..pp import ScLongInputError

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
    with _quiet_training():
        losses = model.pretrain(
            corpus,
            **_training_options(args),
            max_steps=args.max_steps or -1,
            num_nodes=args.num_nodes,
            strategy=args.strategy,
            precision=args.precision,
            accumulate_grad_batches=args.accumulate_grad_batches,
            checkpoint_dir=args.checkpoint_dir,
            checkpoint_every_n_steps=args.checkpoint_every,
            resume=args.resume,
            num_workers=args.num_workers,
        )
    for line in getattr(model, "pretrain_report_", []):
        _say(f"  {line}")
    if int(os.environ.get("RANK", "0")) != 0:
        return  # one process writes the model
    if len(losses):
        _say(f"final masked MSE (last step): {losses['masked_mse'].iloc[-1]:.4f}")
    _save_model(model, out)


def add_options(parser: argparse.ArgumentParser) -> None:
    """The options of ``sclong pretrain``."""
    parser.add_argument(
        "inputs",
        nargs="+",
        metavar="INPUT",
        help="an .h5ad, or several .h5ad / .zarr stores, folders of them or glob patterns",
    )
    parser.add_argument("--out", required=True, metavar="MODEL_DIR", help="model folder")
    parser.add_argument("--overwrite", action="store_true", help="replace MODEL_DIR")
    _add_value_options(parser, layer=True)
    parser.add_argument(
        "--gene-id-key",
        metavar="COLUMN",
        help="var column with the gene ids (symbols or Ensembl) (default: var_names)",
    )
    parser.add_argument("--batch-key", help="obs column of batches (recorded)")
    parser.add_argument("--labels-key", help="obs column of cell labels (recorded)")
    parser.add_argument("--config", default="tiny", help="preset: tiny, small, bench or 1b")
    parser.add_argument(
        "--epochs", type=positive_int, default=10, metavar="N", help="training epochs"
    )
    parser.add_argument(
        "--batch-size", type=positive_int, default=16, metavar="B", help="cells a step"
    )
    parser.add_argument(
        "--lr",
        type=positive_float,
        default=5e-3,
        help="learning rate (5e-3 for a new model, as the README and sclong demo; about 1e-4 "
        "to continue from official weights)",
    )
    _add_accelerator(parser)
    parser.add_argument("--devices", default="auto", help="Lightning devices")
    _add_progress(parser)
    scale = parser.add_argument_group("corpus and scale-out (streamed from disk)")
    scale.add_argument("--num-nodes", type=positive_int, default=1, help="Lightning num_nodes")
    scale.add_argument("--strategy", default="auto", help="Lightning strategy: ddp, fsdp, ...")
    scale.add_argument("--precision", help="Lightning precision, e.g. bf16-mixed on GPUs")
    scale.add_argument(
        "--accumulate-grad-batches",
        type=positive_int,
        default=1,
        metavar="K",
        help="gradient accumulation",
    )
    scale.add_argument(
        "--max-steps", type=positive_int, metavar="N", help="stop after N optimiser steps"
    )
    scale.add_argument("--checkpoint-dir", metavar="DIR", help="write Lightning checkpoints here")
    scale.add_argument(
        "--checkpoint-every", type=positive_int, metavar="N", help="a checkpoint every N steps"
    )
    scale.add_argument(
        "--resume",
        metavar="CKPT",
        help="continue a run: 'last' (in --checkpoint-dir), 'auto' (last when there is one: "
        "for requeued jobs) or a checkpoint path",
    )
    scale.add_argument(
        "--num-workers", type=count_int, default=0, metavar="W", help="reader processes per process"
    )
    scale.add_argument(
        "--gradient-checkpointing",
        action="store_true",
        help="recompute each Performer layer in the backward pass (less memory, ~1/3 more time)",
    )
    scale.add_argument(
        "--seed", type=count_int, default=0, help="seed of the order, masks and model"
    )
