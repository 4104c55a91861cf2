from __future__ import annotations

import math
import time
from typing import Literal

import torch
from scvi import REGISTRY_KEYS
from scvi.train import TrainingPlan

from ._module import ScLongModule


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
        if (
            self.redraw_interval
            and self.global_step
            and self.global_step % self.redraw_interval == 0
            and self.global_step != self._last_redraw  # once per step with gradient accumulation
        ):
            self.module.network.redraw_projection_matrices()
            self._last_redraw = self.global_step
        loss = super().training_step(batch, batch_idx)
        self.log("lr", self.optimizers().param_groups[0]["lr"], on_step=False, on_epoch=True)
        self._log_cells_per_second(int(batch[REGISTRY_KEYS.X_KEY].shape[0]))
        return loss

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
