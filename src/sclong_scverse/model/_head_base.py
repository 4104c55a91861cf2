"""The shared base of the downstream heads: splits, Lightning training, scaling, save and load.

A head (``SCLONGDrugResponse``, ``SCLONGChemPerturbation``, ``SCLONGDrugCombination``,
``SCLONGPerturbation``) keeps only what is its own: what it registers from AnnData or tables,
its torch module (``module/``, a :class:`~sclong_scverse.module.HeadModuleMixin` whose
``training_loss(batch)`` scores a mini-batch), the examples it trains on and its metrics.
:class:`SCLONGHead` owns the rest, as scvi-tools' ``BaseModelClass`` + mixins do for SCVI and
SCANVI:

- grouped, leakage-free splits (:func:`split_examples`: random, or whole groups such as drugs,
  drug pairs or cell lines held out, validation apart from test);
- training through scvi-tools' ``TrainRunner`` with :class:`~sclong_scverse.module.
  HeadTrainingPlan` over an :class:`~sclong_scverse.data.ExampleDataModule` (``accelerator``,
  ``devices``, ``precision``, early stopping on the validation loss, the best epoch's weights
  restored, ``model.history``, examples/s in the progress bar);
- feature standardisation fitted on training rows only;
- saving and loading through :mod:`sclong_scverse.model._saving` (plain data, manifest,
  ``weights_only`` loading).

See ``docs/adding_a_head.md`` for a walk through with the drug response head.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd
import torch
from scipy import sparse
from scvi.model.base import BaseModelClass

from .._docs import fill_doc
from .._settings import quiet_libraries
from ..errors import ScLongTypeError
from ..validation import ScLongInputError

logger = logging.getLogger(__name__)

#: The split names of every head's examples.
SPLIT_NAMES = ("train", "validation", "test")


def split_examples(
    n_examples: int,
    groups: Sequence[np.ndarray] | None = None,
    test_fraction: float = 0.1,
    validation_fraction: float = 0.1,
    seed: int = 0,
    what: str = "groups",
) -> np.ndarray:
    """Assign examples to ``"train"``, ``"validation"`` and ``"test"``, optionally by group.

    Without ``groups``, examples are drawn at random. With ``groups`` (one or more columns of
    group keys, one key per example each, e.g. the drug, or both drugs of a combination), whole
    groups are drawn from the union of the keys: an example with a key among the test groups is
    a test example, else one with a key among the validation groups a validation example, so
    that test groups are seen neither in training nor in model selection. At least one example
    (group) goes to each of validation and test.

    Parameters
    ----------
    n_examples
        Number of examples.
    groups
        Columns of group keys (``None``: a random split of the examples).
    test_fraction, validation_fraction
        Fractions of examples (random) or of groups.
    seed
        Seed of the draw (numpy ``default_rng``).
    what
        What a group is, for the error message (e.g. ``"drugs"``).

    Returns
    -------
    ``(n_examples,)`` array of split names.

    Raises
    ------
    ValueError
        Fractions out of range.
    ScLongInputError
        Fewer than 3 groups (train, validation and test need one each).
    """
    if not (0 < test_fraction < 1 and 0 < validation_fraction < 1):
        raise ScLongInputError("test_fraction and validation_fraction must be in (0, 1).")
    if test_fraction + validation_fraction >= 1:
        raise ScLongInputError("test_fraction + validation_fraction must be below 1.")
    rng = np.random.default_rng(seed)
    out = np.full(n_examples, "train", dtype=object)
    if groups is None:
        order = rng.permutation(n_examples)
        n_test = max(1, round(test_fraction * n_examples))
        n_val = max(1, round(validation_fraction * n_examples))
        out[order[:n_test]] = "test"
        out[order[n_test : n_test + n_val]] = "validation"
        return out
    columns = [np.asarray(column).astype(str) for column in groups]
    names = np.array(sorted(set().union(*(set(c) for c in columns))), dtype=object)
    if len(names) < 3:
        raise ScLongInputError(
            f"Holding out whole {what} needs at least 3 of them (train, validation, test); "
            f"the data have {len(names)}."
        )
    order = rng.permutation(len(names))
    n_test = max(1, round(test_fraction * len(names)))
    n_val = max(1, round(validation_fraction * len(names)))
    test = list(names[order[:n_test]])
    validation = list(names[order[n_test : n_test + n_val]])
    in_test = np.zeros(n_examples, dtype=bool)
    in_val = np.zeros(n_examples, dtype=bool)
    for column in columns:
        in_test |= np.isin(column, test)
        in_val |= np.isin(column, validation)
    out[in_val] = "validation"
    out[in_test] = "test"
    return out


def feature_scaling(table: np.ndarray, rows) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation of ``table[rows]`` (columns without spread scale by 1)."""
    mean = table[rows].mean(axis=0)
    scale = table[rows].std(axis=0)
    return mean.astype(np.float32), np.where(scale > 1e-8, scale, 1.0).astype(np.float32)


#: Ridge penalties tried by :func:`ridge_probe` (chosen on the validation rows).
PROBE_ALPHAS = (0.1, 1.0, 10.0, 100.0, 1000.0)


def fit_ridge(
    features: np.ndarray,
    targets: np.ndarray,
    rows: dict[str, np.ndarray],
    alphas: Sequence[float] = PROBE_ALPHAS,
) -> tuple[np.ndarray, np.ndarray, float]:
    """The linear probe every head is held to: ridge regression on the head's own inputs.

    Columns are standardised on the training rows; the penalty is the one of ``alphas`` with
    the lowest validation MSE (the first when there are no validation rows); the probe is fitted
    on the training rows only. The coefficients are returned in the features' own units.

    Parameters
    ----------
    features
        ``(n_examples, n_features)`` inputs (the same the head reads).
    targets
        ``(n_examples,)`` or ``(n_examples, n_outputs)`` values.
    rows
        ``{"train", "validation", ...}`` -> example positions.
    alphas
        Ridge penalties to choose from.

    Returns
    -------
    ``coef`` (``(n_features,)`` or ``(n_features, n_outputs)``), ``intercept`` and the chosen
    penalty: predictions are ``features @ coef + intercept``.
    """
    from sklearn.linear_model import Ridge

    features = np.asarray(features, dtype=np.float64)
    targets = np.asarray(targets, dtype=np.float64)
    mean, scale = feature_scaling(features, rows["train"])
    scaled = (features - mean) / scale
    train, validation = rows["train"], rows.get("validation", np.zeros(0, dtype=np.int64))
    best_alpha, best_error = float(alphas[0]), np.inf
    if len(validation):
        for alpha in alphas:
            fit = Ridge(alpha=float(alpha)).fit(scaled[train], targets[train])
            error = float(np.mean((fit.predict(scaled[validation]) - targets[validation]) ** 2))
            if error < best_error:
                best_alpha, best_error = float(alpha), error
    fit = Ridge(alpha=best_alpha).fit(scaled[train], targets[train])
    coef = np.asarray(fit.coef_, dtype=np.float64).T / scale.astype(np.float64).reshape(
        -1, *([1] * (np.ndim(fit.coef_) - 1))
    )
    intercept = np.asarray(fit.intercept_) - mean.astype(np.float64) @ coef
    return coef, intercept, best_alpha


#: The training settings every head's ``train`` takes and hands to :meth:`SCLONGHead._fit`.
TRAINING_SETTINGS = (
    "max_epochs",
    "batch_size",
    "lr",
    "weight_decay",
    "early_stopping_patience",
    "accelerator",
    "devices",
    "precision",
    "seed",
)


def training_settings(arguments: Mapping[str, Any]) -> dict[str, Any]:
    """The settings of :data:`TRAINING_SETTINGS` among a head's ``train`` arguments.

    Parameters
    ----------
    arguments
        The ``train`` call's ``locals()``: its named settings and its ``trainer_kwargs``
        (passed on to the Lightning trainer), as scvi-tools' ``_get_setup_method_args``
        reads a ``setup_anndata`` call.

    Returns
    -------
    Keyword arguments for :meth:`SCLONGHead._fit`.
    """
    settings = {name: arguments[name] for name in TRAINING_SETTINGS}
    return {**settings, **dict(arguments.get("trainer_kwargs") or {})}


def drug_smiles(
    drugs: Sequence[str], smiles: Mapping[str, str], source: str, fix: str
) -> list[str]:
    """The SMILES of ``drugs``, in order (``smiles``' keys read as text).

    Parameters
    ----------
    drugs
        The head's drugs.
    smiles
        Drug name -> SMILES, as the user gave them.
    source, fix
        For the message: where the drugs come from (``"adata"``) and what else the user can
        do besides passing their SMILES (``"drop their profiles"``).

    Raises
    ------
    ScLongInputError
        A drug without SMILES.
    """
    smiles = {str(k): v for k, v in dict(smiles).items()}
    missing = [d for d in drugs if d not in smiles]
    if missing:
        raise ScLongInputError(
            f"{len(missing)} drugs of {source} have no SMILES (e.g. {missing[:5]}); pass smiles "
            f"for them or {fix}."
        )
    return [str(smiles[d]) for d in drugs]


def dense(values: Any) -> np.ndarray:
    """A registered matrix (dense or scipy sparse) as a dense array."""
    return values.toarray() if sparse.issparse(values) else np.asarray(values)


def ridge_probe(
    features: np.ndarray,
    targets: np.ndarray,
    rows: dict[str, np.ndarray],
    alphas: Sequence[float] = PROBE_ALPHAS,
) -> tuple[np.ndarray, float]:
    """Predictions of :func:`fit_ridge`'s probe for every example, and the chosen penalty."""
    coef, intercept, alpha = fit_ridge(features, targets, rows, alphas)
    return np.asarray(features, dtype=np.float64) @ coef + intercept, alpha


class SCLONGHead(BaseModelClass):
    """Base class of the downstream heads (see the module notes).

    A subclass builds ``self.module`` (a :class:`~sclong_scverse.module.HeadModuleMixin`) and
    ``self.spec_`` (plain data that rebuilds it) in ``_build(spec)``, keeps its examples in a
    table named by :attr:`_examples_attr` with a ``"split"`` column, and trains by handing its
    example tensors to :meth:`_fit`.
    """

    #: The attribute holding the examples table (with its ``"split"`` column).
    _examples_attr: str = "pairs_"
    #: Columns of the examples table saved as text.
    _text_columns: tuple[str, ...] = ("split",)
    #: What one example is, in messages (``"pairs"``, ``"profiles"``, ``"triples"``).
    _example_noun: str = "examples"
    #: :meth:`split`'s kinds: kind -> columns of the examples table held out together
    #: (``None``: examples at random). A head with other groups overrides :meth:`_split_groups`;
    #: a head without any (it splits otherwise) says how in :attr:`_split_hint`.
    split_kinds: Mapping[str, tuple[str, ...] | None] = {}
    _split_hint: str = ""
    #: :meth:`split`'s defaults for this head.
    split_defaults: Mapping[str, Any] = {
        "kind": "random",
        "test_fraction": 0.1,
        "validation_fraction": 0.1,
    }
    #: :meth:`train`'s defaults for this head (the published recipe it follows).
    train_defaults: Mapping[str, Any] = {"max_epochs": 100, "batch_size": 256, "lr": 1e-3}

    # ------------------------------------------------------------------ small shared parts
    @property
    def _setup_args(self) -> dict:
        return self.adata_manager._get_setup_method_args()["setup_args"]

    @property
    def _device(self) -> torch.device:
        return next(self.module.parameters()).device

    @property
    def _examples(self) -> pd.DataFrame:
        return getattr(self, self._examples_attr)

    def _standardized(self, features: np.ndarray) -> torch.Tensor:
        """Features scaled as fitted on the training rows (:meth:`_fit_feature_scaling`)."""
        return torch.as_tensor(
            (np.asarray(features, dtype=np.float32) - self.feature_mean_) / self.feature_scale_
        )

    def _fit_feature_scaling(self, table: np.ndarray, rows) -> None:
        """Fit ``feature_mean_`` / ``feature_scale_`` on ``table[rows]`` (training rows only)."""
        self.feature_mean_, self.feature_scale_ = feature_scaling(table, rows)

    def _assign_split(
        self,
        groups: Sequence[np.ndarray] | None,
        kind: str,
        test_fraction: float,
        validation_fraction: float,
        seed: int,
        what: str = "groups",
    ) -> None:
        """Write the examples' ``"split"`` column and ``split_`` (the split's settings)."""
        table = self._examples
        table["split"] = split_examples(
            len(table), groups, test_fraction, validation_fraction, seed, what
        )
        self.split_ = {
            "kind": kind,
            "test_fraction": float(test_fraction),
            "validation_fraction": float(validation_fraction),
            "seed": int(seed),
        }

    def _init_examples(self, examples: pd.DataFrame) -> None:
        """Finish ``__init__``: the examples (all ``"train"`` until :meth:`split`), no history."""
        examples["split"] = "train"
        setattr(self, self._examples_attr, examples)
        self.history_ = None
        self.init_params_ = {"non_kwargs": {}, "kwargs": {}}

    def _split_rows(self) -> dict[str, np.ndarray]:
        split = self._examples["split"].astype(str).to_numpy()
        return {name: np.flatnonzero(split == name) for name in SPLIT_NAMES}

    def _reset_feature_scaling(self, width: int) -> None:
        """No scaling yet (:meth:`train` fits it): mean 0, scale 1 for ``width`` features."""
        self.feature_mean_ = np.zeros(width, dtype=np.float32)
        self.feature_scale_ = np.ones(width, dtype=np.float32)

    # ------------------------------------------------------------------ splits
    def _split_groups(self, kind: str) -> tuple[list[np.ndarray] | None, str]:
        """Group-key columns that ``kind`` holds out together (``None``: random), their name."""
        if not self.split_kinds:
            raise ScLongTypeError(f"{type(self).__name__} has no split(): {self._split_hint}")
        if kind not in self.split_kinds:
            raise ScLongInputError(f"split must be one of {tuple(self.split_kinds)}, not {kind!r}.")
        columns = self.split_kinds[kind]
        if columns is None:
            return None, "groups"
        what = " and ".join(f"{c.replace('_', ' ')}s" for c in columns)  # for the messages
        return [self._examples[c].to_numpy() for c in columns], what

    def _split_summary(self) -> pd.DataFrame:
        """Per split: examples and distinct values of each group column."""
        table = self._examples
        columns = dict.fromkeys(c for cols in self.split_kinds.values() if cols for c in cols)
        summary = {self._example_noun: ("split", "size")}
        summary |= {f"{c}s": (c, "nunique") for c in columns}
        return table.groupby("split").agg(**summary)

    def split(
        self,
        kind: str | None = None,
        test_fraction: float | None = None,
        validation_fraction: float | None = None,
        seed: int = 0,
    ) -> pd.DataFrame:
        """Assign the examples to train / validation / test, whole groups held out.

        ``"random"`` draws examples at random; the other kinds of the head
        (:attr:`split_kinds`, e.g. ``"leave_drug_out"``, ``"leave_cell_line_out"``) draw whole
        groups (:func:`split_examples`): an example with a test group is a test example, so
        that test groups are seen neither in training nor in model selection. Writes the
        ``"split"`` column of the examples table (``model.pairs_``, ``model.profiles_``,
        ``model.triples_``) and ``model.split_``; nothing in ``adata``.

        Parameters
        ----------
        kind
            One of :attr:`split_kinds` (default: the head's :attr:`split_defaults`).
        test_fraction, validation_fraction
            Fractions of examples (random) or of groups (default: :attr:`split_defaults`).
        seed
            Seed of the draw.

        Returns
        -------
        Per split: the number of examples and of distinct drugs, cell lines, ...

        Raises
        ------
        ValueError
            An unknown ``kind`` or fractions out of range.
        ScLongInputError
            Fewer than 3 groups to hold out.
        """
        defaults = self.split_defaults
        kind = defaults["kind"] if kind is None else kind
        groups, what = self._split_groups(kind)
        self._assign_split(
            groups,
            kind,
            defaults["test_fraction"] if test_fraction is None else test_fraction,
            defaults["validation_fraction"] if validation_fraction is None else validation_fraction,
            seed,
            what,
        )
        return self._split_summary()

    # ------------------------------------------------------------------ training
    def _training_examples(self, rows: dict[str, np.ndarray]) -> dict[str, Any]:
        """The example tensors of :meth:`_fit`, after fitting what the training rows fit.

        A head's own: feature scaling, output offset, the wide part, the module's context.
        """
        raise NotImplementedError

    def train(
        self,
        max_epochs: int | None = None,
        batch_size: int | None = None,
        lr: float | None = None,
        weight_decay: float = 0.0,
        early_stopping_patience: int | None = 10,
        accelerator: str = "auto",
        devices: int | list[int] | str = "auto",
        precision: str | int | None = None,
        seed: int = 0,
        **trainer_kwargs: Any,
    ) -> pd.DataFrame:
        """Train on the training examples; keep the epoch with the lowest validation loss.

        Trains through scvi-tools' ``TrainRunner`` (Lightning), as ``SCVI.train`` does. The
        test examples are not read: what the head fits before training (feature scaling,
        output offset, the wide part with ``residual``: see the class notes) is fitted on the
        training examples. Writes nothing into ``adata``; the history goes to
        ``model.history`` (``train_loss``, ``validation_loss``: the head's loss per epoch),
        the best epoch to ``model.best_epoch_``.

        Parameters
        ----------
        max_epochs, batch_size, lr
            Most passes over the training examples, examples per step and Adam's learning
            rate; ``None``: the head's :attr:`train_defaults` (its published recipe).
        weight_decay
            Adam's weight decay.
        early_stopping_patience
            Stop after this many epochs without a lower validation loss (``None``: never).
        accelerator, devices, precision
            Lightning settings (``"auto"``: a GPU when there is one).
        seed
            Seed of the shuffles and dropout.
        **trainer_kwargs
            Passed to the Lightning trainer (e.g. ``enable_progress_bar=False``).

        Returns
        -------
        ``train_loss``, ``validation_loss`` per epoch.

        Raises
        ------
        ScLongInputError
            No training examples.
        """
        rows = self._split_rows()
        if not len(rows["train"]):
            raise ScLongInputError(
                f"No training {self._example_noun}; call model.split(...) with fractions < 1."
            )
        settings = training_settings(locals())
        for name, value in self.train_defaults.items():
            if settings.get(name) is None:
                settings[name] = value
        return self._fit(self._training_examples(rows), rows, **settings)

    def _fit(
        self,
        examples: dict[str, torch.Tensor | np.ndarray],
        rows: dict[str, np.ndarray],
        *,
        max_epochs: int,
        batch_size: int,
        lr: float,
        weight_decay: float,
        early_stopping_patience: int | None,
        accelerator: str,
        devices: int | list[int] | str,
        precision: str | int | None,
        seed: int,
        augment: Callable | None = None,
        optimizer: str = "Adam",
        restore_best: bool = True,
        trainable_keys: Callable[[], list[str]] | None = None,
        **trainer_kwargs: Any,
    ) -> pd.DataFrame:
        """Train ``self.module`` on ``examples`` through scvi-tools' TrainRunner.

        Parameters
        ----------
        examples
            Field -> ``(n_examples, ...)`` tensor; a mini-batch is the dict of its rows.
        rows
            ``{"train", "validation", "test"}`` -> example positions.
        max_epochs, batch_size, lr, weight_decay
            The schedule (Adam or AdamW, ``optimizer``).
        early_stopping_patience
            Stop after this many epochs without a lower validation loss (``None``: never).
        accelerator, devices, precision
            Lightning settings (``"auto"`` takes a GPU when there is one).
        seed
            Seed of the shuffles, the augmentation draws and dropout.
        augment
            Passed to :class:`~sclong_scverse.data.ExampleDataModule`.
        restore_best
            End with the weights of the epoch with the lowest validation loss.
        trainable_keys
            State-dict keys to snapshot for ``restore_best`` (default: all).
        **trainer_kwargs
            Passed to the Lightning trainer (e.g. ``gradient_clip_val``, ``callbacks``,
            ``enable_progress_bar``).

        Returns
        -------
        The history (``train_loss``, ``validation_loss`` per epoch, NaN without validation);
        writes ``model.history_`` (scvi-tools' dict of per-metric frames), ``best_epoch_``,
        ``is_trained_``.
        """
        from scvi.train import TrainRunner

        from ..data import ExampleDataModule
        from ..module import HeadTrainingPlan, RestoreBestWeights
        from ..module._head import VALIDATION_LOSS

        if int(max_epochs) < 1:
            raise ScLongInputError(f"max_epochs must be at least 1, got {max_epochs!r}.")
        if int(batch_size) < 1:
            raise ScLongInputError(f"batch_size must be at least 1, got {batch_size!r}.")
        if not len(rows["train"]):
            raise ScLongInputError(
                f"No training examples in {type(self).__name__}.{self._examples_attr}; call "
                "model.split(...) with fractions < 1."
            )
        torch.manual_seed(int(seed))
        datamodule = ExampleDataModule(
            examples,
            rows["train"],
            rows["validation"],
            rows["test"],
            batch_size=batch_size,
            seed=seed,
            augment=augment,
        )
        has_validation = datamodule.n_val > 0
        plan = HeadTrainingPlan(self.module, lr=lr, weight_decay=weight_decay, optimizer=optimizer)
        callbacks = list(trainer_kwargs.pop("callbacks", None) or [])
        restorer = None
        if restore_best and has_validation:
            restorer = RestoreBestWeights(self.module, trainable_keys)
            callbacks.append(restorer)
        if has_validation:
            trainer_kwargs.setdefault("check_val_every_n_epoch", 1)
        if early_stopping_patience is not None and has_validation:
            trainer_kwargs.setdefault("early_stopping", True)
            trainer_kwargs.setdefault("early_stopping_monitor", VALIDATION_LOSS)
            trainer_kwargs.setdefault("early_stopping_patience", int(early_stopping_patience))
        if precision is not None:
            trainer_kwargs["precision"] = precision
        trainer_kwargs.setdefault("log_every_n_steps", 1)
        with quiet_libraries(), warnings.catch_warnings():
            runner = TrainRunner(
                self,
                training_plan=plan,
                data_splitter=datamodule,
                max_epochs=int(max_epochs),
                accelerator=accelerator,
                devices=devices,
                callbacks=callbacks,
                **trainer_kwargs,
            )
            warnings.filterwarnings("ignore", message=".*does not have many workers.*")
            warnings.filterwarnings("ignore", message=".*smaller than the logging interval.*")
            runner()
        self.module.eval()
        self.best_epoch_ = None if restorer is None else restorer.best_epoch
        return self.history_frame()

    # ------------------------------------------------------------------ evaluation
    def _score_splits(
        self,
        methods: Sequence[str],
        splits: Sequence[str],
        score: Callable[[str, np.ndarray], Mapping[str, Any]],
    ) -> pd.DataFrame:
        """One row per method and split: ``score(method, mask of the split's examples)``."""
        split = self._examples["split"].astype(str).to_numpy()
        rows = [
            {"method": method, "split": name, **score(method, split == name)}
            for method in methods
            for name in splits
        ]
        return pd.DataFrame(rows)

    def _resolve_drugs(
        self, drugs: Sequence[str] | Mapping[str, str] | None, featurize: Callable[[dict], Any]
    ) -> tuple[list[str], np.ndarray, Any]:
        """A query's drugs: names, rows, and their graphs (``None``: the model's own graphs).

        ``drugs``: ``None`` (the model's), names the model knows, or a mapping name -> SMILES
        (featurised by ``featurize``; rows are then positions in those graphs).
        """
        if isinstance(drugs, Mapping):
            names = [str(d) for d in drugs]
            return names, np.arange(len(names)), featurize({str(k): v for k, v in drugs.items()})
        names = list(self.spec_["drugs"]) if drugs is None else [str(d) for d in drugs]
        unknown = [d for d in names if d not in self._drug_index]
        if unknown:
            raise ScLongInputError(
                f"Unknown drugs {unknown[:10]}; pass a mapping name -> SMILES for new drugs."
            )
        return names, np.array([self._drug_index[d] for d in names], dtype=np.int64), None

    def history_frame(self) -> pd.DataFrame:
        """``train_loss`` and ``validation_loss`` per epoch (NaN where not computed)."""
        history = self.history_ or {}
        columns = {}
        for name in ("train_loss", "validation_loss"):
            frame = history.get(name)
            if frame is not None and len(frame):
                columns[name] = np.asarray(frame.to_numpy(dtype=np.float64)).reshape(-1)
        n = max((len(v) for v in columns.values()), default=0)
        out = pd.DataFrame(index=pd.RangeIndex(n, name="epoch"))
        for name in ("train_loss", "validation_loss"):
            values = np.full(n, np.nan)
            if name in columns:
                values[: len(columns[name])] = columns[name]
            out[name] = values
        return out

    # ------------------------------------------------------------------ save / load
    def _saved_attributes(self) -> dict:
        """The head's own attributes to save besides weights, spec, registry and history."""
        from ._saving import text_columns

        table = self._examples
        return {
            self._examples_attr: text_columns(table, self._text_columns),
            "split_": getattr(self, "split_", None),
            "best_epoch_": getattr(self, "best_epoch_", None),
            "feature_mean_": np.asarray(self.feature_mean_),
            "feature_scale_": np.asarray(self.feature_scale_),
        }

    def _restore_attributes(self, attrs: dict) -> None:
        """Set the attributes saved by :meth:`_saved_attributes` on a loaded model."""
        setattr(self, self._examples_attr, attrs[self._examples_attr])
        self.split_ = attrs.get("split_")
        self.best_epoch_ = attrs.get("best_epoch_")
        self.feature_mean_ = np.asarray(attrs["feature_mean_"], dtype=np.float32)
        self.feature_scale_ = np.asarray(attrs["feature_scale_"], dtype=np.float32)

    def _saved_spec(self) -> dict:
        """The spec to save (plain data; default ``spec_``)."""
        return dict(self.spec_)

    @classmethod
    def _check_loaded_data(cls, adata: ad.AnnData, spec: dict, attrs: dict) -> None:
        """Refuse an AnnData that is not the one the saved model was built on (raise)."""

    @fill_doc
    def save(
        self,
        dir_path: str | os.PathLike,
        prefix: str | None = None,
        overwrite: bool = False,
    ) -> None:
        """Save as plain data (``model.pt``, loads with ``weights_only=True``) + manifest.

        Writes ``model.pt`` (weights, the spec that rebuilds the module, the examples and
        their split, feature scaling, the training history) and ``manifest.json`` (sha256,
        versions) in ``dir_path``; reads nothing from ``adata``.

        Parameters
        ----------
        {save_folder}
        """
        from ._saving import save_head

        save_head(
            self,
            dir_path,
            prefix,
            overwrite,
            spec=self._saved_spec(),
            attrs=self._saved_attributes(),
        )

    @classmethod
    def _load_network(cls, spec: dict, state: dict):
        """A network to pass to ``_build`` (heads with a scLong backbone); ``None``: none."""
        return None

    @classmethod
    def load(
        cls,
        dir_path: str | os.PathLike,
        adata: ad.AnnData,
        prefix: str | None = None,
        verify: bool = True,
    ):
        """Load a saved model safely (``torch.load(weights_only=True)``, manifest checked).

        Registers ``adata`` as :meth:`setup_anndata` did when the model was saved (same keys);
        it must hold the saved model's data (checked).

        Parameters
        ----------
        dir_path
            Folder written by :meth:`save`.
        adata
            The data the model was built on.
        prefix
            File name prefix given to :meth:`save`.
        verify
            Check the manifest first.

        Returns
        -------
        The model, in eval mode.
        """
        from ._saving import load_head

        def check(spec: dict, attrs: dict) -> None:
            cls._check_loaded_data(adata, spec, attrs)

        builds_network = cls._load_network.__func__ is not SCLONGHead._load_network.__func__
        model, attrs = load_head(
            cls,
            dir_path,
            adata,
            prefix,
            verify,
            check=check,
            network=cls._load_network if builds_network else None,
        )
        model._restore_attributes(attrs)
        return model
