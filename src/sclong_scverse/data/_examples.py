"""A Lightning data module over a downstream head's training examples (tables, not cells)."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import lightning.pytorch as pl
import numpy as np
import torch

from ..errors import ScLongInputError

Batch = dict[str, torch.Tensor]


class _Rows(torch.utils.data.Dataset):
    """Example positions; the collate function gathers the rows of every tensor at once."""

    def __init__(self, rows: np.ndarray):
        self.rows = np.asarray(rows, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> int:
        return int(self.rows[i])


class _ReseededLoader(torch.utils.data.DataLoader):
    """A data loader whose augmentation generator restarts at every pass (same draws each epoch)."""

    def __init__(self, *args, generator_seed: tuple[torch.Generator, int], **kwargs):
        super().__init__(*args, **kwargs)
        self._reseed = generator_seed

    def __iter__(self):
        generator, seed = self._reseed
        generator.manual_seed(seed)
        return super().__iter__()


class ExampleDataModule(pl.LightningDataModule):
    """Serves a head's examples to Lightning: seeded shuffled training batches, validation apart.

    Used where a head's data are not an AnnData of cells (drug x cell-line pairs, drug
    combinations, signatures, perturbed cells paired with controls): ``examples`` holds one
    tensor per field, the first axis indexing examples; each batch is the dict of the rows of a
    mini-batch. Validation and test examples are never in a training batch.

    Parameters
    ----------
    examples
        Field name -> ``(n_examples, ...)`` tensor (or array).
    train_idx, val_idx, test_idx
        Positions of the training, validation and test examples (disjoint).
    batch_size
        Examples per training step (validation batches are as large).
    seed
        Seed of the training shuffle (the same seed gives the same batches).
    augment
        Optional ``augment(batch, generator) -> batch`` applied to every batch (e.g. drawing
        control cells to pair with perturbed ones), with a generator seeded by ``seed`` for
        training batches and ``seed + 1`` (restarted each epoch) for validation batches.
    """

    def __init__(
        self,
        examples: Mapping[str, torch.Tensor | np.ndarray],
        train_idx: np.ndarray,
        val_idx: np.ndarray | None = None,
        test_idx: np.ndarray | None = None,
        batch_size: int = 128,
        seed: int = 0,
        augment: Callable[[Batch, torch.Generator], Batch] | None = None,
    ):
        super().__init__()
        if int(batch_size) < 1:
            raise ScLongInputError(f"batch_size must be a positive integer, got {batch_size!r}.")
        self.examples = {k: torch.as_tensor(v) for k, v in examples.items()}
        sizes = {len(v) for v in self.examples.values()}
        if len(sizes) != 1:
            raise ScLongInputError(f"All example fields need the same length; got {sorted(sizes)}.")
        self.train_idx = np.asarray(train_idx, dtype=np.int64)
        self.val_idx = np.asarray([] if val_idx is None else val_idx, dtype=np.int64)
        self.test_idx = np.asarray([] if test_idx is None else test_idx, dtype=np.int64)
        if (
            np.intersect1d(self.train_idx, self.val_idx).size
            or np.intersect1d(self.train_idx, self.test_idx).size
        ):
            raise ScLongInputError(
                "Training examples overlap the validation or test examples; give disjoint "
                "train_idx, val_idx and test_idx."
            )
        if not len(self.train_idx):
            raise ScLongInputError(
                "No training examples; give train_idx with at least one example."
            )
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.augment = augment
        self._train_generator = torch.Generator().manual_seed(self.seed)
        self._augment_generator = torch.Generator().manual_seed(self.seed)

    @property
    def n_train(self) -> int:
        """Training examples."""
        return len(self.train_idx)

    @property
    def n_val(self) -> int:
        """Validation examples."""
        return len(self.val_idx)

    def _collate(self, generator: torch.Generator) -> Callable[[list[int]], Batch]:
        def collate(rows: list[int]) -> Batch:
            index = torch.as_tensor(rows, dtype=torch.long)
            batch = {k: v[index] for k, v in self.examples.items()}
            return batch if self.augment is None else self.augment(batch, generator)

        return collate

    def train_dataloader(self) -> torch.utils.data.DataLoader:
        """Shuffled training batches (seeded)."""
        return torch.utils.data.DataLoader(
            _Rows(self.train_idx),
            batch_size=self.batch_size,
            shuffle=True,
            generator=self._train_generator,
            collate_fn=self._collate(self._augment_generator),
        )

    def val_dataloader(self) -> torch.utils.data.DataLoader | list:
        """Validation batches in order (the same draws every epoch); none without examples."""
        if not self.n_val:
            return []
        generator = torch.Generator()
        return _ReseededLoader(
            _Rows(self.val_idx),
            batch_size=max(self.batch_size, 1024),
            shuffle=False,
            collate_fn=self._collate(generator),
            generator_seed=(generator, self.seed + 1),
        )
