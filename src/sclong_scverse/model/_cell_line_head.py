"""What the heads registered on a table of cell lines share (drug response, drug combinations).

Their AnnData holds one row per cell line (``obs_names``: the cell-line ids) with a feature
vector in ``adata.X`` or ``adata.obsm[features_key]``; their drugs are SMILES featurised as
DeepCDR graphs. :class:`CellLineTableHead` owns the checks and the scvi-tools field of those
features, the feature matrix, the drugs' packed graphs and lookups, and the check that a loaded
model gets the same cell lines.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import anndata as ad
import numpy as np
from scipy import sparse
from scvi import REGISTRY_KEYS
from scvi.data import AnnDataManager, fields

from ..module import pack_graphs
from ..validation import ScLongInputError
from ._head_base import SCLONGHead


def packed_drug_graphs(graphs: dict) -> tuple:
    """Packed graphs (:func:`~sclong_scverse.module.pack_graphs`) of ``featurize_drugs``."""
    n = [int(k) for k in graphs["n_atoms"]]
    features = [graphs["features"][i, :k] for i, k in enumerate(n)]
    adjacency = [graphs["adjacency"][i, :k, :k] for i, k in enumerate(n)]
    return pack_graphs(features, adjacency)


class CellLineTableHead(SCLONGHead):
    """A head whose AnnData is a cell lines x features table and whose drugs are SMILES."""

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
            raise KeyError(f"features_key={features_key!r} not in adata.obsm ({list(adata.obsm)}).")
        features = adata.X if features_key is None else adata.obsm[features_key]
        features = features.toarray() if sparse.issparse(features) else np.asarray(features)
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
        manager = AnnDataManager(
            fields=[feature_field, *extra_fields], setup_method_args=setup_method_args
        )
        manager.register_fields(adata, **kwargs)
        cls.register_manager(manager)

    def _feature_matrix(self) -> np.ndarray:
        """The registered cell-line features, ``(n_cell_lines, n_features)`` float32."""
        key = self._setup_args["features_key"]
        values = self.adata.X if key is None else self.adata.obsm[key]
        values = values.toarray() if sparse.issparse(values) else np.asarray(values)
        return values.astype(np.float32)

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

    @classmethod
    def _check_loaded_data(cls, adata: ad.AnnData, spec: dict, attrs: dict) -> None:
        """The cell lines must be the saved model's, in the same order."""
        if [str(c) for c in adata.obs_names] != [str(c) for c in spec["cell_lines"]]:
            raise ScLongInputError(
                f"adata's cell lines differ from the saved model's {len(spec['cell_lines'])} "
                "(order included); subset and reorder it."
            )
