from __future__ import annotations

import math
from typing import Literal

import torch
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
        the learning rate.
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
        return loss
