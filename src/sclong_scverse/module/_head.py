"""What every downstream head's module and training share: context tensors, the Lightning plan.

A downstream head (annotation, genetic or chemical perturbation, drug response, drug
combination) is a torch module whose :meth:`HeadModuleMixin.training_loss` turns one mini-batch
(a dict of tensors, one row per training example) into the mean loss of its examples. Tensors
that every example reads (a cell-line feature table, the drugs' packed graphs, a pool of
control cells) are the module's *context*: non-persistent buffers, so that Lightning moves them
to the accelerator with the module and they are never saved with the weights.

:class:`HeadTrainingPlan` is the Lightning module that scvi-tools' ``TrainRunner`` runs for
every head: Adam (or AdamW) over the trainable parameters, ``train_loss`` and
``validation_loss`` logged per epoch (``model.history``), examples/s in the progress bar.
:class:`RestoreBestWeights` keeps the weights of the epoch with the lowest validation loss.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Literal

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback
from torch import nn

from ..errors import ScLongInputError

#: The metric the heads' early stopping and best-epoch selection watch.
VALIDATION_LOSS = "validation_loss"
_CONTEXT_PREFIX = "context_"


class HeadModuleMixin:
    """Context tensors and the training-loss contract of a downstream head's module."""

    def set_context(self: nn.Module, **tensors: torch.Tensor) -> None:
        """Attach tensors that every example reads (replacing earlier ones of the same name).

        They become non-persistent buffers (moved with the module, not in its state dict),
        readable as ``module.context("name")``.

        Parameters
        ----------
        **tensors
            Name -> tensor (dense or sparse).
        """
        for name, value in tensors.items():
            key = f"{_CONTEXT_PREFIX}{name}"
            if key in self._buffers:
                del self._buffers[key]
            device = next((p.device for p in self.parameters()), None)
            value = value if device is None else value.to(device)
            self.register_buffer(key, value, persistent=False)

    def context(self: nn.Module, name: str) -> torch.Tensor:
        """A context tensor set by :meth:`set_context`.

        Raises
        ------
        RuntimeError
            The model class did not set it (a bug, or training before the data were prepared).
        """
        key = f"{_CONTEXT_PREFIX}{name}"
        if key not in self._buffers:
            raise RuntimeError(f"{type(self).__name__} has no context tensor {name!r}.")
        return self._buffers[key]

    def training_loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The mean loss of a mini-batch of training (or validation) examples."""
        raise NotImplementedError

    def _set_wide_buffers(self: nn.Module, **values: torch.Tensor) -> None:
        """Copy the wide part's closed-form fit into its buffers (``set_wide`` of the heads).

        Parameters
        ----------
        **values
            Buffer name -> value (array, tensor or number), copied as float32 in the buffer's
            shape.

        Raises
        ------
        RuntimeError
            The module was built without ``residual`` (it has no wide part).
        """
        if not self.residual:
            raise RuntimeError("set_wide needs a module built with residual=True.")
        for name, value in values.items():
            buffer = getattr(self, name)
            buffer.copy_(torch.as_tensor(value, dtype=torch.float32).reshape(buffer.shape))


class HeadTrainingPlan(pl.LightningModule):
    """The Lightning training plan of every downstream head (run by scvi-tools' TrainRunner).

    Parameters
    ----------
    module
        The head's module: a :class:`HeadModuleMixin` (``training_loss(batch)``).
    lr
        Learning rate.
    weight_decay
        Weight decay (L2 in Adam, decoupled in AdamW).
    optimizer
        ``"Adam"`` (default, the heads' published choice) or ``"AdamW"``.
    """

    def __init__(
        self,
        module: nn.Module,
        *,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        optimizer: Literal["Adam", "AdamW"] = "Adam",
    ):
        super().__init__()
        if optimizer not in ("Adam", "AdamW"):
            raise ScLongInputError(f"optimizer must be 'Adam' or 'AdamW', not {optimizer!r}.")
        if not lr > 0:
            raise ScLongInputError(f"lr must be positive, got {lr!r}.")
        self.module = module
        self.lr = float(lr)
        self.weight_decay = float(weight_decay)
        self.optimizer_name = optimizer
        self._step_started: float | None = None
        self._rate: float | None = None

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The module's mean loss on ``batch``."""
        return self.module.training_loss(batch)

    @staticmethod
    def _size(batch: dict[str, torch.Tensor]) -> int:
        return int(next(iter(batch.values())).shape[0])

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        """One optimiser step's loss; logs ``train_loss`` (epoch mean over examples)."""
        loss = self(batch)
        n = self._size(batch)
        self.log("train_loss", loss.detach(), on_step=False, on_epoch=True, batch_size=n)
        self._log_rate(n)
        return loss

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        """Logs ``validation_loss`` (epoch mean over the validation examples)."""
        loss = self(batch)
        self.log(VALIDATION_LOSS, loss, on_step=False, on_epoch=True, batch_size=self._size(batch))

    def on_train_epoch_start(self) -> None:
        """Restart the examples/s clock (the gap since the last step held validation)."""
        self._step_started = None

    def _log_rate(self, n: int) -> None:
        now = time.perf_counter()
        if self._step_started is not None:
            rate = n / max(now - self._step_started, 1e-9)
            self._rate = rate if self._rate is None else 0.8 * self._rate + 0.2 * rate
            self.log("examples/s", self._rate, prog_bar=True, logger=False, batch_size=n)
        self._step_started = now

    def configure_optimizers(self) -> torch.optim.Optimizer:
        """Adam / AdamW over the parameters that require gradients."""
        params = [p for p in self.module.parameters() if p.requires_grad]
        if not params:
            raise RuntimeError("The head has no trainable parameters.")
        cls = torch.optim.Adam if self.optimizer_name == "Adam" else torch.optim.AdamW
        return cls(params, lr=self.lr, weight_decay=self.weight_decay)


class RestoreBestWeights(Callback):
    """Keep the weights of the epoch with the lowest validation loss and restore them at the end.

    Parameters
    ----------
    module
        The module whose weights are kept.
    keys
        The state-dict keys to keep (default: all; e.g. only a fine-tuned head's own weights).
    monitor
        The logged metric (lower is better).
    """

    def __init__(
        self,
        module: nn.Module,
        keys: Callable[[], list[str]] | None = None,
        monitor: str = VALIDATION_LOSS,
    ):
        super().__init__()
        self.module = module
        self.keys = keys
        self.monitor = monitor
        self.best = float("inf")
        self.best_epoch: int | None = None
        self.state: dict[str, torch.Tensor] | None = None

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Snapshot the weights when the epoch's validation loss is the lowest so far."""
        value = trainer.callback_metrics.get(self.monitor)
        if value is None or trainer.sanity_checking:
            return
        value = float(value)
        if value < self.best:
            self.best, self.best_epoch = value, int(trainer.current_epoch)
            keep = None if self.keys is None else set(self.keys())
            self.state = {
                k: v.detach().clone()
                for k, v in self.module.state_dict().items()
                if keep is None or k in keep
            }

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Load the best epoch's weights back."""
        if self.state is not None:
            self.module.load_state_dict(self.state, strict=self.keys is None)
