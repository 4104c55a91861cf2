"""Cell-type annotation by fine-tuning scLong: :class:`SCLONGClassifier`.

Query mapping and saving live in :mod:`._classifier_io` (their names are importable from here
too).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import anndata as ad
import numpy as np
import pandas as pd
import torch
from scvi import REGISTRY_KEYS
from scvi.model.base import BaseModelClass, UnsupervisedTrainingMixin

from ..errors import ScLongTypeError
from ..genes import GeneVocabulary
from ..module import RestoreBestWeights, ScLongTrainingPlan
from ..module._classifier import (
    FINE_TUNE_MODES,
    ClassifierPooling,
    FineTuneMode,
    ScLongClassifierModule,
    copy_network,
)
from ..module._classifier import (
    backbone_sha256 as network_sha256,  # the parameter backbone_sha256 would shadow it
)
from ..module._module import HEAD_POOLING
from ..nn import ScLongNetwork
from ..validation import (
    ScLongInputError,
    check_not_view,
    check_obs_key,
)
from ._anndata import RegisteredCellsMixin, register_cell_values
from ._classifier_io import (
    MIN_QUERY_OVERLAP,
    BackboneMismatchError,
    ClassifierIOMixin,
    prepare_query_anndata,
)
from ._classifier_training import (
    CACHED_EPOCHS,
    CACHED_PATIENCE,
    NETWORK_EPOCHS,
    NETWORK_PATIENCE,
    UNKNOWN_RATE,
    ClassifierTrainingMixin,
    chance_threshold,
)
from ._sclong import SCLONG

__all__ = [
    "MIN_QUERY_OVERLAP",
    "UNKNOWN_RATE",
    "BackboneMismatchError",
    "SCLONGClassifier",
    "chance_threshold",
    "prepare_query_anndata",
]

logger = logging.getLogger(__name__)


def _label_mapping(categories: Sequence[str], unlabeled_category: str | None):
    """(classes, class index per label code; -1 for the unlabelled category)."""
    classes = [str(c) for c in categories if c != unlabeled_category]
    codes = np.array([-1 if c == unlabeled_category else classes.index(str(c)) for c in categories])
    return classes, codes


class SCLONGClassifier(
    RegisteredCellsMixin,
    ClassifierIOMixin,
    ClassifierTrainingMixin,
    UnsupervisedTrainingMixin,
    BaseModelClass,
):
    """Cell-type annotation by fine-tuning scLong: a classification head on its decodings.

    A cell's merged decodings (the per-gene output of scLong) are pooled over genes and a head
    predicts its label. Three fine-tuning modes: ``"frozen"`` (only the head trains; the
    backbone runs without autograd), ``"partial"`` (the head and the last
    ``n_unfrozen_layers`` Performer layers) and ``"lora"`` (the head and low-rank adapters on
    every attention projection, :mod:`sclong_scverse.nn.lora`). Training is class-weighted
    cross-entropy over labelled cells with a validation split and early stopping; in
    ``"frozen"`` mode the pooled decodings are computed once and the head trains on them to
    convergence (it matches a logistic regression on the backbone's embeddings, see
    :meth:`train`). After training the model is calibrated for annotation: a confidence
    threshold from the validation cells (:meth:`confidence_threshold`) and an
    out-of-distribution score, the distance to the training classes (:meth:`ood_score`).

    Build it from a (pre)trained :class:`~sclong_scverse.model.SCLONG` with
    :meth:`from_sclong`; annotate with :meth:`predict` or :func:`sclong_scverse.tl.annotate`;
    map a query with :meth:`prepare_query_anndata` and :meth:`load_query_data`. Saving stores
    the head, the adapters or unfrozen layers and the backbone's checksum, not the backbone
    (``save_backbone=True`` stores it too).

    Parameters
    ----------
    adata
        AnnData registered with :meth:`setup_anndata` (labels in ``obs[labels_key]``).
    backbone
        The scLong model (its network is copied: fine-tuning never changes ``backbone``) or a
        :class:`~sclong_scverse.nn.ScLongNetwork`, used as is (adapters are added to it in
        place) with ``vocabulary``.
    vocabulary
        The backbone's gene vocabulary (only with a network; an SCLONG brings its own).
    mode
        ``"frozen"``, ``"partial"`` or ``"lora"``.
    n_unfrozen_layers
        Performer layers trained in ``"partial"`` mode, counted from the output: the decoder's
        layers first, then the last layers of both encoders.
    lora_rank, lora_alpha, lora_dropout
        Adapter rank, scale numerator (the update is scaled by ``alpha / rank``) and dropout.
    pooling
        Pooling of the decodings over genes, one of ``module._module.POOLINGS``, as in
        ``SCLONG.get_latent_representation``. Default: ``HEAD_POOLING`` (``"max"``, ``dim``
        wide), not the cell embeddings' per-gene ``DEFAULT_POOLING``: the head and its
        Mahalanobis out-of-distribution score are fitted on these features (a covariance of
        width squared), ``docs/pooling.md``.
    hidden_dim
        Hidden width of an MLP head (``None``: per-feature standardisation + dropout + linear).
    dropout
        Dropout in the head.
    backbone_sha256
        The backbone's checksum (computed when ``None``; :meth:`load` passes the saved one).

    Examples
    --------
    >>> import sclong_scverse as scl
    >>> clf = scl.SCLONGClassifier.from_sclong(model, ref, labels_key="cell_type", mode="lora")
    >>> clf.train(max_epochs=20)
    >>> scl.tl.annotate(query, clf)  # obs["sclong_label"], ..._confidence, ..._ood
    """

    _module_cls = ScLongClassifierModule
    _training_plan_cls = ScLongTrainingPlan

    # the query machinery of SCLONG (validation, gene alignment, streaming loader) reads only
    # the registry and the properties below, which this class defines the same way
    _query = SCLONG._query
    _loader = SCLONG._loader

    def __init__(
        self,
        adata: ad.AnnData,
        backbone: SCLONG | ScLongNetwork,
        vocabulary: GeneVocabulary | Sequence[str] | None = None,
        mode: FineTuneMode = "frozen",
        n_unfrozen_layers: int = 1,
        lora_rank: int = 8,
        lora_alpha: float = 16.0,
        lora_dropout: float = 0.0,
        pooling: ClassifierPooling = HEAD_POOLING,
        hidden_dim: int | None = None,
        dropout: float = 0.1,
        backbone_sha256: str | None = None,
    ):
        super().__init__(adata)
        if mode not in FINE_TUNE_MODES:
            raise ScLongInputError(f"mode must be one of {FINE_TUNE_MODES}, not {mode!r}.")
        if isinstance(backbone, SCLONG):
            network = copy_network(backbone.module.network)
            vocabulary = backbone.vocabulary
        elif isinstance(backbone, ScLongNetwork):
            network = backbone
            if vocabulary is None:
                raise ScLongInputError(
                    "Pass the network's vocabulary with a ScLongNetwork backbone."
                )
        else:
            raise ScLongTypeError(
                "backbone must be an SCLONG model or a ScLongNetwork, not "
                f"{type(backbone).__name__}."
            )
        if not isinstance(vocabulary, GeneVocabulary):
            vocabulary = GeneVocabulary(list(vocabulary))
        if len(vocabulary) != network.config.n_genes:
            raise ScLongInputError(
                f"The vocabulary has {len(vocabulary)} genes, the network {network.config.n_genes}."
            )
        self.vocabulary = vocabulary
        self.alignment = vocabulary.align(adata, gene_id_key=self._gene_id_key)
        if self.alignment.n_vocab_covered == 0:
            raise ScLongInputError(
                "None of adata's genes are in the backbone's vocabulary (data genes like "
                f"{list(adata.var_names[:3])}, vocabulary genes like {vocabulary.genes[:3]}). "
                "If the ids are in an adata.var column, set gene_id_key in setup_anndata."
            )
        self.backbone_sha256_ = backbone_sha256 or network_sha256(network)
        categories = self.adata_manager.get_state_registry(
            REGISTRY_KEYS.LABELS_KEY
        ).categorical_mapping
        self.classes_, codes = _label_mapping(categories, self.unlabeled_category)
        self.module = self._module_cls(
            network,
            torch.as_tensor(self.alignment.var_positions),
            torch.as_tensor(codes),
            len(self.classes_),
            mode=mode,
            n_unfrozen_layers=n_unfrozen_layers,
            lora_rank=lora_rank,
            lora_alpha=lora_alpha,
            lora_dropout=lora_dropout,
            pooling=pooling,
            hidden_dim=hidden_dim,
            dropout=dropout,
        )
        self.train_scope_ = "mode"
        counts = self.module.parameter_counts()
        self._model_summary_string = (
            f"SCLONGClassifier: {len(self.classes_)} classes, mode {mode}, pooling {pooling}, "
            f"{counts['trainable']:,} trainable of {counts['total']:,} parameters; backbone "
            f"sha256 {self.backbone_sha256_[:12]}...; data genes in vocabulary: "
            f"{self.alignment.n_vocab_covered}/{len(vocabulary)}"
        )
        self.init_params_ = {
            "non_kwargs": {
                "mode": mode,
                "n_unfrozen_layers": int(n_unfrozen_layers),
                "lora_rank": int(lora_rank),
                "lora_alpha": float(lora_alpha),
                "lora_dropout": float(lora_dropout),
                "pooling": pooling,
                "hidden_dim": hidden_dim,
                "dropout": float(dropout),
            },
            "kwargs": {"kwargs": {}},
        }

    # ------------------------------------------------------------------ set-up
    @classmethod
    def setup_anndata(
        cls,
        adata: ad.AnnData,
        labels_key: str | None = None,
        unlabeled_category: str | None = None,
        layer: str | None = None,
        batch_key: str | None = None,
        gene_id_key: str | None = None,
        check_normalization: bool = True,
        normalization: dict | None = None,
        **kwargs,
    ) -> None:
        """Register an AnnData with cell labels for fine-tuning.

        Reads ``adata.obs[labels_key]`` (and ``batch_key``), the values
        (``adata.layers[layer]`` or ``adata.X``, validated as
        :meth:`SCLONG.setup_anndata <sclong_scverse.model.SCLONG.setup_anndata>` validates them)
        and the gene ids. Writes the scvi-tools registration (``adata.uns["_scvi_uuid"]``,
        ``adata.uns["_scvi_manager_uuid"]``, ``adata.obs["_scvi_labels"]``,
        ``adata.obs["_scvi_batch"]``).

        Parameters
        ----------
        adata
            AnnData with log-normalised values (:func:`sclong_scverse.pp.normalize`).
        labels_key
            ``adata.obs`` column of cell labels (required); at least two classes besides the
            unlabelled category.
        unlabeled_category
            Label of cells without a label (ignored by the loss; e.g. the query's cells). Must
            occur in the column; ``None`` when every cell is labelled.
        layer, batch_key, gene_id_key, check_normalization, normalization
            As in :meth:`SCLONG.setup_anndata <sclong_scverse.model.SCLONG.setup_anndata>`.
        **kwargs
            Passed to :meth:`scvi.data.AnnDataManager.register_fields`.

        Raises
        ------
        ScLongInputError
            No ``labels_key``, a column with missing values, fewer than two classes, an
            ``unlabeled_category`` that no cell has, or values the model cannot read.
        KeyError
            ``labels_key``, ``batch_key``, ``layer`` or ``gene_id_key`` not found.
        """
        arguments = locals().copy()
        check_not_view(adata)
        if labels_key is None:
            raise ScLongInputError(
                "labels_key is required: the adata.obs column with the cell labels to learn "
                f"(columns: {list(adata.obs.columns)})."
            )
        if labels_key not in adata.obs.columns:
            raise ScLongInputError(
                f"labels_key={labels_key!r} is not a column of adata.obs (columns: "
                f"{list(adata.obs.columns)})."
            )
        check_obs_key(adata, labels_key, "labels_key")
        check_obs_key(adata, batch_key, "batch_key")
        labels = adata.obs[labels_key].astype(str)
        present = pd.unique(labels)
        if unlabeled_category is not None and unlabeled_category not in set(present):
            raise ScLongInputError(
                f"unlabeled_category={unlabeled_category!r} does not occur in "
                f"adata.obs[{labels_key!r}] (values: {sorted(present)[:10]}). Pass "
                "unlabeled_category=None when every cell is labelled, or label the cells "
                "without a type with that category."
            )
        classes = sorted(set(present) - {unlabeled_category})
        if len(classes) < 2:
            raise ScLongInputError(
                f"adata.obs[{labels_key!r}] has {len(classes)} class(es) besides the unlabelled "
                f"category ({classes}); a classifier needs at least 2."
            )
        register_cell_values(cls, adata, arguments, **kwargs)

    @classmethod
    def from_sclong(
        cls,
        model: SCLONG,
        adata: ad.AnnData,
        labels_key: str,
        unlabeled_category: str | None = None,
        batch_key: str | None = None,
        layer: str | None = None,
        **kwargs,
    ) -> SCLONGClassifier:
        """A classifier on a (pre)trained scLong model, registering ``adata`` like the model.

        ``adata`` is registered with the model's layer, gene ids and normalisation (reads and
        writes as :meth:`setup_anndata`); its genes may differ from the model's training data
        (they are placed on the model's vocabulary).

        Parameters
        ----------
        model
            The backbone (its network is copied; ``model`` itself never changes).
        adata
            The labelled reference.
        labels_key, unlabeled_category, batch_key
            See :meth:`setup_anndata`.
        layer
            Layer of values (default: the one ``model`` was set up with).
        **kwargs
            Passed to :class:`SCLONGClassifier` (``mode``, ``n_unfrozen_layers``,
            ``lora_rank``, ``pooling``, ...).

        Returns
        -------
        The untrained classifier.
        """
        if not isinstance(model, SCLONG):
            raise ScLongTypeError(f"model must be an SCLONG, not {type(model).__name__}.")
        args = model._setup_args
        if model._modality is not None:
            raise ScLongInputError(
                "The classifier reads AnnData; this model was set up on a MuData."
            )
        cls.setup_anndata(
            adata,
            labels_key=labels_key,
            unlabeled_category=unlabeled_category,
            layer=layer if layer is not None else model._layer,
            batch_key=batch_key,
            gene_id_key=args.get("gene_id_key"),
            check_normalization=args.get("check_normalization", True),
            normalization=args.get("normalization"),
        )
        return cls(adata, model, **kwargs)

    @property
    def labels_key(self) -> str:
        """The ``adata.obs`` column of labels the model was set up with."""
        return self._setup_args["labels_key"]

    @property
    def unlabeled_category(self) -> str | None:
        """The label of unlabelled cells (``None``: all cells labelled)."""
        return self._setup_args.get("unlabeled_category")

    @property
    def mode(self) -> str:
        """The fine-tuning mode: ``"frozen"``, ``"partial"`` or ``"lora"``."""
        return self.module.mode

    # ------------------------------------------------------------------ training
    def class_counts(self) -> pd.Series:
        """Labelled cells per class in the registered data.

        Returns
        -------
        Counts indexed by class (the order of :attr:`classes_`).
        """
        target = self._class_targets()
        counts = np.bincount(target[target >= 0], minlength=len(self.classes_))
        return pd.Series(counts, index=self.classes_, name="cells")

    def train(
        self,
        max_epochs: int | None = None,
        batch_size: int = 32,
        lr: float | None = None,
        weight_decay: float = 0.01,
        class_weights: str | Sequence[float] | None = "balanced",
        train_size: float = 0.8,
        validation_size: float | None = None,
        early_stopping: bool = True,
        early_stopping_patience: int | None = None,
        restore_best: bool = True,
        refit: bool = True,
        accelerator: str = "auto",
        devices: int | list[int] | str = "auto",
        precision: str | int | None = None,
        plan_kwargs: dict | None = None,
        **trainer_kwargs,
    ):
        """Fine-tune: class-weighted cross-entropy, validation split, early stopping.

        When the backbone does not train (``"frozen"`` mode, or a query model that trains its
        head only), the pooled decodings of every registered cell are computed once and the
        head trains on them (a scvi-tools data splitter over the cached features, the same
        Lightning trainer): an epoch costs a linear layer's work instead of a forward pass of
        scLong, so the head trains until the validation loss stops improving, and then
        (``refit``) again from its initial weights on every cell for that many epochs, as a
        logistic regression on the embeddings uses every reference cell. Its per-feature
        standardisation is fitted on the cells it trains on and kept fixed (scikit-learn's
        ``StandardScaler``). Otherwise every step runs the network.

        After training, the model calibrates what :func:`sclong_scverse.tl.annotate` uses:
        the distance to the training classes (:meth:`ood_score`, fitted on the training cells'
        pooled decodings) and the confidence below which ``UNKNOWN_RATE`` (5%) of the
        validation cells fall (``calibration_``; with ``refit``, computed before the refit,
        while the validation cells are still unseen).

        Reads the registered values and labels (checked again as :meth:`setup_anndata` checks
        them); writes nothing into ``adata`` (losses and accuracies go to ``model.history``,
        the split to ``train_indices`` / ``validation_indices``).

        Parameters
        ----------
        max_epochs
            Most passes over the training cells. ``None``: 200 when the head trains on cached
            features, 20 when the network runs.
        batch_size
            Cells per step.
        lr
            Peak learning rate (linear warm-up over the first 10% of steps, then cosine).
            ``None``: ``1e-2`` when only the head trains, ``1e-3`` when backbone weights or
            adapters train.
        weight_decay
            AdamW weight decay.
        class_weights
            ``"balanced"`` (default): class ``c`` weighs ``n / (k * n_c)`` (``n`` labelled cells,
            ``k`` classes), so rare types count as much as common ones; ``None``: equal weights;
            or one weight per class (order of :attr:`classes_`).
        train_size, validation_size
            Random split of the cells; the validation loss drives early stopping and the
            validation cells calibrate the confidence threshold.
        early_stopping
            Stop when the validation loss has not improved for ``early_stopping_patience``
            epochs (needs validation cells).
        early_stopping_patience
            Epochs without improvement before stopping. ``None``: 10 on cached features, 5
            when the network runs.
        restore_best
            End with the fine-tuned weights of the epoch with the lowest validation loss.
        refit
            On cached features with validation cells and ``restore_best``: train the head
            again on every cell for the best epoch's number of epochs (``refit_epochs_``;
            ``model.history["train_loss_refit"]``). Ignored when the network trains.
        accelerator, devices, precision
            Lightning settings.
        plan_kwargs
            Passed to :class:`~sclong_scverse.module.ScLongTrainingPlan`.
        **trainer_kwargs
            Passed to the Lightning trainer.
        """
        self._query(None)  # the registered values may have changed since setup
        cached = not self.module._backbone_trains
        if max_epochs is None:
            max_epochs = CACHED_EPOCHS if cached else NETWORK_EPOCHS
        if early_stopping_patience is None:
            early_stopping_patience = CACHED_PATIENCE if cached else NETWORK_PATIENCE
        if lr is None:
            lr = 1e-2 if cached else 1e-3
        self._set_class_weights(class_weights)
        if not 0.0 < train_size <= 1.0:
            raise ScLongInputError(f"train_size must be in (0, 1], got {train_size!r}.")
        n_cells = self.adata.n_obs
        n_validation = (
            int(np.floor(n_cells * validation_size))
            if validation_size
            else n_cells - int(np.ceil(train_size * n_cells))
        )
        if (early_stopping or restore_best) and n_validation == 0:
            if early_stopping:
                raise ScLongInputError(
                    f"early_stopping needs validation cells, but with {n_cells} cells and "
                    f"train_size={train_size:g} none is held out. Use a smaller train_size or "
                    "early_stopping=False."
                )
            restore_best = False
        steps = max(1, int(max_epochs * np.ceil(n_cells * train_size / batch_size)))
        plan_kwargs = {
            "lr": lr,
            "weight_decay": weight_decay,
            "warmup_steps": max(1, steps // 10),
            "redraw_interval": None,
            **(plan_kwargs or {}),
        }
        if precision is not None:
            trainer_kwargs["precision"] = precision
        common = dict(trainer_kwargs, accelerator=accelerator, devices=devices)
        common["batch_size"] = batch_size
        user_callbacks = list(common.pop("callbacks", None) or [])
        if early_stopping:
            trainer_kwargs.setdefault("early_stopping_monitor", "validation_loss")
            trainer_kwargs.setdefault("early_stopping_patience", early_stopping_patience)
        if n_validation:
            trainer_kwargs.setdefault("check_val_every_n_epoch", 1)
        restorer = (
            RestoreBestWeights(self.module, self.module.fine_tuned_state_keys)
            if restore_best
            else None
        )
        callbacks = user_callbacks + ([restorer] if restorer is not None else [])
        trainer_kwargs.pop("callbacks", None)
        features = manager = initial = None
        if cached:
            features = self.get_latent_representation(batch_size=max(batch_size, 64))
            manager = self._feature_manager(features)
            datamodule = self._feature_splitter(manager, train_size, validation_size, batch_size)
            datamodule.setup()
            if self.train_scope_ == "mode":  # a query model keeps the reference's scaling
                self.module.head[0].fit(torch.as_tensor(features[datamodule.train_idx]))
            initial = {k: v.detach().clone() for k, v in self.module.head.state_dict().items()}
            trainer_kwargs["datamodule"] = datamodule
        result = self._fit(
            cached,
            max_epochs=max_epochs,
            batch_size=batch_size,
            accelerator=accelerator,
            devices=devices,
            train_size=train_size,
            validation_size=validation_size,
            early_stopping=early_stopping,
            plan_kwargs=plan_kwargs,
            callbacks=callbacks,
            **trainer_kwargs,
        )
        best = restorer.best_epoch if restorer is not None else None
        if best is not None:
            self.best_epoch_ = best
        self._calibrate(features, batch_size)
        if cached and refit and best is not None:
            self._refit_head(
                manager,
                initial,
                best + 1,
                features,
                plan_kwargs,
                callbacks=user_callbacks,
                **common,
            )
        return result

    # ------------------------------------------------------------------ queries
    def _outputs(self, adata, indices, batch_size):
        self.module.eval()
        with torch.inference_mode():
            for tensors in self._loader(adata, indices, batch_size or 64):
                yield self.module.inference(**self.module._get_inference_input(tensors))

    def _obs_names(self, adata, indices) -> pd.Index:
        names = (self.adata if adata is None else adata).obs_names
        if indices is None:
            return pd.Index(names.copy())
        indices = np.asarray(indices)
        if indices.dtype == bool:
            indices = np.flatnonzero(indices)
        return pd.Index(names[indices])

    def predict(
        self,
        adata: ad.AnnData | None = None,
        indices: Sequence[int] | None = None,
        soft: bool = False,
        batch_size: int | None = None,
    ) -> np.ndarray | pd.DataFrame:
        """Predicted labels, or class probabilities.

        Reads the values of ``adata`` (the layer the model was set up with; checked as
        :meth:`setup_anndata` checks them; genes in another order or partly missing are
        aligned, with a report); writes nothing.

        Parameters
        ----------
        adata
            Cells to annotate (default: the registered data). Its ``obs`` is not read.
        indices
            Cells of ``adata`` (default: all).
        soft
            Return probabilities instead of labels.
        batch_size
            Cells per forward pass.

        Returns
        -------
        ``soft=False``: ``(n_cells,)`` array of class names (str). ``soft=True``: DataFrame
        ``(n_cells, n_classes)`` of probabilities (rows sum to 1), indexed by cell names, one
        column per class.
        """
        probabilities, _ = self._annotation_outputs(adata, indices, batch_size, ood=False)
        if soft:
            return probabilities
        probs = probabilities.to_numpy()
        return np.asarray(self.classes_, dtype=object)[probs.argmax(axis=1)].astype(str)

    def ood_score(
        self,
        adata: ad.AnnData | None = None,
        indices: Sequence[int] | None = None,
        batch_size: int | None = None,
    ) -> np.ndarray:
        """Out-of-distribution score: distance of each cell to the nearest training class.

        The Mahalanobis distance (Lee et al. 2018) of the cell's pooled decodings to the
        nearest class mean of the training cells, with the covariance they share around their
        class means (standardised features, Ledoit-Wolf shrinkage;
        ``module._classifier.ClassDistance``), fitted at the end of :meth:`train`.
        Higher means less like any class the model was trained on (a cell type absent from
        the reference, or a strong batch effect). Unlike the confidence it does not depend on
        the head, which can be confident far from its training data.
        ``calibration_["validation_ood_median"]`` gives the typical value of cells like the
        training cells (the validation cells). Reads the values of ``adata`` as
        :meth:`predict`; writes nothing.

        Parameters
        ----------
        adata, indices, batch_size
            As in :meth:`predict`.

        Returns
        -------
        ``(n_cells,)`` float32 array (NaN for a model saved before this score existed, or
        not trained).
        """
        return self._annotation_outputs(adata, indices, batch_size)[1]

    def _annotation_outputs(
        self, adata, indices, batch_size, ood: bool = True
    ) -> tuple[pd.DataFrame, np.ndarray | None]:
        """Class probabilities (DataFrame) and out-of-distribution scores, one forward pass."""
        probabilities, scores = [], []
        for out in self._outputs(adata, indices, batch_size):
            probabilities.append(torch.softmax(out["logits"].double(), dim=1).cpu())
            if ood:
                scores.append(self.module.ood(out["embedding"]).cpu())
        frame = pd.DataFrame(
            torch.cat(probabilities).numpy(),
            index=self._obs_names(adata, indices),
            columns=list(self.classes_),
        )
        return frame, (torch.cat(scores).numpy() if ood else None)

    def confidence_threshold(self) -> tuple[float, str]:
        """The confidence below which :func:`~sclong_scverse.tl.annotate` labels cells unknown.

        Calibrated by :meth:`train` on the validation cells (cells like the training cells
        that the head did not train on): the highest class probability below which
        ``UNKNOWN_RATE`` (5%) of them fall, so about 5% of cells like the reference's are
        labelled unknown and cells the model is less sure of (types absent from the
        reference, shifted batches) more often. It follows the number of classes and how sure
        the model is, where a fixed cut-off does not (with 5 classes and a model whose median
        confidence is 0.36, a 0.5 cut-off labels every cell unknown). Without validation
        cells (``train_size=1``, or a model not trained here): ``1/k + 0.25 (1 - 1/k)`` for
        ``k`` classes, a quarter of the way from chance to certainty.

        Returns
        -------
        The threshold and its rule (``"validation"`` or ``"chance"``).
        """
        calibration = getattr(self, "calibration_", None) or {}
        if calibration.get("rule") == "validation":
            return float(calibration["confidence_threshold"]), "validation"
        return chance_threshold(len(self.classes_)), "chance"

    def get_latent_representation(
        self,
        adata: ad.AnnData | None = None,
        indices: Sequence[int] | None = None,
        batch_size: int | None = None,
    ) -> np.ndarray:
        """The pooled decodings the head reads (after fine-tuning of the backbone, if any).

        Reads the values of ``adata`` as :meth:`predict`; writes nothing.

        Parameters
        ----------
        adata, indices, batch_size
            As in :meth:`predict`.

        Returns
        -------
        ``(n_cells, dim)`` float32 array.
        """
        parts = [o["embedding"].float().cpu() for o in self._outputs(adata, indices, batch_size)]
        return torch.cat(parts).numpy()
