"""Embedding an atlas: a corpus of AnnData stores over many processes, resumable after a kill.

:meth:`EmbedCorpusMixin.embed_corpus` reads a :class:`~sclong_scverse.data.ScLongCorpus` in
store order, in blocks of consecutive cells that Lightning's processes (``strategy="ddp"``,
``devices``, ``num_nodes``) share round robin (:mod:`sclong_scverse.data._embedding`), and
writes each store's cell embeddings, in the store's order, to one AnnData zarr store per input
store inside the output folder:

``out/``
    ``run.json``: the run's settings (model fingerprint, pooling, precision, batch and block
    sizes, stores), checked when a run resumes; ``"complete": true`` once every block is done.
    ``<store>.zarr``: AnnData (``anndata.read_zarr``) with the input's ``obs_names`` and the
    embeddings in ``obsm[key]`` (float32, chunks of one block: processes never write the same
    chunk), parameters in ``uns[key]["params"]``.
    ``progress/rank<r>.log``: the blocks each process has written, one id a line, appended
    (and synced to disk) after the block's embeddings are written.

A run killed at any point resumes with ``resume=True``: the blocks listed in the logs are not
computed again (a block being written when the run died is not listed, and is redone whole), and
the remaining blocks are shared over the processes of the new run, whatever their number.
Zarr allows the concurrent writes because each block is a chunk of its own; ``out`` must be on a
file system all processes see.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch

from ..errors import ScLongInputError
from ..module._module import DEFAULT_POOLING, POOLINGS
from ._anndata import Pooling, QueryPrecision, inference_autocast

if TYPE_CHECKING:
    from ..data import ScLongCorpus

logger = logging.getLogger(__name__)

RUN_FILE = "run.json"
PROGRESS_DIR = "progress"
FORMAT = "sclong-scverse-embed-corpus/1"
_SETTINGS = ("format", "model", "pooling", "precision", "batch_size", "block_size", "key")
_LIGHTNING_NOISE = (
    ".*`IterableDataset` has `__len__` defined.*",
    ".*does not have many workers.*",
    ".*predict returned None.*",
    ".*isinstance\\(treespec, LeafSpec\\)` is deprecated.*",
)


def model_fingerprint(module: torch.nn.Module, config: dict) -> str:
    """A sha256 over the configuration and the first values of every weight (cheap, stable)."""
    digest = hashlib.sha256(json.dumps(config, sort_keys=True).encode())
    for name, tensor in module.state_dict().items():
        head = tensor.detach().reshape(-1)[:64].cpu()
        head = head.double() if head.is_floating_point() else head.long()
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
        digest.update(head.numpy().tobytes())
    return digest.hexdigest()


def _output_names(paths: list[Path]) -> list[str]:
    """``<stem>.zarr`` per store; repeated stems get ``-1``, ``-2``, ... in order."""
    names, seen = [], {}
    for path in paths:
        stem = path.name.removesuffix(".h5ad").removesuffix(".zarr")
        count = seen.get(stem, 0)
        seen[stem] = count + 1
        names.append(f"{stem}.zarr" if count == 0 else f"{stem}-{count}.zarr")
    return names


class _Output:
    """The output folder of an :meth:`~EmbedCorpusMixin.embed_corpus` run (see the module)."""

    def __init__(
        self,
        out: Path,
        settings: dict[str, Any],
        stores: list[tuple[int, Any]],
        width: int,
    ):
        self.out = Path(out)
        self.settings = settings
        self.width = int(width)
        self.stores = stores  # (index in corpus.stores, CorpusStore), distinct, in order
        self.names = _output_names([store.path for _, store in stores])
        pairs = zip(stores, self.names, strict=True)
        self.paths = {index: self.out / name for (index, _), name in pairs}
        self._arrays: dict[int, Any] = {}
        self._log = None

    # ---------------------------------------------------------------- set-up (first process)
    def record(self) -> dict[str, Any]:
        """The settings written to ``run.json``, with the stores."""
        stores = [
            {"path": str(store.path.resolve()), "n_obs": store.n_obs, "output": name}
            for (_, store), name in zip(self.stores, self.names, strict=True)
        ]
        return {**self.settings, "width": self.width, "stores": stores}

    def read_record(self) -> dict[str, Any] | None:
        path = self.out / RUN_FILE
        if not path.exists():
            return None
        try:
            return json.loads(path.read_text())
        except ValueError as error:
            raise ScLongInputError(
                f"{path} is not readable ({error}); remove {self.out}."
            ) from None

    def differences(self, saved: dict[str, Any]) -> list[str]:
        """What differs between this run and the one recorded in ``run.json``."""
        mine = self.record()
        return [
            f"{key}: recorded {saved.get(key)!r}, now {mine[key]!r}"
            for key in (*_SETTINGS, "width", "stores")
            if saved.get(key) != mine[key]
        ]

    def prepare(self, resume: bool) -> None:
        """Check a run to resume, or create the output stores and ``run.json``."""
        saved = self.read_record()
        if saved is not None:
            if not resume:
                raise ScLongInputError(
                    f"{self.out} holds embeddings of an earlier run; pass resume=True to "
                    "continue it (its finished blocks are kept), or give another output folder "
                    "(or remove this one) to start over."
                )
            differences = self.differences(saved)
            if differences:
                raise ScLongInputError(
                    f"{self.out} holds a run with other settings, which cannot be resumed with "
                    f"these: {'; '.join(differences[:4])}. Resume with the same model, stores, "
                    "pooling, precision, batch_size and block_size, or give another output "
                    "folder."
                )
            missing = [name for name in self.names if not (self.out / name).exists()]
            if missing:
                raise ScLongInputError(
                    f"{self.out} lacks {missing}: remove the folder and start over."
                )
            return
        if self.out.exists() and any(self.out.iterdir()):
            raise ScLongInputError(
                f"{self.out} exists and holds no embed_corpus run ({RUN_FILE} missing: another "
                "folder, or a run killed while it created its stores); give an empty or new "
                "folder, or remove it."
            )
        (self.out / PROGRESS_DIR).mkdir(parents=True, exist_ok=True)
        for (_, store), name in zip(self.stores, self.names, strict=True):
            self._create_store(store, self.out / name)
        temporary = self.out / f".{RUN_FILE}.partial"
        temporary.write_text(json.dumps(self.record(), indent=2) + "\n")
        os.replace(temporary, self.out / RUN_FILE)

    def _create_store(self, store, path: Path) -> None:
        import anndata as ad
        import zarr

        from ..data._embedding import store_obs_names

        obs_names = store_obs_names(store.path)
        if len(obs_names) != store.n_obs:
            raise ScLongInputError(
                f"{store.path}: {len(obs_names)} obs_names for {store.n_obs} cells."
            )
        skeleton = ad.AnnData(obs=pd.DataFrame(index=pd.Index(obs_names)))
        key = self.settings["key"]
        skeleton.uns[key] = {
            "params": {
                **{k: self.settings[k] for k in ("pooling", "precision", "batch_size")},
                "model": self.settings["model_summary"],
                "source": str(store.path),
                "method": "SCLONG.embed_corpus",
            }
        }
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # anndata's note on the zarr format version
            skeleton.write_zarr(path)
        group = zarr.open_group(str(path), mode="r+")
        rows = max(1, min(int(self.settings["block_size"]), store.n_obs))
        array = group["obsm"].create_array(
            key,
            shape=(store.n_obs, self.width),
            chunks=(rows, self.width),
            dtype="float32",
            fill_value=np.nan,
        )
        array.attrs.update({"encoding-type": "array", "encoding-version": "0.2.0"})
        zarr.consolidate_metadata(str(path))

    # ---------------------------------------------------------------- every process
    def done_blocks(self) -> set[int]:
        """Blocks recorded in any process's log (complete lines only)."""
        done: set[int] = set()
        folder = self.out / PROGRESS_DIR
        for log in sorted(folder.glob("rank*.log")) if folder.exists() else []:
            done.update(_read_log(log.read_bytes()))
        return done

    def write(self, block: int, store: int, start: int, values: np.ndarray, rank: int) -> None:
        """Write a block's embeddings, then record it in the process's log (synced)."""
        import zarr

        if store not in self._arrays:
            key = self.settings["key"]
            self._arrays[store] = zarr.open_array(str(self.paths[store] / "obsm" / key), mode="r+")
        self._arrays[store][start : start + len(values)] = values
        if self._log is None:
            self._log = open(self.out / PROGRESS_DIR / f"rank{rank}.log", "ab")
        self._log.write(f"{block}\n".encode())
        self._log.flush()
        os.fsync(self._log.fileno())

    def close(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def mark_complete(self) -> None:
        record = {**(self.read_record() or self.record()), "complete": True}
        temporary = self.out / f".{RUN_FILE}.partial"
        temporary.write_text(json.dumps(record, indent=2) + "\n")
        os.replace(temporary, self.out / RUN_FILE)


def _read_log(data: bytes) -> list[int]:
    """Block ids of a log; a last line cut by a kill (no newline) is ignored."""
    lines = data.split(b"\n")[:-1]
    return [int(line) for line in lines if line.strip().isdigit()]


class _Progress:
    """The first process's progress bar: cells of all processes (from their logs), cells/s."""

    def __init__(self, output: _Output, cells: dict[int, int], done: set[int], enabled: bool):
        from tqdm.auto import tqdm

        self.output, self.cells, self.seen = output, cells, set(done)
        self.offsets: dict[Path, int] = {}
        total = sum(cells.values())
        initial = sum(cells[block] for block in done)
        self.bar = tqdm(
            total=total,
            initial=initial,
            desc="embed corpus",
            unit="cell",
            smoothing=0,  # the rate over the run: all processes' cells per second
            disable=not enabled,
        )
        self.start, self.last = time.monotonic(), 0.0
        self.new = 0

    def poll(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self.last < 1.0:
            return
        self.last = now
        folder = self.output.out / PROGRESS_DIR
        for log in sorted(folder.glob("rank*.log")):
            with open(log, "rb") as handle:
                handle.seek(self.offsets.get(log, 0))
                data = handle.read()
            complete = data[: data.rfind(b"\n") + 1]
            self.offsets[log] = self.offsets.get(log, 0) + len(complete)
            for block in _read_log(complete):
                if block not in self.seen:
                    self.seen.add(block)
                    self.new += self.cells[block]
                    self.bar.update(self.cells[block])

    def close(self, world_size: int) -> None:
        self.poll(force=True)
        elapsed = time.monotonic() - self.start
        shown = not self.bar.disable
        self.bar.close()
        if shown:
            print(
                f"embedded {self.new:,} cells in {elapsed:.1f} s "
                f"({self.new / max(elapsed, 1e-9):.1f} cells/s over {world_size} processes)",
                file=sys.stderr,
                flush=True,
            )


def _lightning_parts(model, corpus, output, blocks, batch_size, num_workers, pin_memory, **step):
    """The Lightning module (forward, pooling, writing) and data module of a run."""
    import lightning.pytorch as pl

    from ..data._embedding import CorpusEmbedBatches, rank_blocks

    class EmbedData(pl.LightningDataModule):
        def __init__(self):
            super().__init__()
            self.done: set[int] = set()
            self.mine = blocks[:0]

        def setup(self, stage: str) -> None:
            trainer = self.trainer
            rank, world = int(trainer.global_rank), int(trainer.world_size)
            failure, message = None, None
            if rank == 0:
                try:
                    output.prepare(step["resume"])
                except Exception as error:  # every process must learn of it, or they wait
                    failure, message = error, f"{type(error).__name__}: {error}"
            message = trainer.strategy.broadcast(message, src=0)
            if failure is not None:
                raise failure
            if message is not None:
                raise RuntimeError(f"the first process could not set up the output: {message}")
            self.done = output.done_blocks()
            trainer.strategy.barrier("embed_corpus: logs read")  # before any process writes
            self.mine = rank_blocks(blocks, self.done, rank, world)

        def predict_dataloader(self):
            dataset = CorpusEmbedBatches(corpus, self.mine, batch_size)
            return torch.utils.data.DataLoader(
                dataset, batch_size=None, num_workers=num_workers, pin_memory=pin_memory
            )

    class EmbedStep(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.sclong = model.module
            self.pending: list[np.ndarray] = []
            self.n_forwarded = 0
            self.progress: _Progress | None = None

        def on_predict_start(self) -> None:
            if self.trainer.global_rank == 0:
                cells = {int(b): int(stop - start) for _, start, stop, b in blocks.tolist()}
                self.progress = _Progress(output, cells, data.done, step["progress_bar"])

        def predict_step(self, batch: dict, batch_idx: int) -> None:
            block, store, first, end, last = batch["block"].tolist()
            x = batch["X"]
            with inference_autocast(step["precision"], x.device, self.sclong.network):
                outputs = self.sclong.inference(x, mask=False)
            pooled = model._pooled(outputs, step["pooling"], self.sclong.config.n_genes)
            self.pending.append(pooled.float().cpu().numpy())
            self.n_forwarded += end - first
            if last:
                values = np.concatenate(self.pending)
                self.pending = []
                start = end - len(values)
                output.write(block, store, start, values, int(self.trainer.global_rank))
            if self.progress is not None:
                self.progress.poll(force=bool(last))

    data = EmbedData()
    return EmbedStep(), data


class EmbedCorpusMixin:
    """:meth:`embed_corpus`: the cell embeddings of an atlas on disk, over many processes."""

    def embed_corpus(
        self,
        corpus: ScLongCorpus | str | os.PathLike | list,
        out: str | os.PathLike,
        *,
        batch_size: int = 16,
        block_size: int = 1024,
        pooling: Pooling = DEFAULT_POOLING,
        precision: QueryPrecision | None = None,
        key: str = "X_sclong",
        resume: bool = True,
        accelerator: str = "auto",
        devices: int | list[int] | str = "auto",
        num_nodes: int = 1,
        strategy: str | object = "auto",
        num_workers: int = 0,
        min_coverage: float = 0.0,
        enable_progress_bar: bool = True,
        **trainer_kwargs,
    ) -> pd.DataFrame:
        """Embed every cell of a corpus of AnnData stores, in order, resumably, over processes.

        The corpus (:class:`~sclong_scverse.data.ScLongCorpus`: ``.h5ad`` files and zarr
        stores, any genes and id types, counts normalised per batch as
        :func:`~sclong_scverse.pp.normalize` does) is read in store order, in blocks of
        ``block_size`` consecutive cells shared round robin by the processes Lightning runs
        (``devices`` x ``num_nodes``; launch them with ``torchrun`` or ``srun``, or let
        Lightning start them from a script). Each block is cut into mini-batches of
        ``batch_size`` cells, embedded as :meth:`get_latent_representation` embeds (the same
        pooling and precision; a bfloat16-held model runs as ``"auto"``), and written to the
        output folder; a cell's embedding does not depend on the number of processes.

        Reads the stores (never the model's registered AnnData); writes, in ``out``, one
        AnnData zarr store per input store (``<store name>.zarr``: the input's ``obs_names``,
        the embeddings in ``obsm[key]``, the parameters in ``uns[key]["params"]``; read it
        with ``anndata.read_zarr``), ``run.json`` (the settings) and ``progress/`` (the
        blocks done). A store listed twice is embedded once.

        Parameters
        ----------
        corpus
            A :class:`~sclong_scverse.data.ScLongCorpus`, or paths / folders / glob patterns of
            stores (opened with the corpus defaults).
        out
            The output folder (new or empty, or the folder of a run to resume). With several
            nodes it must be on a file system every node sees.
        batch_size
            Cells per forward pass and process.
        block_size
            Consecutive cells per block: the unit shared between processes, written (one zarr
            chunk) and recorded as done. A killed run loses at most the blocks in progress.
        pooling
            Over genes, as :meth:`get_latent_representation` (default ``"feature_sum"``).
        precision
            ``"32"``, ``"bf16"``, ``"16"`` (GPUs) or ``"auto"``, as the queries; ``None``:
            float32, or ``"auto"`` for a bfloat16-held model (bfloat16 where the device has
            bfloat16 instructions, else float32 with the weights widened block by block).
        key
            ``obsm`` key (and ``uns`` key of the parameters) of the output stores.
        resume
            Continue the run recorded in ``out`` (default): blocks already written are not
            computed again; the settings (model, stores, pooling, precision, batch and block
            sizes) must be the same, the number of processes may differ. ``False``: refuse an
            ``out`` that holds a run.
        accelerator, devices, num_nodes, strategy
            Lightning settings, e.g. ``accelerator="gpu", devices=8, num_nodes=4,
            strategy="ddp"`` (every process holds the whole model).
        num_workers
            Reader processes per process.
        min_coverage
            Refuse stores with fewer than this fraction of their genes on the model's genes.
        enable_progress_bar
            Show the first process's progress bar: cells of all processes, global cells/s.
        **trainer_kwargs
            Passed to :class:`lightning.pytorch.Trainer`.

        Returns
        -------
        One row per distinct store: ``store`` (input path), ``output`` (its zarr store),
        ``n_obs``, ``n_done_before`` (cells already embedded when the call started) and
        ``n_embedded`` (cells embedded by this call, all processes).
        """
        import lightning.pytorch as pl

        from ..data._embedding import distinct_stores, embedding_blocks
        from ._pretrain import as_corpus

        if pooling not in POOLINGS:
            raise ScLongInputError(f"pooling must be one of {POOLINGS}, not {pooling!r}.")
        if int(batch_size) < 1 or int(block_size) < 1:
            raise ScLongInputError("batch_size and block_size must be at least 1.")
        precision = self._query_precision(precision)
        corpus = as_corpus(corpus)
        positions = self.module.var_positions.detach().cpu().numpy()
        report = corpus.bind(self.vocabulary, positions, min_coverage=min_coverage)
        logger.info("corpus: %s", "\n".join(report))
        blocks = embedding_blocks(corpus, block_size)
        if len(blocks) == 0:
            raise ScLongInputError("the corpus has no cells; nothing to embed.")
        stores = [(index, corpus.stores[index]) for index in distinct_stores(corpus)]
        config = self.module.config
        settings = {
            "format": FORMAT,
            "model": model_fingerprint(self.module, config.to_dict()),
            "model_summary": self._model_summary_string,
            "pooling": pooling,
            "precision": str(precision or "32"),
            "batch_size": int(batch_size),
            "block_size": int(block_size),
            "key": key,
        }
        output = _Output(Path(out), settings, stores, self._embedding_width(pooling))
        before = _finished(output, resume)
        if before is not None:  # a complete run with these settings: nothing to compute
            return _summary(output, blocks, before, before)
        pin_memory = torch.cuda.is_available() and accelerator != "cpu"
        step, data = _lightning_parts(
            self,
            corpus,
            output,
            blocks,
            int(batch_size),
            int(num_workers),
            pin_memory,
            resume=bool(resume),
            precision=precision,
            pooling=pooling,
            progress_bar=bool(enable_progress_bar),
        )
        trainer = pl.Trainer(
            accelerator=accelerator,
            devices=devices,
            num_nodes=num_nodes,
            strategy=strategy,
            logger=trainer_kwargs.pop("logger", False),
            enable_checkpointing=False,
            enable_progress_bar=False,  # the first process shows all processes' progress
            enable_model_summary=trainer_kwargs.pop("enable_model_summary", False),
            use_distributed_sampler=False,  # the blocks are shared out by the data module
            **trainer_kwargs,
        )
        self.module.eval()
        try:
            with warnings.catch_warnings():
                for message in _LIGHTNING_NOISE:
                    warnings.filterwarnings("ignore", message=message)
                trainer.predict(step, datamodule=data, return_predictions=False)
            trainer.strategy.barrier("embed_corpus: done")
        finally:
            output.close()
            self.module.eval()
        if step.progress is not None:
            step.progress.close(int(trainer.world_size))
        after = output.done_blocks()
        if trainer.global_rank == 0 and len(after) == len(blocks):
            output.mark_complete()
        self.embed_corpus_forwarded_ = step.n_forwarded  # this process's cells (diagnostics)
        return _summary(output, blocks, data.done, after)

    def _embedding_width(self, pooling: str) -> int:
        """Width of the cell embeddings of ``pooling`` (from the pooling itself, on zeros)."""
        config = self.module.config
        n_tokens = config.n_tokens
        outputs = {
            "decodings": torch.zeros(1, n_tokens, config.dim),
            "prediction": torch.zeros(1, n_tokens),
            "predicted": torch.ones(1, n_tokens, dtype=torch.bool),
        }
        return int(self._pooled(outputs, pooling, config.n_genes).shape[-1])


def _finished(output: _Output, resume: bool) -> set[int] | None:
    """The blocks of a complete run recorded in ``out`` with the same settings, else ``None``."""
    saved = output.read_record()
    if not resume or saved is None or not saved.get("complete") or output.differences(saved):
        return None
    return output.done_blocks()


def _summary(output: _Output, blocks: np.ndarray, before: set[int], after: set[int]):
    rows = []
    for (index, store), name in zip(output.stores, output.names, strict=True):
        mine = blocks[blocks[:, 0] == index]
        cells = dict(zip(mine[:, 3].tolist(), (mine[:, 2] - mine[:, 1]).tolist(), strict=True))
        n_before = sum(n for block, n in cells.items() if block in before)
        n_after = sum(n for block, n in cells.items() if block in after)
        rows.append(
            {
                "store": str(store.path),
                "output": str(output.out / name),
                "n_obs": store.n_obs,
                "n_done_before": n_before,
                "n_embedded": n_after - n_before,
            }
        )
    return pd.DataFrame(rows)
