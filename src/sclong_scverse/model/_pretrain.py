"""Pretraining on a corpus streamed from disk: Lightning over processes and nodes, resumable."""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Self

import anndata as ad
import numpy as np
import pandas as pd
from scipy import sparse

from .._settings import quiet_libraries
from ..errors import ScLongFileNotFound, ScLongInputError, ScLongTypeError

if TYPE_CHECKING:
    from ..data import ScLongCorpus
    from ..genes import GeneVocabulary
    from ..nn import ScLongConfig

logger = logging.getLogger(__name__)

#: Lightning warnings that do not apply to corpus pretraining
_LIGHTNING_NOISE = (
    ".*defined a `validation_step` but have no `val_dataloader`.*",  # scvi's plan has one
    ".*`IterableDataset` has `__len__` defined.*",  # workers stride over batches: exact
    ".*isinstance\\(treespec, LeafSpec\\)` is deprecated.*",
)


def as_corpus(corpus, **corpus_kwargs) -> ScLongCorpus:
    """A :class:`~sclong_scverse.data.ScLongCorpus` from a corpus or from paths."""
    from ..data import ScLongCorpus

    if isinstance(corpus, ScLongCorpus):
        if corpus_kwargs:
            raise ScLongTypeError(
                f"{sorted(corpus_kwargs)} apply when paths are given; this corpus is already "
                "opened with its own settings."
            )
        return corpus
    return ScLongCorpus(corpus, **corpus_kwargs)


def model_from_corpus(
    cls,
    corpus,
    config="tiny",
    vocabulary=None,
    n_template_cells: int = 16,
    **model_kwargs,
) -> PretrainMixin:
    """A new model whose genes are a corpus' vocabulary (see :meth:`SCLONG.from_corpus`)."""
    from ..genes import GeneVocabulary

    corpus = as_corpus(corpus)
    if vocabulary is None:
        vocabulary = corpus.default_vocabulary()
    elif not isinstance(vocabulary, GeneVocabulary):
        vocabulary = GeneVocabulary(list(vocabulary))
    corpus.bind(vocabulary, np.arange(len(vocabulary)))
    values = corpus.first_cells(n_template_cells)
    if len(values) == 0:
        raise ScLongInputError("the corpus has no cell with counts; nothing to set a model up on.")
    template = ad.AnnData(
        X=sparse.csr_matrix(values), var=pd.DataFrame(index=pd.Index(vocabulary.genes))
    )
    template.obs_names = [f"template_{i}" for i in range(template.n_obs)]
    template.uns["sclong"] = {
        "params": {
            "method": "scl.data.ScLongCorpus",
            "target_sum": corpus.target_sum,
            "max_value": corpus.max_value,
            "output": "X",
        }
    }
    with warnings.catch_warnings():
        # normalised over each store's own genes, as queries are: on the model's genes alone
        # a cell's maximum may be below max_value, which setup_anndata would warn about
        warnings.filterwarnings("ignore", message=".*no checked cell reaches the maximum.*")
        cls.setup_anndata(template)
    return cls(template, config=config, vocabulary=vocabulary, **model_kwargs)


def _strategy(strategy, accelerator: str, gradient_checkpointing: bool):
    """Lightning strategy: ``"fsdp"`` wraps each Performer layer (and checkpoints it)."""
    if strategy != "fsdp":
        return strategy
    if accelerator == "cpu":
        raise ScLongInputError(
            "strategy='fsdp' needs GPUs: Lightning runs FSDP on CUDA devices only. On CPUs "
            "use strategy='ddp' (every process holds the whole model)."
        )
    from lightning.pytorch.strategies import FSDPStrategy

    from ..nn.performer import PerformerLayer

    return FSDPStrategy(
        auto_wrap_policy={PerformerLayer},
        activation_checkpointing_policy={PerformerLayer} if gradient_checkpointing else None,
        sharding_strategy="FULL_SHARD",
        state_dict_type="full",
    )


def pretrain_on_corpus(
    model: PretrainMixin,
    corpus,
    *,
    max_epochs: int,
    max_steps: int,
    batch_size: int,
    lr: float,
    accelerator: str,
    devices,
    num_nodes: int,
    strategy,
    precision,
    accumulate_grad_batches: int,
    gradient_clip_val: float | None,
    checkpoint_dir,
    checkpoint_every_n_steps: int | None,
    resume,
    num_workers: int,
    redraw_interval,
    plan_kwargs: dict | None,
    gradient_checkpointing: bool,
    min_coverage: float,
    enable_progress_bar: bool,
    **trainer_kwargs,
) -> pd.DataFrame:
    """See :meth:`SCLONG.pretrain`."""
    import lightning.pytorch as pl
    from lightning.pytorch.callbacks import ModelCheckpoint

    from ..data import CorpusDataModule
    from ..module._progress import StepProgressBar
    from ..module._training_plan import ScLongPretrainingPlan

    corpus = as_corpus(corpus)
    positions = model.module.var_positions.detach().cpu().numpy()
    report = corpus.bind(model.vocabulary, positions, min_coverage=min_coverage)
    logger.info("corpus: %s", "\n".join(report))
    module = model.module
    datamodule = CorpusDataModule(
        corpus,
        batch_size,
        num_workers=num_workers,
        mask_fraction=module.mask_fraction,
        replace_fraction=module.replace_fraction,
        pin_memory=accelerator not in ("cpu",),
    )
    if redraw_interval == "auto":
        redraw_interval = None if model.is_pretrained else 1000
    for performer in module.network.performers:
        performer.gradient_checkpointing = bool(gradient_checkpointing)
    world_guess = 1
    if isinstance(devices, int) and devices > 0:
        world_guess = devices * max(int(num_nodes), 1)
    steps = max_steps
    if steps is None or steps < 0:
        per_epoch = corpus.n_batches(batch_size, world_guess) / max(accumulate_grad_batches, 1)
        steps = int(max_epochs * per_epoch)
    plan_kwargs = {"lr": lr, "redraw_interval": redraw_interval, **(plan_kwargs or {})}
    plan_kwargs.setdefault("warmup_steps", min(100, max(1, int(0.1 * steps))))
    plan = ScLongPretrainingPlan(module, seed=corpus.seed, **plan_kwargs)

    callbacks = list(trainer_kwargs.pop("callbacks", None) or [])
    if checkpoint_dir is not None:
        callbacks.append(
            ModelCheckpoint(
                dirpath=str(checkpoint_dir),
                filename="step{step:08d}",
                auto_insert_metric_name=False,
                every_n_train_steps=checkpoint_every_n_steps or None,
                save_top_k=-1 if checkpoint_every_n_steps else 1,
                save_last=True,
            )
        )
    elif resume is not None and str(resume) in ("last", "auto"):
        raise ScLongInputError(f"resume={str(resume)!r} needs the checkpoint_dir of the run.")
    if enable_progress_bar:
        callbacks.append(StepProgressBar())
    with quiet_libraries():  # the accelerator lines are logged when the trainer is built
        trainer = pl.Trainer(
            max_epochs=max_epochs,
            max_steps=max_steps if max_steps is not None else -1,
            accelerator=accelerator,
            devices=devices,
            num_nodes=num_nodes,
            strategy=_strategy(strategy, accelerator, gradient_checkpointing),
            precision=precision,
            accumulate_grad_batches=accumulate_grad_batches,
            gradient_clip_val=gradient_clip_val,
            callbacks=callbacks,
            enable_progress_bar=enable_progress_bar,
            enable_checkpointing=checkpoint_dir is not None,
            default_root_dir=str(checkpoint_dir) if checkpoint_dir is not None else None,
            logger=trainer_kwargs.pop("logger", False),
            use_distributed_sampler=False,  # the corpus splits the batches over processes
            enable_model_summary=trainer_kwargs.pop("enable_model_summary", False),
            num_sanity_val_steps=0,
            **trainer_kwargs,
        )
    ckpt_path = None
    if resume is not None and str(resume) == "auto":
        if checkpoint_dir is None:
            raise ScLongInputError("resume='auto' needs the checkpoint_dir of the run.")
        # a requeued job: continue from the last checkpoint when there is one
        resume = "last" if (Path(checkpoint_dir) / "last.ckpt").exists() else None
    if resume is not None:
        ckpt_path = "last" if str(resume) == "last" else str(resume)
        if ckpt_path == "last":
            last = Path(checkpoint_dir) / "last.ckpt"
            if not last.exists():
                raise ScLongFileNotFound(
                    f"resume='last': no last.ckpt in {checkpoint_dir} (is it the folder the "
                    "interrupted run wrote its checkpoints to?)."
                )
            ckpt_path = str(last)
        elif not Path(ckpt_path).exists():
            raise ScLongFileNotFound(f"resume: no checkpoint at {ckpt_path}.")
        from ._checkpoints import verify_resume_checkpoint

        # before Lightning reads anything: ours, finite, as written, for this configuration
        verify_resume_checkpoint(ckpt_path, module)
    module.train()
    try:
        with quiet_libraries(), warnings.catch_warnings():
            for message in _LIGHTNING_NOISE:
                warnings.filterwarnings("ignore", message=message)
            # the checkpoint holds tensors and plain values only: loaded without unpickling code
            trainer.fit(plan, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
    finally:
        module.eval()
    losses = pd.DataFrame(plan.step_losses, columns=["step", "masked_mse", "lr"])
    history = dict(getattr(model, "history_", None) or {})
    history["pretrain_masked_mse_step"] = losses.set_index("step")[["masked_mse"]]
    model.history_ = history
    model.is_trained_ = True
    model.pretrain_report_ = report
    return losses


class PretrainMixin:
    """Pretraining of :class:`~sclong_scverse.SCLONG` on a corpus of AnnData stores on disk."""

    @classmethod
    def from_corpus(
        cls,
        corpus,
        config: str | ScLongConfig | dict = "tiny",
        vocabulary: GeneVocabulary | Sequence[str] | None = None,
        **kwargs,
    ) -> Self:
        """A new model to pretrain on a corpus of AnnData stores (:meth:`pretrain`).

        The model's genes are ``vocabulary`` (default: the union of the stores' genes, see
        :meth:`sclong_scverse.data.ScLongCorpus.default_vocabulary`); it is set up on a small
        template AnnData holding the corpus' first cells on those genes (``model.adata``; no
        cell is loaded beyond those).

        Parameters
        ----------
        corpus
            A :class:`~sclong_scverse.data.ScLongCorpus`, or the stores (paths, folders, globs).
        config
            Preset name, :class:`~sclong_scverse.nn.ScLongConfig` or its dict.
        vocabulary
            The model's genes, e.g. the official release's vocabulary.
        **kwargs
            Passed to :class:`SCLONG` (``gene_graph``, ``gene2vec``, ``mask_fraction`` ...).

        Returns
        -------
        The new, untrained model.
        """
        return model_from_corpus(cls, corpus, config=config, vocabulary=vocabulary, **kwargs)

    def pretrain(
        self,
        corpus,
        max_epochs: int = 1,
        batch_size: int = 8,
        lr: float = 1e-3,
        *,
        max_steps: int = -1,
        accelerator: str = "auto",
        devices: int | list[int] | str = "auto",
        num_nodes: int = 1,
        strategy: str | object = "auto",
        precision: str | int | None = None,
        accumulate_grad_batches: int = 1,
        gradient_clip_val: float | None = 1.0,
        checkpoint_dir: str | os.PathLike | None = None,
        checkpoint_every_n_steps: int | None = None,
        resume: str | os.PathLike | None = None,
        num_workers: int = 0,
        redraw_interval: int | Literal["auto"] | None = "auto",
        plan_kwargs: dict | None = None,
        gradient_checkpointing: bool = False,
        min_coverage: float = 0.0,
        enable_progress_bar: bool = True,
        **trainer_kwargs,
    ) -> pd.DataFrame:
        """Pretrain by masked-expression modelling on a corpus streamed from disk.

        The corpus (:class:`~sclong_scverse.data.ScLongCorpus`: many ``.h5ad`` / zarr stores,
        any genes and id types) is aligned to this model's genes, normalised per batch when it
        holds counts and read a mini-batch at a time; Lightning spreads the steps over
        ``devices`` x ``num_nodes`` processes. Launch one process per device yourself
        (``torchrun``, SLURM's ``srun``: Lightning reads their environment) and call this in
        each; the docs' "Pretraining at scale" page has the recipe.

        The objective is :meth:`train`'s, with masks drawn per cell from the corpus seed, the
        epoch and the cell, and each step's loss normalised over the chosen positions of all
        processes: with the same global batch (``batch_size`` x processes) one process and
        many follow the same loss curve (:class:`~sclong_scverse.module.ScLongPretrainingPlan`).

        Reads the stores; writes ``model.history["pretrain_masked_mse_step"]`` (the masked MSE
        of every step, all processes together) and, with ``checkpoint_dir``, Lightning
        checkpoints there (``last.ckpt`` and, with ``checkpoint_every_n_steps``, one per that
        many steps) holding the model, optimiser, schedule, corpus position and random state,
        sealed with the network configuration and a sha256 of their content.

        Parameters
        ----------
        corpus
            A :class:`~sclong_scverse.data.ScLongCorpus`, or paths / folders / glob patterns
            of stores (opened with the corpus defaults: ``X``, values detected, seed 0).
        max_epochs, max_steps
            Passes over the corpus; or optimiser steps (``-1``: no limit).
        batch_size
            Cells per step and process (the global batch is ``batch_size`` x processes x
            ``accumulate_grad_batches``).
        lr
            Peak learning rate (linear warm-up, then cosine decay over the run).
        accelerator, devices, num_nodes, strategy
            Lightning settings: e.g. ``accelerator="gpu", devices=8, num_nodes=4,
            strategy="ddp"``. ``strategy="fsdp"`` shards parameters, gradients and optimiser
            state over the processes, one Performer layer at a time (GPUs only).
        precision
            Lightning precision, e.g. ``"bf16-mixed"`` on GPUs.
        accumulate_grad_batches, gradient_clip_val
            Gradient accumulation and gradient-norm clipping.
        checkpoint_dir, checkpoint_every_n_steps
            Where and how often to write checkpoints (``None``: at the end only).
        resume
            ``"last"`` (the ``last.ckpt`` of ``checkpoint_dir``) or a checkpoint path: continue
            an interrupted run exactly (same corpus, seed, batch size and process count);
            ``"auto"``: ``"last"`` when ``checkpoint_dir`` has one, else start (for jobs that
            are requeued). Verified first (no code is unpickled: ``weights_only=True``): the
            file must be a checkpoint written by this method for this configuration, equal to
            the checksum it carries, its weights and optimiser state finite; a checkpoint
            written before checkpoints carried a checksum resumes with a warning.
        num_workers
            Reader processes per training process.
        redraw_interval
            Redraw the FAVOR+ features every this many steps (same features on every process);
            ``"auto"``: 1,000 for a new model, never for pretrained weights.
        plan_kwargs
            Passed to :class:`~sclong_scverse.module.ScLongPretrainingPlan`.
        gradient_checkpointing
            Recompute each Performer layer in the backward pass (see :meth:`train`).
        min_coverage
            Refuse stores with fewer than this fraction of their genes on the model's genes.
        enable_progress_bar
            Show a progress bar per step with the global cells/s and the masked MSE.
        **trainer_kwargs
            Passed to :class:`lightning.pytorch.Trainer`.

        Returns
        -------
        The masked MSE of every step (``step``, ``masked_mse``, ``lr``) of this process.

        Raises
        ------
        FileNotFoundError
            ``resume`` names a checkpoint that does not exist.
        ModelIntegrityError
            The ``resume`` checkpoint is not readable, not one written by this method, holds
            NaN or infinite values, differs from its checksum, or belongs to another
            configuration (one line naming the file; nothing was trained).
        """
        return pretrain_on_corpus(
            self,
            corpus,
            max_epochs=max_epochs,
            max_steps=max_steps,
            batch_size=batch_size,
            lr=lr,
            accelerator=accelerator,
            devices=devices,
            num_nodes=num_nodes,
            strategy=strategy,
            precision=precision,
            accumulate_grad_batches=accumulate_grad_batches,
            gradient_clip_val=gradient_clip_val,
            checkpoint_dir=checkpoint_dir,
            checkpoint_every_n_steps=checkpoint_every_n_steps,
            resume=resume,
            num_workers=num_workers,
            redraw_interval=redraw_interval,
            plan_kwargs=plan_kwargs,
            gradient_checkpointing=gradient_checkpointing,
            min_coverage=min_coverage,
            enable_progress_bar=enable_progress_bar,
            **trainer_kwargs,
        )
