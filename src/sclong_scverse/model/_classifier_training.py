"""Training support of :class:`~sclong_scverse.model.SCLONGClassifier`.

Class weights, the scvi-tools data splitter over cached pooled features, the refit on all
labelled cells, the keep-the-best-epoch callback and the calibration for annotation (the
out-of-distribution score and the confidence threshold).
"""

from __future__ import annotations

from collections.abc import Sequence

import anndata as ad
import numpy as np
import pandas as pd
import torch
from scvi import REGISTRY_KEYS

from .._settings import quiet_libraries
from ..validation import ScLongInputError

#: Fraction of the validation cells that the calibrated threshold of
#: :func:`sclong_scverse.tl.annotate` (``threshold="auto"``) labels unknown.
UNKNOWN_RATE = 0.05
#: Defaults of :meth:`SCLONGClassifier.train` (epochs, early-stopping patience) when the head
#: trains on cached pooled features (the backbone does not train) and when it does not.
CACHED_EPOCHS, CACHED_PATIENCE = 200, 10
NETWORK_EPOCHS, NETWORK_PATIENCE = 20, 5


def chance_threshold(n_classes: int) -> float:
    """``1/k + 0.25 (1 - 1/k)``: a quarter of the way from chance to certainty (``k`` classes).

    Parameters
    ----------
    n_classes
        Number of classes ``k``.

    Returns
    -------
    The confidence threshold (0.625 for 2 classes, 0.4 for 5, 0.325 for 10).
    """
    chance = 1.0 / n_classes
    return chance + 0.25 * (1.0 - chance)


class ClassifierTrainingMixin:
    """What :meth:`SCLONGClassifier.train` uses besides scvi-tools' training."""

    def _set_class_weights(self, class_weights: str | Sequence[float] | None) -> None:
        """Write the loss's class weights (see :meth:`train`) into the module."""
        counts = self.class_counts().to_numpy().astype(np.float64)
        if (counts > 0).sum() < 2:
            raise ScLongInputError(
                f"Only {(counts > 0).sum()} class(es) have labelled cells; need at least 2."
            )
        if isinstance(class_weights, str):
            if class_weights != "balanced":
                raise ScLongInputError(
                    f"class_weights must be 'balanced', None or a list, not {class_weights!r}."
                )
            balanced = counts.sum() / (len(counts) * np.maximum(counts, 1))
            weights = np.where(counts > 0, balanced, 0.0)
        elif class_weights is None:
            weights = np.ones(len(counts))
        else:
            weights = np.asarray(class_weights, dtype=np.float64)
            if weights.shape != (len(counts),) or (weights < 0).any():
                raise ScLongInputError(
                    f"class_weights needs {len(counts)} non-negative values (one per class)."
                )
        self.module.class_weights.copy_(torch.as_tensor(weights, dtype=torch.float32))

    def _class_targets(self) -> np.ndarray:
        """Class index of every registered cell (-1: unlabelled)."""
        codes = np.asarray(self.adata_manager.get_from_registry(REGISTRY_KEYS.LABELS_KEY))
        return self.module.label_to_class.cpu().numpy()[codes.reshape(-1).astype(np.int64)]

    def _feature_manager(self, features: np.ndarray):
        """An AnnData manager over cached pooled features (same cells and order) and labels."""
        from scvi.data import AnnDataManager
        from scvi.data.fields import LayerField, NumericalObsField

        codes = np.asarray(self.adata_manager.get_from_registry(REGISTRY_KEYS.LABELS_KEY))
        table = ad.AnnData(
            X=np.ascontiguousarray(features, dtype=np.float32),
            obs=pd.DataFrame(
                {"_sclong_label_code": codes.reshape(-1).astype(np.float32)},
                index=self.adata.obs_names.copy(),
            ),
        )
        manager = AnnDataManager(
            fields=[
                LayerField(REGISTRY_KEYS.X_KEY, None, is_count_data=False),
                NumericalObsField(REGISTRY_KEYS.LABELS_KEY, "_sclong_label_code"),
            ],
            setup_method_args={"model_name": type(self).__name__, "setup_args": {}},
        )
        manager.register_fields(table)
        return manager

    def _feature_splitter(self, manager, train_size, validation_size, batch_size):
        """A scvi-tools data splitter over :meth:`_feature_manager`'s features.

        The split has the sizes scvi-tools gives the registered data. scvi-tools draws it
        again at every setup (from numpy's unseeded generator by default): it is drawn once
        here, from torch's generator (``torch.manual_seed`` and ``scvi.settings.seed`` make it
        reproducible), and passed on, so that the scaling is fitted on the cells that train.
        ``train_size=None``: every cell trains (the refit).
        """
        n_cells = manager.adata.n_obs
        if train_size is None:
            split = [np.arange(n_cells), np.array([], dtype=np.int64)]
        else:
            sizes = self._data_splitter_cls(
                manager,
                train_size=train_size,
                validation_size=validation_size,
                batch_size=batch_size,
            )
            order = torch.randperm(n_cells).numpy()
            n_train, n_val = sizes.n_train, sizes.n_val
            split = [order[n_val : n_val + n_train], order[:n_val], order[n_val + n_train :]]
        return self._data_splitter_cls(manager, batch_size=batch_size, external_indexing=split)

    def _fit(self, cached: bool, **kwargs):
        """scvi-tools' training (``UnsupervisedTrainingMixin.train``), on cached features or not."""
        from scvi.model.base import UnsupervisedTrainingMixin

        self.module.reads_pooled = cached
        self.module.train()
        try:
            with quiet_libraries():
                return UnsupervisedTrainingMixin.train(self, **kwargs)
        finally:
            self.module.reads_pooled = False
            self.module.eval()

    def _refit_head(self, manager, initial: dict, n_epochs: int, features, plan_kwargs, **kwargs):
        """Train the head again from ``initial`` on every cell for ``n_epochs`` epochs.

        The split's run chose the number of epochs (its best validation epoch) and gave the
        calibration; this run uses the validation cells too, as a logistic regression on the
        embeddings uses every reference cell. ``model.history`` keeps the split's run and adds
        ``train_loss_refit``; ``train_indices`` / ``validation_indices`` stay the split's.
        """
        batch_size = kwargs["batch_size"]
        history = {key: frame.copy() for key, frame in self.history_.items()}
        split = (self.train_indices, self.validation_indices, self.test_indices)
        self.module.head.load_state_dict(initial)
        if self.train_scope_ == "mode":
            self.module.head[0].fit(torch.as_tensor(features))
        steps = max(1, int(n_epochs * np.ceil(len(features) / batch_size)))
        plan_kwargs = {**plan_kwargs, "warmup_steps": max(1, steps // 10)}
        datamodule = self._feature_splitter(manager, None, None, batch_size)
        self._fit(
            True,
            max_epochs=n_epochs,
            early_stopping=False,
            plan_kwargs=plan_kwargs,
            datamodule=datamodule,
            **kwargs,
        )
        refit = self.history_.get("train_loss")
        if refit is not None:
            refit = refit.iloc[len(history.get("train_loss", ())) :]
            refit = refit.rename(columns={"train_loss": "train_loss_refit"})
            history["train_loss_refit"] = refit.set_axis(np.arange(len(refit)), axis=0)
        self.history_ = history
        self.train_indices, self.validation_indices, self.test_indices = split
        self.refit_epochs_ = int(n_epochs)

    @torch.no_grad()
    def _calibrate(self, features: np.ndarray | None, batch_size: int) -> None:
        """Fit the out-of-distribution score and the confidence threshold after training.

        ``features``: the cached pooled decodings of the registered cells (``None``: the
        backbone trained, they are computed again).
        """
        if features is None:
            features = self.get_latent_representation(batch_size=max(batch_size, 64))
        features = torch.as_tensor(features)
        targets = torch.as_tensor(self._class_targets())
        train = getattr(self, "train_indices", None)
        train = np.arange(len(targets)) if train is None else np.asarray(train)
        self.module.ood.fit(features[train], targets[train])
        validation = getattr(self, "validation_indices", None)
        validation = np.asarray([] if validation is None else validation, dtype=np.int64)
        validation = validation[self._class_targets()[validation] >= 0]
        n_classes = len(self.classes_)
        calibration = {
            "unknown_rate": UNKNOWN_RATE,
            "n_validation": len(validation),
            "confidence_threshold": chance_threshold(n_classes),
            "rule": "chance",
        }
        if len(validation):
            device = next(self.module.parameters()).device
            logits = self.module.head(features[validation].to(device))
            confidence = torch.softmax(logits.double(), dim=1).amax(dim=1).cpu().numpy()
            ood = self.module.ood(features[validation].to(device)).cpu().numpy()
            calibration.update(
                confidence_threshold=float(np.quantile(confidence, UNKNOWN_RATE)),
                rule="validation",
                validation_confidence_median=float(np.median(confidence)),
                validation_ood_median=float(np.median(ood)),
                validation_ood_q95=float(np.quantile(ood, 1.0 - UNKNOWN_RATE)),
            )
        self.calibration_ = calibration
