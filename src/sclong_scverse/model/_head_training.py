"""The training loop shared by the drug heads: shuffled mini-batches, best validation epoch."""

from __future__ import annotations

import copy
from collections.abc import Callable

import numpy as np
import pandas as pd
import torch


class DrugHeadMixin:
    """What the drug heads share beyond training: their device and cell-feature scaling."""

    @property
    def _device(self) -> torch.device:
        return next(self.module.parameters()).device

    def _standardized(self, features: np.ndarray) -> torch.Tensor:
        """Cell-line features scaled as fitted on the training cell lines."""
        return torch.as_tensor((features - self.feature_mean_) / self.feature_scale_)


def training_device(accelerator: str) -> torch.device:
    """``"cpu"``, ``"gpu"`` / ``"cuda"``, or ``"auto"`` (a GPU when there is one)."""
    use_gpu = accelerator in ("gpu", "cuda") or (
        accelerator == "auto" and torch.cuda.is_available()
    )
    return torch.device("cuda" if use_gpu else "cpu")


def feature_scaling(table: np.ndarray, rows) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation of ``table[rows]`` (columns without spread scale by 1)."""
    mean = table[rows].mean(axis=0)
    scale = table[rows].std(axis=0)
    return mean, np.where(scale > 1e-8, scale, 1.0).astype(np.float32)


def train_with_validation(
    module: torch.nn.Module,
    n_train: int,
    batch_loss: Callable[[torch.Tensor], torch.Tensor],
    validation_loss: Callable[[], float] | None,
    *,
    max_epochs: int,
    batch_size: int,
    lr: float,
    weight_decay: float,
    early_stopping_patience: int | None,
    seed: int,
    names: tuple[str, str],
) -> tuple[pd.DataFrame, int | None]:
    """Adam over shuffled mini-batches; keep the epoch with the lowest validation loss.

    Parameters
    ----------
    module
        The head's module (moved to its device by the caller).
    n_train
        Training examples; ``batch_loss(rows)`` receives positions ``0 .. n_train - 1`` (a CPU
        tensor, shuffled each epoch by a generator seeded with ``seed``) and returns the mean
        loss of those examples.
    validation_loss
        The loss on the validation examples (called in eval mode without gradients), or
        ``None`` when there are none (then no early stopping, the last epoch is kept).
    max_epochs, batch_size, lr, weight_decay, early_stopping_patience, seed
        The schedule; ``torch.manual_seed(seed)`` seeds dropout.
    names
        History column names of the training and validation losses.

    Returns
    -------
    The history (one row per epoch) and the best epoch (``None`` without validation).
    """
    optimizer = torch.optim.Adam(module.parameters(), lr=lr, weight_decay=weight_decay)
    generator = torch.Generator().manual_seed(int(seed))
    torch.manual_seed(int(seed))
    history: dict[str, list[float]] = {names[0]: [], names[1]: []}
    best, best_state, waited = np.inf, None, 0
    for _ in range(int(max_epochs)):
        module.train()
        order = torch.randperm(n_train, generator=generator)
        total = 0.0
        for start in range(0, n_train, batch_size):
            rows = order[start : start + batch_size]
            loss = batch_loss(rows)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * len(rows)
        history[names[0]].append(total / n_train)
        if validation_loss is None:
            history[names[1]].append(float("nan"))
            continue
        module.eval()
        with torch.no_grad():
            value = float(validation_loss())
        history[names[1]].append(value)
        if value < best:
            best, waited = value, 0
            best_state = copy.deepcopy(module.state_dict())
        else:
            waited += 1
            if early_stopping_patience is not None and waited >= early_stopping_patience:
                break
    if best_state is not None:
        module.load_state_dict(best_state)
    module.eval()
    best_epoch = int(np.nanargmin(history[names[1]])) if validation_loss is not None else None
    return pd.DataFrame(history), best_epoch
