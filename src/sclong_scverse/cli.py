"""The ``sclong`` command line: demo, pretrain, embed, grn, convert-official.

Every subcommand has ``--help``. Bad input (a missing file, raw counts where normalised values
are needed, ...) ends with exit code 2 and a one-line message on stderr; set ``SCLONG_DEBUG=1``
for the full traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path

from .datasets import pbmc68k_counts

PROG = "sclong"


class CliError(Exception):
    """A user error: reported in one line, exit code 2."""


# ---------------------------------------------------------------------- helpers
def _say(*values) -> None:
    print(*values, flush=True)


def _existing(path: str, what: str = "file") -> Path:
    result = Path(path)
    if not result.exists():
        raise CliError(f"{what} not found: {path}")
    return result


def _read_h5ad(path: str):
    import anndata as ad

    source = _existing(path, "input file")
    try:
        return ad.read_h5ad(source)
    except Exception as error:  # any reader failure means a bad input file
        raise CliError(f"cannot read {path} as .h5ad: {error}") from None


def _prepare_values(adata, layer: str | None, counts_layer: str | None, target: str) -> str:
    """Make sure ``adata.layers[target]`` holds scLong's values; return the layer used.

    ``layer``: already normalised values there. Otherwise ``adata.layers[target]`` when present,
    else the raw counts of ``counts_layer`` (or ``X``) are normalised into it.
    """
    from . import pp

    if layer is not None:
        if layer not in adata.layers:
            raise CliError(f"layer {layer!r} not in the input's layers {list(adata.layers)}")
        return layer
    if target in adata.layers and counts_layer is None:
        return target
    where = f"layers[{counts_layer!r}]" if counts_layer else "X"
    if counts_layer is not None and counts_layer not in adata.layers:
        raise CliError(
            f"counts layer {counts_layer!r} not in the input's layers {list(adata.layers)}"
        )
    _say(f"normalising raw counts from {where} into layers[{target!r}] (scl.pp.normalize)")
    pp.normalize(adata, layer=counts_layer, key_added=target)
    return target


def _load_model(model_dir: str, adata, accelerator: str, device: str):
    from .model import SCLONG

    directory = _existing(model_dir, "model folder")
    if not (directory / "model.pt").exists():
        raise CliError(f"{model_dir} is not a saved scLong model (no model.pt)")
    device = int(device) if device.isdigit() else device
    return SCLONG.load(str(directory), adata=adata, accelerator=accelerator, device=device)


def _saved_layer(model_dir: str) -> str | None:
    import torch

    path = _existing(model_dir, "model folder") / "model.pt"
    if not path.exists():
        raise CliError(f"{model_dir} is not a saved scLong model (no model.pt)")
    saved = torch.load(path, map_location="cpu", weights_only=False)
    return saved["attr_dict"]["registry_"]["setup_args"].get("layer")


def _write_h5ad(adata, path: str) -> None:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    adata.write_h5ad(out)
    _say(f"wrote {out}")


# ---------------------------------------------------------------------- pbmc68k counts


# ---------------------------------------------------------------------- demo
def _undirected(edges):
    """Drop the reverse copy of each edge (cosine scores are symmetric)."""
    import numpy as np
    import pandas as pd

    pairs = np.sort(edges[["source", "target"]].to_numpy().astype(str), axis=1)
    return edges[~pd.DataFrame(pairs).duplicated().to_numpy()].reset_index(drop=True)


def _last(history, key: str) -> float | None:
    frame = history.get(key) if history is not None else None
    if frame is None or not len(frame):
        return None
    return float(frame.iloc[-1, 0])


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
    max_train_minutes: float | None = 6.0,
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
        Stop pretraining after this many minutes even if ``epochs`` are not done (keeps the
        demo short on a busy machine); ``None``: no limit.
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
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import scanpy as sc
    import scvi
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    from . import pl, pp, tl
    from .model import SCLONG

    start = time.perf_counter()
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
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
    edges = _undirected(tl.grn_edges(adata, n_top=200)).head(100)
    edges.to_csv(folder / "grn_edges.csv", index=False)
    tick = lap("GRN", tick)

    colors = ["bulk_labels"] + (["leiden"] if leiden_method else [])
    pl.embedding(adata, colors, basis="X_sclong", show=False, wspace=0.6)
    plt.gcf().savefig(folder / "umap.png", dpi=120, bbox_inches="tight")
    plt.close("all")
    pl.training_history(model, show=False, save=folder / "training.png")
    plt.close("all")
    pl.grn(adata, n_top=30, kind="heatmap", show=False, save=folder / "grn_heatmap.png")
    plt.close("all")
    pl.grn(adata, n_top=30, kind="network", show=False, save=folder / "grn_network.png")
    plt.close("all")
    tick = lap("plots", tick)

    adata.obs["leiden"] = adata.obs["leiden"] if leiden_method else "n/a"
    adata.write_h5ad(folder / "demo.h5ad")
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
    (folder / "summary.txt").write_text(text)
    _say()
    _say(text)
    _say(f"wrote {folder}/")
    return folder


# ---------------------------------------------------------------------- subcommands
def _cmd_demo(args: argparse.Namespace) -> None:
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


def _cmd_pretrain(args: argparse.Namespace) -> None:
    from .model import SCLONG

    out = Path(args.out)
    if out.exists() and any(out.iterdir()) and not args.overwrite:
        raise CliError(f"{args.out} exists and is not empty (use --overwrite)")
    adata = _read_h5ad(args.input)
    layer = _prepare_values(adata, args.layer, args.counts_layer, "sclong")
    for key in (args.batch_key, args.labels_key):
        if key is not None and key not in adata.obs:
            raise CliError(f"{key!r} is not an obs column of {args.input}")
    SCLONG.setup_anndata(adata, layer=layer, batch_key=args.batch_key, labels_key=args.labels_key)
    model = SCLONG(adata, config=args.config)
    _say(model._model_summary_string)
    devices = int(args.devices) if args.devices.isdigit() else args.devices
    model.train(
        max_epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        accelerator=args.accelerator,
        devices=devices,
        enable_progress_bar=args.progress,
    )
    for name, key in (("train", "masked_mse_train"), ("validation", "masked_mse_validation")):
        value = _last(model.history, key)
        if value is not None:
            _say(f"final {name} masked MSE: {value:.4f}")
    model.save(str(out), save_anndata=False, overwrite=True)
    _say(f"wrote {out}/ (load with scl.SCLONG.load({str(out)!r}, adata=...))")


def _load_for_query(args: argparse.Namespace):
    adata = _read_h5ad(args.input)
    layer = _saved_layer(args.model)
    if layer is not None:
        _prepare_values(adata, None, args.counts_layer, layer)
    model = _load_model(args.model, adata, args.accelerator, args.device)
    return adata, model


def _cmd_embed(args: argparse.Namespace) -> None:
    from . import tl

    adata, model = _load_for_query(args)
    tl.embed(adata, model, pooling=args.pooling, batch_size=args.batch_size, key_added=args.key)
    _say(f"obsm[{args.key!r}]: {adata.obsm[args.key].shape} ({args.pooling} pooling)")
    _write_h5ad(adata, args.out)


def _cmd_grn(args: argparse.Namespace) -> None:
    from . import tl

    adata, model = _load_for_query(args)
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
    )
    edges = tl.grn_edges(target, key=args.key, n_top=args.n_edges)
    _say(f"varp[{args.key!r}]: {target.n_vars} x {target.n_vars}, top edges:")
    _say(edges.head(10).to_string(index=False))
    if args.edges:
        Path(args.edges).parent.mkdir(parents=True, exist_ok=True)
        edges.to_csv(args.edges, index=False)
        _say(f"wrote {args.edges} ({len(edges)} edges)")
    _write_h5ad(target, args.out)


def _cmd_convert_official(args: argparse.Namespace) -> None:
    import torch

    from .io import load_official, save_official

    for path, what in (
        (args.checkpoint, "checkpoint"),
        (args.hparams, "hparams"),
        (args.genes, "genes"),
    ):
        _existing(path, f"{what} file")
    release = load_official(args.checkpoint, args.hparams, args.genes)
    network, config = release.network, release.network.config
    n_parameters = sum(p.numel() for p in network.parameters())
    n_buffers = sum(b.numel() for b in network.buffers())
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = args.name
    files = (out / f"{stem}.pth", out / f"{stem}.pkl", out / f"{stem}_genes.txt")
    save_official(network, files[0], files[1], genes=release.genes, genes_path=files[2])
    (out / f"{stem}_config.json").write_text(json.dumps(config.to_dict(), indent=2) + "\n")
    # round trip: read what was written and compare every tensor
    again = load_official(*files).network
    before, after = network.state_dict(), again.state_dict()
    identical = before.keys() == after.keys() and all(
        torch.equal(before[k], after[k].to(before[k].dtype)) for k in before
    )
    _say("official scLong release")
    for key, value in config.to_dict().items():
        _say(f"  {key}: {value}")
    _say(f"  genes: {len(release.genes)}")
    _say(f"  parameters: {n_parameters:,}; buffer elements: {n_buffers:,}")
    _say(f"wrote {', '.join(str(f) for f in files)} and {stem}_config.json")
    _say(f"round trip (write, read back): {'identical' if identical else 'DIFFERENT'} tensors")
    if not identical:
        raise CliError("the written release does not read back identically")


# ---------------------------------------------------------------------- parser
def _add_query_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", metavar="INPUT.h5ad", help="cells to run the model on")
    parser.add_argument("--model", required=True, metavar="MODEL_DIR", help="saved model folder")
    parser.add_argument("--out", required=True, metavar="OUTPUT.h5ad", help="result file")
    parser.add_argument(
        "--counts-layer",
        metavar="L",
        help="normalise the raw counts of layers[L] (default: use the model's layer when "
        "present, else normalise the counts in X)",
    )
    parser.add_argument("--batch-size", type=int, default=64, help="cells per forward pass")
    parser.add_argument("--accelerator", default="auto", help="Lightning accelerator")
    parser.add_argument("--device", default="auto", help="device index or 'auto'")


def build_parser() -> argparse.ArgumentParser:
    """The ``sclong`` argument parser (one subparser per command)."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="scLong single-cell foundation model for scanpy / scvi-tools users.",
    )
    from . import __version__

    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    demo = commands.add_parser(
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
        default=6.0,
        metavar="M",
        help="stop pretraining after M minutes (default 6; 0: no limit)",
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

    pretrain = commands.add_parser(
        "pretrain",
        help="pretrain a new scLong model on an .h5ad",
        description="Pretrain scLong by masked-expression modelling and save the model. Values: "
        "--layer (already scLong-normalised), else layers['sclong'] when present, else the raw "
        "counts of --counts-layer (or X) normalised with scl.pp.normalize.",
    )
    pretrain.add_argument("input", metavar="INPUT.h5ad", help="training cells")
    pretrain.add_argument("--out", required=True, metavar="MODEL_DIR", help="model folder")
    source = pretrain.add_mutually_exclusive_group()
    source.add_argument("--layer", metavar="L", help="layer with scLong-normalised values")
    source.add_argument("--counts-layer", metavar="L", help="layer with raw counts to normalise")
    pretrain.add_argument("--batch-key", help="obs column of batches (recorded)")
    pretrain.add_argument("--labels-key", help="obs column of cell labels (recorded)")
    pretrain.add_argument(
        "--config", default="tiny", help="preset: tiny, small, bench or 1b (default tiny)"
    )
    pretrain.add_argument("--epochs", type=int, default=10, metavar="N")
    pretrain.add_argument("--batch-size", type=int, default=16, metavar="B")
    pretrain.add_argument("--lr", type=float, default=1e-3)
    pretrain.add_argument("--accelerator", default="auto", help="Lightning accelerator")
    pretrain.add_argument("--devices", default="auto", help="Lightning devices")
    pretrain.add_argument("--overwrite", action="store_true", help="replace MODEL_DIR")
    pretrain.add_argument(
        "--progress", action=argparse.BooleanOptionalAction, default=True, help="progress bar"
    )
    pretrain.set_defaults(func=_cmd_pretrain)

    embed = commands.add_parser(
        "embed",
        help="cell embeddings -> obsm['X_sclong']",
        description="Embed cells with a saved model; writes the input with obsm[KEY] added.",
    )
    _add_query_options(embed)
    embed.add_argument("--pooling", default="max", choices=("max", "mean", "sum"))
    embed.add_argument("--key", default="X_sclong", help="obsm key (default X_sclong)")
    embed.set_defaults(func=_cmd_embed)

    grn = commands.add_parser(
        "grn",
        help="gene network -> varp['sclong_grn'] (+ edge table)",
        description="Gene-gene network from the cosine similarity of scLong gene embeddings; "
        "writes the input with varp[KEY] added and optionally a ranked edge table.",
    )
    _add_query_options(grn)
    grn.add_argument("--top-k", type=int, default=50, help="partners kept per gene (0: dense)")
    grn.add_argument("--kind", default="contextual", choices=("contextual", "static"))
    grn.add_argument(
        "--center",
        action="store_true",
        help="subtract the mean gene embedding before the cosine (not in the article; mostly "
        "scores regulatory pairs better for small self-pretrained models)",
    )
    grn.add_argument("--edges", metavar="EDGES.csv", help="write the ranked edges here")
    grn.add_argument("--n-edges", type=int, default=1000, help="edges in EDGES.csv")
    grn.add_argument("--key", default="sclong_grn", help="varp key (default sclong_grn)")
    grn.set_defaults(func=_cmd_grn)

    convert = commands.add_parser(
        "convert-official",
        help="load an official scLong release, write it back, check the round trip",
        description="Read an official release (.pth, .pkl, genes .txt) into this package's "
        "network, print its configuration and size, and write it back in the official layout "
        "(readable by the original scripts and by SCLONG.from_official) plus a config JSON, "
        "checking that the written files read back to identical tensors.",
    )
    convert.add_argument("--checkpoint", required=True, metavar="X.pth")
    convert.add_argument("--hparams", required=True, metavar="X.pkl")
    convert.add_argument("--genes", required=True, metavar="genes.txt")
    convert.add_argument("--out", required=True, metavar="DIR")
    convert.add_argument("--name", default="sclong", help="file stem in DIR (default sclong)")
    convert.set_defaults(func=_cmd_convert_official)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``sclong`` command line; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    from .io import OfficialFormatError
    from .pp import ScLongInputError

    user_errors = (CliError, ScLongInputError, OfficialFormatError, FileNotFoundError, KeyError)
    user_errors += (ValueError,)
    try:
        with warnings.catch_warnings():
            if not os.environ.get("SCLONG_DEBUG"):
                warnings.filterwarnings("ignore", category=FutureWarning)
                warnings.filterwarnings("ignore", category=DeprecationWarning)
            args.func(args)
    except user_errors as error:
        if os.environ.get("SCLONG_DEBUG"):
            raise
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        print(f"{PROG} {args.command}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG} {args.command}: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
