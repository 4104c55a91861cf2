from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import torch
from lightning.pytorch.callbacks import Callback
from scvi import REGISTRY_KEYS
from scvi.model.base import BaseModelClass, UnsupervisedTrainingMixin

from ..genes import GeneVocabulary
from ..module import ScLongTrainingPlan
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
from ..nn import ScLongConfig, ScLongNetwork
from ..pp._checks import (
    ScLongInputError,
    check_not_view,
    check_obs_key,
)
from ._saving import ModelIntegrityError
from ._sclong import (
    SCLONG,
    _align_to_genes,
    _gene_ids,
    _rna,
    check_model_input,
    register_fields,
)

logger = logging.getLogger(__name__)

#: Fewest reference genes a query must hold (fraction) for :meth:`prepare_query_anndata`.
MIN_QUERY_OVERLAP = 0.5


class BackboneMismatchError(ModelIntegrityError):
    """A fine-tuned model's head and adapters are loaded onto another backbone than theirs."""


class _RestoreBest(Callback):
    """Keep the fine-tuned weights of the epoch with the lowest validation loss; restore them."""

    def __init__(self, module: ScLongClassifierModule, monitor: str = "validation_loss"):
        super().__init__()
        self.module = module
        self.monitor = monitor
        self.best = float("inf")
        self.best_epoch: int | None = None
        self.state: dict[str, torch.Tensor] | None = None

    def on_validation_end(self, trainer, pl_module) -> None:
        # after the epoch's metrics are aggregated (as EarlyStopping and ModelCheckpoint)
        value = trainer.callback_metrics.get(self.monitor)
        if value is None or trainer.sanity_checking:
            return
        value = float(value)
        if value < self.best:
            self.best, self.best_epoch = value, int(trainer.current_epoch)
            keys = set(self.module.fine_tuned_state_keys())
            self.state = {
                k: v.detach().clone() for k, v in self.module.state_dict().items() if k in keys
            }

    def on_fit_end(self, trainer, pl_module) -> None:
        if self.state is not None:
            self.module.load_state_dict(self.state, strict=False)


def _label_mapping(categories: Sequence[str], unlabeled_category: str | None):
    """(classes, class index per label code; -1 for the unlabelled category)."""
    classes = [str(c) for c in categories if c != unlabeled_category]
    codes = np.array([-1 if c == unlabeled_category else classes.index(str(c)) for c in categories])
    return classes, codes


class SCLONGClassifier(UnsupervisedTrainingMixin, BaseModelClass):
    """Cell-type annotation by fine-tuning scLong: a classification head on its decodings.

    A cell's merged decodings (the per-gene output of scLong) are pooled over genes and a head
    predicts its label. Three fine-tuning modes: ``"frozen"`` (only the head trains; the
    backbone runs without autograd), ``"partial"`` (the head and the last
    ``n_unfrozen_layers`` Performer layers) and ``"lora"`` (the head and low-rank adapters on
    every attention projection, :mod:`sclong_scverse.nn.lora`). Training is class-weighted
    cross-entropy over labelled cells with a validation split and early stopping.

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
        Pooling of the decodings over genes: ``"max"`` (default, the integration
        benchmark's choice, ``docs/benchmarks.md``), ``"mean"`` or ``"sum"``.
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
    >>> scl.tl.annotate(query, clf)  # obs["sclong_label"], obs["sclong_label_confidence"]
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
        pooling: ClassifierPooling = "max",
        hidden_dim: int | None = None,
        dropout: float = 0.1,
        backbone_sha256: str | None = None,
    ):
        super().__init__(adata)
        if mode not in FINE_TUNE_MODES:
            raise ValueError(f"mode must be one of {FINE_TUNE_MODES}, not {mode!r}.")
        if isinstance(backbone, SCLONG):
            network = copy_network(backbone.module.network)
            vocabulary = backbone.vocabulary
        elif isinstance(backbone, ScLongNetwork):
            network = backbone
            if vocabulary is None:
                raise ValueError("Pass the network's vocabulary with a ScLongNetwork backbone.")
        else:
            raise TypeError(
                "backbone must be an SCLONG model or a ScLongNetwork, not "
                f"{type(backbone).__name__}."
            )
        if not isinstance(vocabulary, GeneVocabulary):
            vocabulary = GeneVocabulary(list(vocabulary))
        if len(vocabulary) != network.config.n_genes:
            raise ValueError(
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
        normalization = check_model_input(
            adata, layer, gene_id_key, normalization, bool(check_normalization)
        )
        setup_method_args = cls._get_setup_method_args(
            cls=cls,
            adata=adata,
            labels_key=labels_key,
            unlabeled_category=unlabeled_category,
            layer=layer,
            batch_key=batch_key,
            gene_id_key=gene_id_key,
            check_normalization=bool(check_normalization),
            normalization=normalization,
        )
        register_fields(cls, adata, setup_method_args, layer, batch_key, labels_key, **kwargs)

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
            raise TypeError(f"model must be an SCLONG, not {type(model).__name__}.")
        args = model._setup_args
        if model._modality is not None:
            raise ValueError("The classifier reads AnnData; this model was set up on a MuData.")
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
    def _setup_args(self) -> dict:
        return self.adata_manager.registry["setup_args"]

    @property
    def _gene_id_key(self) -> str | None:
        return self._setup_args.get("gene_id_key")

    @property
    def _layer(self) -> str | None:
        return self._setup_args.get("layer")

    @property
    def _modality(self) -> None:
        return None

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
        codes = np.asarray(self.adata_manager.get_from_registry(REGISTRY_KEYS.LABELS_KEY)).reshape(
            -1
        )
        target = self.module.label_to_class.cpu().numpy()[codes]
        counts = np.bincount(target[target >= 0], minlength=len(self.classes_))
        return pd.Series(counts, index=self.classes_, name="cells")

    def train(
        self,
        max_epochs: int = 20,
        batch_size: int = 32,
        lr: float | None = None,
        weight_decay: float = 0.01,
        class_weights: str | Sequence[float] | None = "balanced",
        train_size: float = 0.8,
        validation_size: float | None = None,
        early_stopping: bool = True,
        early_stopping_patience: int = 5,
        restore_best: bool = True,
        accelerator: str = "auto",
        devices: int | list[int] | str = "auto",
        precision: str | int | None = None,
        plan_kwargs: dict | None = None,
        **trainer_kwargs,
    ):
        """Fine-tune: class-weighted cross-entropy, validation split, early stopping.

        Reads the registered values and labels (checked again as :meth:`setup_anndata` checks
        them); writes nothing into ``adata`` (losses and accuracies go to ``model.history``).

        Parameters
        ----------
        max_epochs
            Most passes over the training cells.
        batch_size
            Cells per step.
        lr
            Peak learning rate (linear warm-up over the first 10% of steps, then cosine).
            ``None``: ``1e-2`` in ``"frozen"`` mode (only the head trains), ``1e-3`` when
            backbone weights or adapters train.
        weight_decay
            AdamW weight decay.
        class_weights
            ``"balanced"`` (default): class ``c`` weighs ``n / (k * n_c)`` (``n`` labelled cells,
            ``k`` classes), so rare types count as much as common ones; ``None``: equal weights;
            or one weight per class (order of :attr:`classes_`).
        train_size, validation_size
            Random split of the cells; the validation loss drives early stopping.
        early_stopping
            Stop when the validation loss has not improved for ``early_stopping_patience``
            epochs (needs validation cells).
        early_stopping_patience
            Epochs without improvement before stopping.
        restore_best
            End with the fine-tuned weights of the epoch with the lowest validation loss.
        accelerator, devices, precision
            Lightning settings.
        plan_kwargs
            Passed to :class:`~sclong_scverse.module.ScLongTrainingPlan`.
        **trainer_kwargs
            Passed to the Lightning trainer.
        """
        self._query(None)  # the registered values may have changed since setup
        if lr is None:
            lr = 1e-2 if not self.module._backbone_trains else 1e-3
        counts = self.class_counts().to_numpy().astype(np.float64)
        if (counts > 0).sum() < 2:
            raise ScLongInputError(
                f"Only {(counts > 0).sum()} class(es) have labelled cells; need at least 2."
            )
        if isinstance(class_weights, str):
            if class_weights != "balanced":
                raise ValueError(
                    f"class_weights must be 'balanced', None or a list, not {class_weights!r}."
                )
            balanced = counts.sum() / (len(counts) * np.maximum(counts, 1))
            weights = np.where(counts > 0, balanced, 0.0)
        elif class_weights is None:
            weights = np.ones(len(counts))
        else:
            weights = np.asarray(class_weights, dtype=np.float64)
            if weights.shape != (len(counts),) or (weights < 0).any():
                raise ValueError(
                    f"class_weights needs {len(counts)} non-negative values (one per class)."
                )
        self.module.class_weights.copy_(torch.as_tensor(weights, dtype=torch.float32))
        if not 0.0 < train_size <= 1.0:
            raise ValueError(f"train_size must be in (0, 1], got {train_size!r}.")
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
        if early_stopping:
            trainer_kwargs.setdefault("early_stopping_monitor", "validation_loss")
            trainer_kwargs.setdefault("early_stopping_patience", early_stopping_patience)
        if n_validation:
            trainer_kwargs.setdefault("check_val_every_n_epoch", 1)
        callbacks = list(trainer_kwargs.pop("callbacks", None) or [])
        restorer = _RestoreBest(self.module) if restore_best else None
        if restorer is not None:
            callbacks.append(restorer)
        self.module.train()
        try:
            result = super().train(
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
        finally:
            self.module.eval()
        if restorer is not None and restorer.best_epoch is not None:
            self.best_epoch_ = restorer.best_epoch
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
        probabilities = [
            torch.softmax(out["logits"].double(), dim=1).cpu()
            for out in self._outputs(adata, indices, batch_size)
        ]
        probs = torch.cat(probabilities).numpy()
        if soft:
            return pd.DataFrame(
                probs, index=self._obs_names(adata, indices), columns=list(self.classes_)
            )
        return np.asarray(self.classes_, dtype=object)[probs.argmax(axis=1)].astype(str)

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

    # ------------------------------------------------------------------ query mapping
    @classmethod
    def prepare_query_anndata(
        cls,
        adata: ad.AnnData,
        reference_model: SCLONGClassifier | SCLONG,
        return_reference_var_names: bool = False,
        min_overlap: float = MIN_QUERY_OVERLAP,
    ) -> ad.AnnData | pd.Index:
        """A query AnnData on the reference model's genes, see :func:`prepare_query_anndata`.

        Parameters
        ----------
        adata, reference_model, return_reference_var_names, min_overlap
            See :func:`prepare_query_anndata`.

        Returns
        -------
        The prepared AnnData (or the reference's gene names).
        """
        return prepare_query_anndata(
            adata, reference_model, return_reference_var_names, min_overlap
        )

    @classmethod
    def load_query_data(
        cls,
        adata: ad.AnnData,
        reference_model: SCLONGClassifier,
        train: str = "auto",
        accelerator: str = "auto",
        device: int | str = "auto",
    ) -> SCLONGClassifier:
        """A copy of a fine-tuned classifier set up on query data, scvi-tools style.

        The query is registered with the reference's registry (new batch categories are
        added; label categories must be the reference's). If the query lacks the labels
        column, it is written into ``adata.obs[labels_key]`` as the unlabelled category (the
        reference must have one). The returned model trains only the head (``"frozen"``,
        ``"partial"``) or the head and the adapters (``"lora"``); the backbone, with any layers
        fine-tuned on the reference, stays fixed.

        Parameters
        ----------
        adata
            The query, on the reference's genes (:meth:`prepare_query_anndata`).
        reference_model
            The fine-tuned reference classifier (not changed).
        train
            ``"auto"`` (adapters in ``"lora"`` mode, else the head), ``"head"`` or
            ``"adapters"``.
        accelerator, device
            Where the new model runs.

        Returns
        -------
        The query model.

        Raises
        ------
        ValueError
            The query's genes differ from the reference's (run :meth:`prepare_query_anndata`).
        ScLongInputError
            Labels in the query that the reference does not know.
        """
        from scvi.model._utils import parse_device_args

        if not isinstance(reference_model, SCLONGClassifier):
            raise TypeError("reference_model must be a trained SCLONGClassifier.")
        if train not in ("auto", "head", "adapters"):
            raise ValueError(f"train must be 'auto', 'head' or 'adapters', not {train!r}.")
        check_not_view(adata)
        reference_genes = reference_model.adata.var_names
        if not adata.var_names.equals(reference_genes):
            raise ValueError(
                "The query's genes differ from the reference model's (names or order); run "
                "adata = SCLONGClassifier.prepare_query_anndata(adata, reference_model) first."
            )
        registry = reference_model.adata_manager.registry
        args = dict(registry["setup_args"])
        labels_key, unlabeled = args["labels_key"], args.get("unlabeled_category")
        if labels_key not in adata.obs:
            if unlabeled is None:
                raise ScLongInputError(
                    f"The query has no adata.obs[{labels_key!r}] and the reference has no "
                    "unlabeled_category to fill it with; add the column (labels of the "
                    "reference's classes) or annotate with predict()/scl.tl.annotate instead."
                )
            adata.obs[labels_key] = pd.Categorical([unlabeled] * adata.n_obs)
        known = set(reference_model.classes_) | ({unlabeled} if unlabeled is not None else set())
        new = sorted(set(adata.obs[labels_key].astype(str)) - known)
        if new:
            raise ScLongInputError(
                f"The query's adata.obs[{labels_key!r}] has labels the reference does not know "
                f"({new[:10]}); the head predicts only {list(reference_model.classes_)}. Map them "
                f"to the reference's classes{' or to ' + repr(unlabeled) if unlabeled else ''}."
            )
        cls.setup_anndata(adata, source_registry=registry, extend_categories=True, **args)
        network = copy_network(reference_model.module.network)
        model = cls(
            adata,
            network,
            vocabulary=reference_model.vocabulary,
            backbone_sha256=reference_model.backbone_sha256_,
            **reference_model.init_params_["non_kwargs"],
        )
        model.module.load_state_dict(reference_model.module.state_dict())
        scope = train if train != "auto" else ("adapters" if model.mode == "lora" else "head")
        model.module.set_trainable(scope)
        model.train_scope_ = scope
        _, _, torch_device = parse_device_args(
            accelerator=accelerator, devices=device, return_device="torch"
        )
        model.to_device(torch_device)
        model.module.eval()
        return model

    # ------------------------------------------------------------------ save / load
    def save(
        self,
        dir_path: str | os.PathLike,
        prefix: str | None = None,
        overwrite: bool = False,
        save_anndata: bool = False,
        save_backbone: bool = False,
        **anndata_write_kwargs,
    ) -> None:
        """Save the fine-tuned parts and the backbone's checksum (or the whole model).

        Writes, in ``dir_path``: ``model.pt`` (plain data read with
        ``torch.load(weights_only=True)``: the head, the adapters or unfrozen layers, the
        setup registry, classes, training history, and the backbone's configuration,
        vocabulary and sha256; with ``save_backbone`` the backbone's weights too),
        ``adata.h5ad`` when ``save_anndata``, and ``manifest.json`` (sha256 of each file).
        Without the backbone, a fine-tuned 1B model takes megabytes instead of 4 GB;
        :meth:`load` then needs the same backbone and refuses another one.

        Parameters
        ----------
        dir_path
            Folder to write (created).
        prefix
            Prefix of the file names.
        overwrite
            Replace a model saved there.
        save_anndata
            Also write the registered AnnData.
        save_backbone
            Store the full backbone (a self-contained folder).
        **anndata_write_kwargs
            Passed to :meth:`anndata.AnnData.write_h5ad`.
        """
        from ._saving import MODEL_FILE, save_model_file, write_manifest

        folder = Path(dir_path)
        stem = prefix or ""
        if folder.exists() and not folder.is_dir():
            raise ValueError(f"{folder} is a file; give a folder to save the model in.")
        if (folder / f"{stem}{MODEL_FILE}").exists() and not overwrite:
            raise ValueError(
                f"{folder} already holds a saved model; pass overwrite=True to replace it, or "
                "choose another folder."
            )
        folder.mkdir(parents=True, exist_ok=True)
        files = []
        if save_anndata:
            target = folder / f"{stem}adata.h5ad"
            temporary = folder / f".{target.name}.partial"
            try:
                self.adata.write(temporary, **anndata_write_kwargs)
                os.replace(temporary, target)
            finally:
                temporary.unlink(missing_ok=True)
            files.append(target.name)
        state = self.module.state_dict()
        if not save_backbone:
            keys = set(self.module.fine_tuned_state_keys())
            state = {k: v for k, v in state.items() if k in keys}
        attributes = {
            name: value for name, value in self._get_user_attributes() if name.endswith("_")
        }
        content = {
            "model_state_dict": {k: v.detach().cpu() for k, v in state.items()},
            "var_names": self.get_var_names(),
            "attr_dict": attributes,
            "backbone": {
                "sha256": self.backbone_sha256_,
                "included": bool(save_backbone),
                "config": self.module.config.to_dict(),
                "vocabulary": list(self.vocabulary.genes),
            },
        }
        if self._gene_id_key is not None:
            content["gene_ids"] = np.asarray(_gene_ids(self.adata, self._gene_id_key), dtype=object)
        save_model_file(content, folder / f"{stem}{MODEL_FILE}")
        files.append(f"{stem}{MODEL_FILE}")
        write_manifest(
            folder,
            files,
            extra={
                "model": type(self).__name__,
                "mode": self.mode,
                "backbone_sha256": self.backbone_sha256_,
                "backbone_included": bool(save_backbone),
                "config": self.module.config.to_dict(),
            },
            prefix=prefix,
        )

    @classmethod
    def load(
        cls,
        dir_path: str | os.PathLike,
        adata: ad.AnnData | None = None,
        backbone: SCLONG | ScLongNetwork | None = None,
        accelerator: str = "auto",
        device: int | str = "auto",
        prefix: str | None = None,
        verify: bool = True,
    ) -> SCLONGClassifier:
        """Load a saved classifier onto its backbone, safely.

        ``model.pt`` is read with ``torch.load(weights_only=True)``, checked against
        ``manifest.json`` (sha256) and for finite weights. Without a stored backbone, the given
        ``backbone``'s checksum must equal the one saved (computed the same way over its
        weights, :func:`~sclong_scverse.module.backbone_sha256`), else loading is refused.
        ``adata`` is registered (the scvi-tools fields of :meth:`setup_anndata`); its genes
        may be in another order or partly missing (aligned into a new AnnData, with a report).

        Parameters
        ----------
        dir_path
            Folder written by :meth:`save`.
        adata
            Data to attach (default: the AnnData saved with the model); needs the
            ``labels_key`` column (values may be the unlabelled category).
        backbone
            The scLong model (or network) the classifier was fine-tuned on; required unless
            the folder holds the backbone (``save(save_backbone=True)``). It is copied, never
            changed.
        accelerator, device
            Where the model runs.
        prefix
            File name prefix given to :meth:`save`.
        verify
            Check the files against ``manifest.json``.

        Returns
        -------
        The model, in eval mode.

        Raises
        ------
        BackboneMismatchError
            ``backbone`` is not the one the classifier was fine-tuned on.
        ModelIntegrityError
            A checksum mismatch, non-finite weights or weights that do not fit.
        UnsafeFileError
            ``model.pt`` refers to code or objects outside the allow-list.
        """
        from scvi.model._utils import parse_device_args

        from ._saving import read_saved_model, verify_manifest

        _, _, torch_device = parse_device_args(
            accelerator=accelerator, devices=device, return_device="torch"
        )
        folder = Path(dir_path)
        saved = read_saved_model(folder, prefix, verify=verify)
        attr_dict, state = saved["attr_dict"], saved["model_state_dict"]
        info = saved.get("backbone")
        if not isinstance(info, dict) or "sha256" not in info:
            raise ModelIntegrityError(f"{folder} is not a saved SCLONGClassifier.")
        registry = attr_dict.pop("registry_")
        saved_class = registry.get("model_name", cls.__name__)
        if saved_class != cls.__name__:
            raise ValueError(f"{folder} holds a {saved_class} model, not a {cls.__name__}.")
        config = ScLongConfig.from_dict(info["config"])
        vocabulary = GeneVocabulary(list(info["vocabulary"]))
        if info["included"]:
            if backbone is not None:
                raise ValueError(
                    f"{folder} holds its backbone (saved with save_backbone=True); load it "
                    "without backbone=."
                )
            network = ScLongNetwork(config)
            network.set_gene_graph(
                state["network.gene_embedding.edge_index"],
                state["network.gene_embedding.edge_weight"],
            )
        else:
            if backbone is None:
                raise ValueError(
                    f"{folder} holds the fine-tuned head and adapters without the backbone "
                    f"(sha256 {info['sha256'][:16]}...); pass the scLong model it was "
                    f"fine-tuned on: {cls.__name__}.load({str(folder)!r}, adata, "
                    "backbone=SCLONG.load(...))."
                )
            source = backbone.module.network if isinstance(backbone, SCLONG) else backbone
            if not isinstance(source, ScLongNetwork):
                raise TypeError("backbone must be an SCLONG model or a ScLongNetwork.")
            actual = network_sha256(source)
            if actual != info["sha256"]:
                raise BackboneMismatchError(
                    f"Refusing to load {folder} onto this backbone: the classifier was "
                    f"fine-tuned on a backbone with sha256 {info['sha256'][:16]}..., this one "
                    f"has {actual[:16]}... (other weights, genes or configuration). Its head "
                    "and adapters would give meaningless predictions. Pass the scLong model "
                    "it was fine-tuned on."
                )
            network = copy_network(source)
        if adata is None:
            path = folder / f"{prefix or ''}adata.h5ad"
            if not path.exists():
                raise ValueError(
                    f"{folder} was saved without its AnnData; pass the data to attach: "
                    f"{cls.__name__}.load({str(folder)!r}, adata=adata, backbone=...)."
                )
            if verify:
                verify_manifest(folder, [path.name], prefix=prefix)
            adata = ad.read_h5ad(path)
        else:
            var_names = pd.Index(np.asarray(saved["var_names"]).astype(str))
            if not adata.var_names.equals(var_names):
                labels_key = registry["setup_args"]["labels_key"]
                layer = registry["setup_args"].get("layer")
                gene_id_key = registry["setup_args"].get("gene_id_key")
                ids = _gene_ids(adata, gene_id_key)
                model_ids = (
                    pd.Index(np.asarray(saved["gene_ids"]).astype(str))
                    if gene_id_key is not None and saved.get("gene_ids") is not None
                    else var_names
                )
                obs = adata.obs
                adata = _align_to_genes(adata, layer, ids, model_ids, var_names)
                adata.obs = obs.copy()
                if gene_id_key is not None:
                    adata.var[gene_id_key] = model_ids.to_numpy()
                if labels_key not in adata.obs:
                    raise ScLongInputError(f"adata.obs has no {labels_key!r} column (labels_key).")
        cls.setup_anndata(adata, source_registry=registry, **registry["setup_args"])
        non_kwargs = dict(attr_dict.pop("init_params_")["non_kwargs"])
        model = cls(
            adata,
            network,
            vocabulary=vocabulary,
            backbone_sha256=info["sha256"],
            **non_kwargs,
        )
        try:
            if info["included"]:
                model.module.load_state_dict(state)
            else:
                result = model.module.load_state_dict(state, strict=False)
                expected_missing = set(model.module.state_dict()) - set(
                    model.module.fine_tuned_state_keys()
                )
                if result.unexpected_keys or set(result.missing_keys) - expected_missing:
                    raise RuntimeError(
                        f"unexpected {result.unexpected_keys[:3]}, missing "
                        f"{sorted(set(result.missing_keys) - expected_missing)[:3]}"
                    )
        except RuntimeError as error:
            raise ModelIntegrityError(
                f"The weights in {folder} do not fit the configuration saved with them "
                f"({str(error).splitlines()[0]} ...); the file is corrupted or was edited."
            ) from None
        for name, value in attr_dict.items():
            setattr(model, name, value)
        model.module.set_trainable(getattr(model, "train_scope_", "mode"))
        model.to_device(torch_device)
        model.module.eval()
        return model


def prepare_query_anndata(
    adata: ad.AnnData,
    reference_model: SCLONGClassifier | SCLONG,
    return_reference_var_names: bool = False,
    min_overlap: float = MIN_QUERY_OVERLAP,
) -> ad.AnnData | pd.Index:
    """Put a query's values on a reference model's genes, scvi-tools style.

    The query's genes are matched to the genes the reference model was set up with (by
    ``var_names``, or by the ``gene_id_key`` column when the model uses one), reordered, and
    missing genes are filled with 0; the numbers of missing and unused genes are reported (a
    warning and ``uns["sclong_query"]``). Unlike scvi-tools, ``adata`` is not modified: a new
    AnnData is returned (values in ``X`` and in the model's layer, ``obs`` copied). Reads the
    values of the model's layer, validated against the model's normalisation.

    Parameters
    ----------
    adata
        The query.
    reference_model
        A :class:`SCLONGClassifier` or :class:`~sclong_scverse.model.SCLONG`.
    return_reference_var_names
        Only return the reference's gene names.
    min_overlap
        Fewest reference genes (fraction) that must be in the query (0.5): with fewer, the
        query is refused, since most of what the model reads would be missing.

    Returns
    -------
    The prepared AnnData, with ``uns["sclong_query"]`` = ``{"n_reference_genes", "n_found",
    "n_missing", "n_unused", "missing_examples"}``; or the reference's gene names.

    Raises
    ------
    ScLongInputError
        Fewer than ``min_overlap`` of the reference's genes are in the query.
    """
    registered = _rna(reference_model.adata, reference_model._modality)
    if return_reference_var_names:
        return pd.Index(registered.var_names.copy())
    check_not_view(adata)
    gene_id_key = reference_model._gene_id_key
    args = reference_model._setup_args
    layer = reference_model._layer
    model_ids = _gene_ids(registered, gene_id_key)
    ids = _gene_ids(adata, gene_id_key)
    found = model_ids.isin(ids)
    n_found = int(found.sum())
    fraction = n_found / len(model_ids)
    if fraction < min_overlap:
        raise ScLongInputError(
            f"Only {n_found} of the reference model's {len(model_ids)} genes ({fraction:.0%}) "
            f"are in the query; at least {min_overlap:.0%} are needed. Check that both use the "
            "same kind of gene ids (symbols vs Ensembl ids; set gene_id_key in setup_anndata "
            f"when the ids are in an adata.var column): query genes like {list(ids[:3])}, "
            f"reference genes like {list(model_ids[:3])}."
        )
    if layer is not None and layer not in adata.layers:
        raise KeyError(
            f"Layer {layer!r} (the reference's) not in adata.layers ({list(adata.layers)}); run "
            f"scl.pp.normalize(adata, key_added={layer!r}) on the query's raw counts first."
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # reported below, once
        prepared = _align_to_genes(
            adata,
            layer,
            ids,
            model_ids,
            registered.var_names,
            expected_max=(args.get("normalization") or {}).get("max_value"),
            check_normalization=bool(args.get("check_normalization", True)),
        )
    if gene_id_key is not None:
        prepared.var[gene_id_key] = model_ids.to_numpy()
    prepared.obsm.update({k: v for k, v in adata.obsm.items()})
    n_unused = int((~ids.isin(model_ids)).sum())
    missing = list(model_ids[~found][:10])
    prepared.uns["sclong_query"] = {
        "n_reference_genes": len(model_ids),
        "n_found": n_found,
        "n_missing": len(model_ids) - n_found,
        "n_unused": n_unused,
        "missing_examples": missing,
    }
    if n_found < len(model_ids):
        warnings.warn(
            f"{len(model_ids) - n_found} of the reference's {len(model_ids)} genes are absent "
            f"from the query and are filled with 0 (e.g. {missing[:5]}); {n_unused} query genes "
            "are not used.",
            UserWarning,
            stacklevel=2,
        )
    logger.info(
        "query prepared: %d/%d reference genes found, %d query genes unused",
        n_found,
        len(model_ids),
        n_unused,
    )
    return prepared
