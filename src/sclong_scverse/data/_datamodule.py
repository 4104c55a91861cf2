"""Lightning data module over a :class:`ScLongCorpus`: ranks, workers, epochs, exact resume."""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
import torch

from .._batch_keys import POSITION_KEY
from ..errors import ScLongInputError
from ._corpus import CorpusBatches, ScLongCorpus


class _EpochLoader(torch.utils.data.DataLoader):
    """A data loader that tells its dataset the epoch (and resume point) at each ``iter``.

    It is stateful in Lightning's sense (:meth:`state_dict` / :meth:`load_state_dict`): its
    state is the data module's corpus position (:meth:`CorpusDataModule.state_dict`), so a
    checkpoint written in the middle of an epoch records where the loader stands, and Lightning
    restores it (and has no reason to warn that the loader is not resumable).
    """

    def __init__(self, dataset: CorpusBatches, datamodule: CorpusDataModule, **kwargs):
        super().__init__(dataset, batch_size=None, **kwargs)
        self._datamodule = datamodule

    def __iter__(self):
        datamodule = self._datamodule
        trainer = getattr(datamodule, "trainer", None)
        epoch = int(trainer.current_epoch) if trainer is not None else datamodule._epoch
        start = 0
        resume = datamodule._resume_at
        if resume is not None:
            if resume[0] == epoch:
                start = resume[1]
            datamodule._resume_at = None
        self.dataset.epoch, self.dataset.start = epoch, start
        datamodule._epoch = epoch
        return super().__iter__()

    def state_dict(self) -> dict[str, Any]:
        """The corpus position: the data module's :meth:`~CorpusDataModule.state_dict`.

        Returns
        -------
        ``epoch`` and ``next_batch`` (the batch after the last one handed to training) and
        what they depend on (``seed``, ``n_obs``, ``batch_size``, ``world_size``).
        """
        return self._datamodule.state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Continue at a saved position (:meth:`CorpusDataModule.load_state_dict`).

        Parameters
        ----------
        state_dict
            What :meth:`state_dict` returned; the same record as the data module's, so loading
            both (as Lightning does) sets the same position.

        Raises
        ------
        ScLongInputError
            It was written with another corpus, seed, batch size or number of processes.
        """
        self._datamodule.load_state_dict(state_dict)


class CorpusDataModule(pl.LightningDataModule):
    """Serves a :class:`ScLongCorpus` to a Lightning trainer (one process or many).

    Each process (rank) reads its slice of every global mini-batch of
    ``batch_size * world_size`` cells (see :class:`ScLongCorpus`); ``num_workers`` processes
    per rank read ahead. The position in the corpus (epoch, next batch) is part of the
    checkpoint (:meth:`state_dict`): a run resumed from a checkpoint continues with the batch
    after the last one trained, in the same order, with the same masks.

    Parameters
    ----------
    corpus
        The corpus, bound to the model (:meth:`ScLongCorpus.bind`).
    batch_size
        Cells per step and process.
    num_workers
        Reader processes per rank (``0``: read in the training process).
    mask_fraction, replace_fraction
        The masked-expression objective (the model's).
    pin_memory
        Pin batches in page-locked memory (for GPUs).
    """

    def __init__(
        self,
        corpus: ScLongCorpus,
        batch_size: int,
        num_workers: int = 0,
        mask_fraction: float = 0.15,
        replace_fraction: float = 0.9,
        pin_memory: bool = False,
    ):
        super().__init__()
        self.corpus = corpus
        self.batch_size = int(batch_size)
        self.num_workers = int(num_workers)
        self.mask_fraction = mask_fraction
        self.replace_fraction = replace_fraction
        self.pin_memory = pin_memory
        self._epoch = 0
        self._next = (0, 0)  # (epoch, next batch) after the last batch handed to training
        self._resume_at: tuple[int, int] | None = None

    def _rank_and_world(self) -> tuple[int, int]:
        trainer = getattr(self, "trainer", None)
        if trainer is None:
            return 0, 1
        return int(trainer.global_rank), int(trainer.world_size)

    def train_dataloader(self) -> _EpochLoader:
        """The rank's loader (a whole mini-batch per item)."""
        rank, world = self._rank_and_world()
        dataset = CorpusBatches(
            self.corpus,
            self.batch_size,
            rank=rank,
            world_size=world,
            mask_fraction=self.mask_fraction,
            replace_fraction=self.replace_fraction,
        )
        if len(dataset) == 0:
            raise ScLongInputError(
                f"the corpus has {self.corpus.n_obs:,} cells, fewer than one global batch of "
                f"{self.batch_size * world:,} (batch_size {self.batch_size} x {world} "
                "processes): use a smaller batch_size."
            )
        return _EpochLoader(
            dataset,
            self,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=False,  # workers are started per epoch with its order
        )

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Record the position of the batch about to be trained (for :meth:`state_dict`)."""
        if isinstance(batch, dict) and POSITION_KEY in batch:
            epoch, index = (int(v) for v in batch[POSITION_KEY].tolist())
            self._next = (epoch, index + 1)
        return batch

    def state_dict(self) -> dict[str, Any]:
        """The corpus position and what it depends on, saved in Lightning checkpoints."""
        return {
            "epoch": self._next[0],
            "next_batch": self._next[1],
            "seed": self.corpus.seed,
            "n_obs": self.corpus.n_obs,
            "batch_size": self.batch_size,
            "world_size": self._rank_and_world()[1],
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Resume at the saved position (checked against this corpus and batch size).

        Parameters
        ----------
        state_dict
            What :meth:`state_dict` returned when the checkpoint was written.

        Raises
        ------
        ScLongInputError
            It was written with another corpus, seed, batch size or number of processes, or it
            holds no readable position.
        """
        for key, mine in (
            ("seed", self.corpus.seed),
            ("n_obs", self.corpus.n_obs),
            ("batch_size", self.batch_size),
            ("world_size", self._rank_and_world()[1]),
        ):
            if key in state_dict and int(state_dict[key]) != int(mine):
                raise ScLongInputError(
                    f"this checkpoint was written with corpus {key} {state_dict[key]}, but the "
                    f"run resuming it has {mine}: resume with the same corpus (same stores in "
                    "the same order), seed, batch size and number of processes, or start a "
                    "new run."
                )
        try:
            position = (int(state_dict["epoch"]), int(state_dict["next_batch"]))
        except (KeyError, TypeError, ValueError) as error:
            raise ScLongInputError(
                f"this checkpoint's corpus position is not readable ({type(error).__name__}: "
                f"{error}): resume from a checkpoint that SCLONG.pretrain wrote, or start a "
                "new run."
            ) from None
        self._resume_at = position
        self._next = position
