"""What the heads registered on a table of cell lines share (drug response, drug combinations).

Their AnnData holds one row per cell line (``obs_names``: the cell-line ids) with a feature
vector in ``adata.X`` or ``adata.obsm[features_key]``; their drugs are SMILES featurised as
DeepCDR graphs. :class:`CellLineTableHead` owns the checks and the scvi-tools field of those
features, the feature matrix, the drugs' packed graphs and lookups, and the check that a loaded
model gets the same cell lines.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd
import torch
from scvi import REGISTRY_KEYS
from scvi.data import fields

from ..errors import ScLongKeyError
from ..module import pack_graphs
from ..validation import ScLongInputError, check_not_view
from ._anndata import register_fields
from ._head_base import SCLONGHead, dense, drug_smiles


def packed_drug_graphs(graphs: dict) -> tuple:
    """Packed graphs (:func:`~sclong_scverse.module.pack_graphs`) of ``featurize_drugs``."""
    n = [int(k) for k in graphs["n_atoms"]]
    features = [graphs["features"][i, :k] for i, k in enumerate(n)]
    adjacency = [graphs["adjacency"][i, :k, :k] for i, k in enumerate(n)]
    return pack_graphs(features, adjacency)


def head_settings(arguments: Mapping[str, Any]) -> dict[str, Any]:
    """A head's architecture settings from its ``__init__``'s ``locals()``, taken first thing.

    Every argument but ``self``, ``adata`` and ``smiles`` (as scvi-tools' ``_get_init_params``
    reads a model's ``__init__``), for :meth:`CellLineTableHead._cell_line_spec`.
    """
    skipped = ("self", "__class__", "adata", "smiles")
    return {name: value for name, value in arguments.items() if name not in skipped}


class CellLineTableHead(SCLONGHead):
    """A head whose AnnData is a cell lines x features table and whose drugs are SMILES."""

    @staticmethod
    def _examples_table(
        adata: ad.AnnData, slot: str, key: str, argument: str, what: str
    ) -> pd.DataFrame:
        """The DataFrame of examples ``adata.<slot>[key]`` a head's ``setup_anndata`` reads.

        Parameters
        ----------
        adata
            The cell lines (not a view).
        slot
            ``"obsm"`` or ``"uns"``.
        key, argument
            The key and the argument that named it (for messages).
        what
            What the DataFrame holds, for messages (``"a DataFrame with columns ..."``).

        Raises
        ------
        KeyError
            ``key`` not in ``adata.<slot>``.
        ScLongInputError
            ``adata`` is a view, or the value is not a DataFrame.
        """
        check_not_view(adata)
        store = getattr(adata, slot)
        if key not in store:
            raise ScLongKeyError(
                f"{argument}={key!r} not in adata.{slot} ({list(store)}); put {what} there."
            )
        table = store[key]
        if not isinstance(table, pd.DataFrame):
            raise ScLongInputError(f"adata.{slot}[{key!r}] must be {what}.")
        return table

    @classmethod
    def _register_cell_lines(
        cls,
        adata: ad.AnnData,
        features_key: str | None,
        setup_method_args: dict,
        extra_fields: Sequence[Any] = (),
        **kwargs,
    ) -> None:
        """Check the cell-line features and register them (plus ``extra_fields``).

        Raises
        ------
        KeyError
            ``features_key`` not in ``adata.obsm``.
        ScLongInputError
            Duplicated cell-line ids; features that are not a finite 2-d table.
        """
        if adata.obs_names.has_duplicates:
            raise ScLongInputError("adata.obs_names (cell-line ids) have duplicates.")
        if features_key is not None and features_key not in adata.obsm:
            raise ScLongKeyError(
                f"features_key={features_key!r} not in adata.obsm ({list(adata.obsm)})."
            )
        features = adata.X if features_key is None else adata.obsm[features_key]
        features = dense(features)
        if features.ndim != 2 or not np.isfinite(features.astype(np.float64)).all():
            raise ScLongInputError(
                "The cell-line features must be a finite 2-d table (NaN or infinite values "
                "found); impute or drop them first, knowingly."
            )
        feature_field = (
            fields.LayerField(REGISTRY_KEYS.X_KEY, None, is_count_data=False)
            if features_key is None
            else fields.ObsmField(REGISTRY_KEYS.X_KEY, features_key, is_count_data=False)
        )
        register_fields(cls, adata, setup_method_args, [feature_field, *extra_fields], **kwargs)

    def _cell_line_spec(
        self, drugs: list[str], smiles: Mapping[str, str], missing_hint: str, **settings: Any
    ) -> dict:
        """The plain-data spec of the drugs (with their SMILES), cell lines and ``settings``.

        ``settings`` (:func:`head_settings`): the widths (``graph_dims``, ``cell_dims``,
        ``fusion_dims``), ``dropout``, ``standardize``, ``max_atoms``, ``seed`` and the head's
        own options (``residual``, ``symmetric``).

        Raises
        ------
        ScLongInputError
            A drug without SMILES (``missing_hint`` says where the drugs come from).
        """
        spec = {
            "drugs": list(drugs),
            "smiles": drug_smiles(drugs, smiles, missing_hint, "drop them from the data"),
            "cell_lines": [str(c) for c in self.adata.obs_names],
        }
        plain = {"dropout": float, "max_atoms": int, "seed": int}
        plain.update(dict.fromkeys(("standardize", "residual", "symmetric"), bool))
        for name, value in settings.items():  # plain numbers and lists, as saved
            if name.endswith("_dims"):
                spec[name] = [int(d) for d in value]
            else:
                spec[name] = plain[name](value) if name in plain else value
        return spec

    def _branches(self, spec: dict) -> dict:
        """The module's shared arguments, after featurising the drugs and seeding.

        The cell-line feature width, the atom width, the branch widths and the dropout.
        """
        graphs = self._featurize(spec)
        torch.manual_seed(int(spec["seed"]))
        return {
            "n_cell_features": self._feature_matrix().shape[1],
            "atom_dim": int(graphs["features"].shape[2]),
            **{key: spec[key] for key in ("graph_dims", "cell_dims", "fusion_dims", "dropout")},
        }

    def _finish_build(self, n_features: int, network: str) -> None:
        """No feature scaling yet, and the model summary (``network``: the drug branch)."""
        self._reset_feature_scaling(n_features)
        spec = self.spec_
        self._model_summary_string = (
            f"{type(self).__name__}: {network} + cell-line branch; {len(spec['drugs'])} drugs, "
            f"{len(spec['cell_lines'])} cell lines, {n_features} cell-line features."
        )

    def _fit_cell_line_scaling(self, lines: Sequence[str]) -> np.ndarray:
        """The feature matrix, its scaling fitted first on ``lines`` with ``standardize``.

        ``lines``: the cell lines of the training examples.
        """
        features = self._feature_matrix()
        if self.spec_["standardize"]:
            rows = [self._cell_index[c] for c in sorted(set(lines))]
            self._fit_feature_scaling(features, rows)
        return features

    def _graph_context(self) -> dict:
        """The drugs' packed graphs as the module's context (``atoms``, ``adjacency``, ...)."""
        return dict(zip(("atoms", "adjacency", "pooling"), self._drug_graphs, strict=True))

    def _feature_matrix(self) -> np.ndarray:
        """The registered cell-line features, ``(n_cell_lines, n_features)`` float32."""
        key = self._setup_args["features_key"]
        values = self.adata.X if key is None else self.adata.obsm[key]
        return dense(values).astype(np.float32)

    def _featurize(self, spec: dict) -> dict:
        """Set ``spec_``, the drugs' packed graphs and the drug / cell-line lookups.

        Returns the featurised drugs (:func:`~sclong_scverse.chem.featurize_drugs`).
        """
        from ..chem import featurize_drugs

        self.spec_ = spec
        graphs = featurize_drugs(
            dict(zip(spec["drugs"], spec["smiles"], strict=True)), max_atoms=spec["max_atoms"]
        )
        self._drug_graphs = packed_drug_graphs(graphs)
        self._drug_index = {d: i for i, d in enumerate(spec["drugs"])}
        self._cell_index = {c: i for i, c in enumerate(spec["cell_lines"])}
        return graphs

    # ------------------------------------------------------------------ evaluation
    #: :meth:`evaluate`: the examples' target column, the baselines (:meth:`baselines`'
    #: columns) and the metrics, ``metrics(truth, prediction) -> dict`` (a staticmethod)
    _target_column: str = "y"
    _baseline_names: tuple[str, ...] = ()

    def _predict_examples(self) -> np.ndarray:
        """The model's prediction for every example (a head's own)."""
        raise NotImplementedError

    def evaluate(self, splits: Sequence[str] = ("validation", "test")) -> pd.DataFrame:
        """The model's and the baselines' scores on each split, with the head's metrics.

        Parameters
        ----------
        splits
            Splits to score (``"train"``, ``"validation"``, ``"test"``).

        Returns
        -------
        Long DataFrame: ``method`` (``"model"`` and the baselines of :meth:`baselines`),
        ``split`` and the head's metrics (drug response: ``pearson``, ``spearman``, ``rmse``,
        ``n_pairs``; drug combinations: ``auroc``, ``aupr``, ``accuracy``, ``n``,
        ``positive_fraction``).
        """
        table = self.baselines()
        table["model"] = self._predict_examples()
        truth = table[self._target_column]
        return self._score_splits(
            ("model", *self._baseline_names),
            splits,
            lambda method, rows: self._metrics(truth[rows], table[method][rows]),
        )

    @classmethod
    def _check_loaded_data(cls, adata: ad.AnnData, spec: dict, attrs: dict) -> None:
        """The cell lines must be the saved model's, in the same order."""
        if [str(c) for c in adata.obs_names] != [str(c) for c in spec["cell_lines"]]:
            raise ScLongInputError(
                f"adata's cell lines differ from the saved model's {len(spec['cell_lines'])} "
                "(order included); subset and reorder it."
            )
