"""The per-step training progress bar of the package's models (Lightning's, without the clutter)."""

from __future__ import annotations

from lightning.pytorch.callbacks import TQDMProgressBar
from lightning.pytorch.callbacks.progress.tqdm_progress import Tqdm

from .._settings import settings


class StepProgressBar(TQDMProgressBar):
    """Lightning's bar over the steps of each epoch (time left, steps/s, the logged losses).

    Lightning also draws a second bar for every validation pass and one for its sanity check;
    they are hidden unless ``sclong_scverse.settings.library_info`` is on (the validation
    loss still appears on the training bar and in ``model.history``).
    """

    def init_sanity_tqdm(self) -> Tqdm:
        """The sanity-check bar (hidden unless ``settings.library_info``)."""
        return super().init_sanity_tqdm() if settings.library_info else Tqdm(disable=True)

    def init_validation_tqdm(self) -> Tqdm:
        """The validation bar (hidden unless ``settings.library_info``)."""
        return super().init_validation_tqdm() if settings.library_info else Tqdm(disable=True)
