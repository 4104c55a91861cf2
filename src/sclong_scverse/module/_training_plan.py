from __future__ import annotations

import math
import time
from typing import Literal

import torch
from scvi import REGISTRY_KEYS
from scvi.train import TrainingPlan

from .._batch_keys import CHOSEN_KEY, REPLACED_KEY
from ..io._safe import sha256_plain
from ._module import ScLongModule

#: the entry of a pretraining checkpoint that records its checksum and configuration
CHECKPOINT_RECORD_KEY = "sclong_checkpoint"
#: the format written in that entry
CHECKPOINT_FORMAT = "sclong-scverse-checkpoint/1"


def checkpoint_digest(checkpoint: dict, record: dict) -> str:
    """The sha256 of a Lightning checkpoint's content and of its record's format and configuration.

    Every entry but :data:`CHECKPOINT_RECORD_KEY` is digested (weights, optimiser and schedule
    state, loop and corpus positions, random state: :func:`~sclong_scverse.io._safe.sha256_plain`),
    together with the record's ``format`` and ``config``.

    Parameters
    ----------
    checkpoint
        The checkpoint dict, as Lightning writes it or as it is read back.
    record
        The checkpoint's record (``format``, ``config``).

    Returns
    -------
    The hexadecimal sha256.
    """
    content = {key: value for key, value in checkpoint.items() if key != CHECKPOINT_RECORD_KEY}
    return sha256_plain([content, record.get("format"), record.get("config")])


class ScLongTrainingPlan(TrainingPlan):
    """scvi-tools training plan for scLong: AdamW/Adam, linear warm-up then cosine decay.

    Parameters
    ----------
    module
        The :class:`~sclong_scverse.module.ScLongModule`.
    optimizer
        ``"AdamW"`` (default) or ``"Adam"`` (the original's choice).
    lr
        Peak learning rate (after warm-up).
    weight_decay
        Weight decay.
    warmup_steps
        Optimiser steps of linear warm-up from 0 to ``lr``.
    min_lr_ratio
        The cosine decays to ``min_lr_ratio * lr`` at the last step (``0``: to zero).
    redraw_interval
        Draw new FAVOR+ random features every this many training steps (pretraining from
        scratch); ``None`` keeps them fixed (fine-tuning, loaded weights).
    **kwargs
        Passed to :class:`scvi.train.TrainingPlan`.
    """

    def __init__(
        self,
        module: ScLongModule,
        *,
        optimizer: Literal["Adam", "AdamW"] = "AdamW",
        lr: float = 1e-3,
        weight_decay: float = 0.01,
        warmup_steps: int = 100,
        min_lr_ratio: float = 0.0,
        redraw_interval: int | None = None,
        **kwargs,
    ):
        super().__init__(
            module, optimizer=optimizer, lr=lr, weight_decay=weight_decay, eps=1e-8, **kwargs
        )
        self.warmup_steps = warmup_steps
        self.min_lr_ratio = min_lr_ratio
        self.redraw_interval = redraw_interval
        self._last_redraw = -1
        self._step_started: float | None = None  # for the progress bar's cells/s
        self._cells_per_s: float | None = None

    def on_train_epoch_start(self) -> None:
        """Start the cells/s clock again (the gap since the last step held validation)."""
        self._step_started = None

    def _lr_factor(self, step: int) -> float:
        total = max(int(self.trainer.estimated_stepping_batches), 1)
        if step < self.warmup_steps:
            return (step + 1) / (self.warmup_steps + 1)
        progress = min((step - self.warmup_steps) / max(total - self.warmup_steps, 1), 1.0)
        cosine = 0.5 * (1.0 + math.cos(math.pi * progress))
        return self.min_lr_ratio + (1.0 - self.min_lr_ratio) * cosine

    def configure_optimizers(self):
        """AdamW (or Adam) with a per-step warm-up + cosine learning-rate schedule."""
        params = [p for p in self.module.parameters() if p.requires_grad]
        optimizer = self.get_optimizer_creator()(params)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, self._lr_factor)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step", "frequency": 1},
        }

    def training_step(self, batch, batch_idx):
        """One masked-expression step; redraws random features when asked to.

        Parameters
        ----------
        batch
            The mini-batch from the scvi-tools data loader.
        batch_idx
            Index of the mini-batch in the epoch.

        Returns
        -------
        The loss of :meth:`scvi.train.TrainingPlan.training_step`. Redraws the FAVOR+ random
        features first every ``redraw_interval`` optimiser steps (never at step 0); also logs
        the learning rate and, in the progress bar, the cells per second.
        """
        self._redraw_if_due()
        loss = super().training_step(batch, batch_idx)
        self.log("lr", self.optimizers().param_groups[0]["lr"], on_step=False, on_epoch=True)
        self._log_cells_per_second(int(batch[REGISTRY_KEYS.X_KEY].shape[0]))
        return loss

    def _redraw_if_due(self) -> None:
        """Redraw the FAVOR+ features every ``redraw_interval`` optimiser steps (not at 0)."""
        step = self.global_step
        if not (self.redraw_interval and step and step % self.redraw_interval == 0):
            return
        if step == self._last_redraw:  # once per step with gradient accumulation
            return
        self.module.network.redraw_projection_matrices(self._redraw_generator())
        self._last_redraw = step

    def _redraw_generator(self) -> torch.Generator | None:
        """The generator of a redraw (``None``: torch's global one)."""
        return None

    def _log_cells_per_second(self, n_cells: int) -> None:
        """Show the training speed (cells/s, smoothed) in the progress bar; not in history."""
        now = time.perf_counter()
        if self._step_started is not None:
            rate = n_cells / max(now - self._step_started, 1e-9)
            smoothed = self._cells_per_s
            self._cells_per_s = rate if smoothed is None else 0.8 * smoothed + 0.2 * rate
            self.log(
                "cells/s",
                self._cells_per_s,
                on_step=True,
                on_epoch=False,
                prog_bar=True,
                logger=False,
                batch_size=n_cells,
            )
        self._step_started = now


class ScLongPretrainingPlan(ScLongTrainingPlan):
    """Training plan for pretraining on a streamed corpus, over one or many processes.

    Differences from :class:`ScLongTrainingPlan`, all for runs spread over processes and
    resumed after a crash:

    - the masks come with the batch (drawn per cell by the corpus from ``(seed, epoch, cell)``;
      see :class:`sclong_scverse.data.ScLongCorpus`), so they do not depend on how cells are
      split over processes;
    - the loss of each process is normalised by the number of chosen positions of the whole
      step, summed over processes, so that the gradient averaged by DDP is exactly the gradient
      of one process seeing all the cells (the original normalises per process);
    - FAVOR+ random features are redrawn from a generator seeded by ``(seed, step)``: every
      process draws the same features, and a resumed run the same as an uninterrupted one;
    - the global masked MSE of every optimisation micro-step is kept in :attr:`step_losses`
      (``global_step``, loss, learning rate) and the torch random state travels in the
      checkpoints.

    Parameters
    ----------
    module
        The :class:`~sclong_scverse.module.ScLongModule`.
    seed
        Seed of the random-feature redraws.
    **kwargs
        Passed to :class:`ScLongTrainingPlan`.
    """

    def __init__(self, module: ScLongModule, *, seed: int = 0, **kwargs):
        super().__init__(module, **kwargs)
        self.seed = int(seed)
        self.step_losses: list[tuple[int, float, float]] = []

    def _redraw_generator(self) -> torch.Generator:
        """Seeded by (seed, step): every process draws the same features, resumed runs too."""
        return torch.Generator().manual_seed(self.seed * 1_000_003 + self.global_step)

    def _masked_outputs(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        module = self.module
        tokens = module.to_tokens(batch[REGISTRY_KEYS.X_KEY].float())
        chosen = module.to_tokens(batch[CHOSEN_KEY].float()) > 0
        replaced = module.to_tokens(batch[REPLACED_KEY].float()) > 0
        outputs = module.masked_forward(tokens, chosen, replaced)
        return {**outputs, "tokens": tokens, "chosen": chosen, "replaced": replaced}

    def training_step(self, batch, batch_idx):
        """One masked-expression step with the step-wide normalisation (see the class notes).

        Parameters
        ----------
        batch
            A batch of :class:`sclong_scverse.data.CorpusBatches`.
        batch_idx
            Index of the batch in the epoch.

        Returns
        -------
        The loss whose gradient, averaged over processes, is that of the whole step.
        """
        self._redraw_if_due()
        outputs = self._masked_outputs(batch)
        chosen = outputs["chosen"]
        if outputs.get("predicted") is not None:
            chosen = chosen & outputs["predicted"]
        squared = ((outputs["prediction"].float() - outputs["tokens"]) ** 2 * chosen).sum()
        strategy = self.trainer.strategy
        n_chosen = strategy.reduce(chosen.sum().float().detach(), reduce_op="sum")
        world = max(int(self.trainer.world_size), 1)
        loss = squared * world / n_chosen.clamp(min=1.0)
        step_loss = strategy.reduce(squared.detach(), reduce_op="sum") / n_chosen.clamp(min=1.0)
        n_cells = int(batch[REGISTRY_KEYS.X_KEY].shape[0])
        self.log(
            "train_loss",
            step_loss,
            on_step=True,
            on_epoch=True,
            prog_bar=True,
            batch_size=n_cells,
            rank_zero_only=True,
        )
        learning_rate = self.optimizers().param_groups[0]["lr"]
        self.step_losses.append((int(self.global_step), float(step_loss), float(learning_rate)))
        self._log_cells_per_second(n_cells * world)
        return loss

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """Keep the random state with the checkpoint, and seal it with a checksum.

        Adds the torch random state (CPU and, when used, CUDA) and, last (Lightning calls this
        hook after every other entry is in place), :data:`CHECKPOINT_RECORD_KEY`: the
        network configuration and the sha256 of the whole checkpoint
        (:func:`checkpoint_digest`), which a resume verifies before Lightning reads anything
        (:func:`sclong_scverse.model._checkpoints.verify_resume_checkpoint`).
        """
        checkpoint["sclong_rng"] = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            checkpoint["sclong_rng"]["cuda"] = torch.cuda.get_rng_state_all()
        record = {"format": CHECKPOINT_FORMAT, "config": self.module.config.to_dict()}
        record["sha256"] = checkpoint_digest(checkpoint, record)
        checkpoint[CHECKPOINT_RECORD_KEY] = record

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """Restore the random state saved by :meth:`on_save_checkpoint`."""
        state = checkpoint.get("sclong_rng") or {}
        if "torch" in state:
            torch.set_rng_state(state["torch"])
        if "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])
