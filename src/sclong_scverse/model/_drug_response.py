"""scvi-tools model class of the DeepCDR-style drug response head (ln IC50 regression)."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Literal

import anndata as ad
import numpy as np
import pandas as pd
import torch
from scvi.data import fields

from ..module import DrugResponseModule
from ..validation import ScLongInputError
from ._cell_line_head import CellLineTableHead, head_settings, packed_drug_graphs
from ._head_base import fit_ridge, ridge_probe, split_examples

logger = logging.getLogger(__name__)

SplitKind = Literal["random", "leave_drug_out", "leave_cell_line_out"]
SPLITS = ("random", "leave_drug_out", "leave_cell_line_out")
#: Methods of :meth:`SCLONGDrugResponse.evaluate` besides the model.
BASELINES = ("drug_mean", "cell_line_mean", "drug_cell_line_mean", "ridge")
RESPONSE_KEY = "ln_ic50"


def regression_metrics(truth: np.ndarray, prediction: np.ndarray) -> dict[str, float]:
    """Pearson, Spearman, RMSE and the number of pairs (NaN correlations for constant vectors).

    Parameters
    ----------
    truth, prediction
        Same-length vectors.

    Returns
    -------
    ``{"pearson", "spearman", "rmse", "n_pairs"}``.
    """
    from scipy import stats

    truth = np.asarray(truth, dtype=np.float64)
    prediction = np.asarray(prediction, dtype=np.float64)
    n = len(truth)
    out = {"pearson": np.nan, "spearman": np.nan, "rmse": np.nan, "n_pairs": float(n)}
    if n == 0:
        return out
    out["rmse"] = float(np.sqrt(np.mean((truth - prediction) ** 2)))
    if n > 1 and np.ptp(truth) > 0 and np.ptp(prediction) > 0:
        out["pearson"] = float(stats.pearsonr(truth, prediction)[0])
        out["spearman"] = float(stats.spearmanr(truth, prediction)[0])
    return out


def baseline_predictions(
    train: pd.DataFrame, pairs: pd.DataFrame, response: str = RESPONSE_KEY
) -> pd.DataFrame:
    """The three mean baselines fitted on ``train`` pairs, predicted for ``pairs``.

    - ``drug_mean``: the drug's mean over its training pairs;
    - ``cell_line_mean``: the cell line's mean over its training pairs;
    - ``drug_cell_line_mean``: the additive two-way fit ``drug mean + cell-line mean - grand
      mean`` (both means from the training pairs).

    A drug (cell line) without training pairs (a held-out one) gets the grand mean as its mean,
    so that its term drops out: under ``leave_drug_out`` the drug mean is a constant and its
    correlations are undefined (NaN).

    Parameters
    ----------
    train
        Training pairs: columns ``drug``, ``cell_line``, ``response``.
    pairs
        Pairs to predict: columns ``drug``, ``cell_line``.
    response
        The response column of ``train``.

    Returns
    -------
    One column per baseline, ``pairs``' index.
    """
    grand = float(train[response].mean())
    drug = train.groupby("drug")[response].mean()
    cell = train.groupby("cell_line")[response].mean()
    d = pairs["drug"].map(drug).fillna(grand).to_numpy(dtype=np.float64)
    c = pairs["cell_line"].map(cell).fillna(grand).to_numpy(dtype=np.float64)
    return pd.DataFrame(
        {"drug_mean": d, "cell_line_mean": c, "drug_cell_line_mean": d + c - grand},
        index=pairs.index,
    )


def split_pairs(
    pairs: pd.DataFrame,
    kind: SplitKind,
    test_fraction: float = 0.1,
    validation_fraction: float = 0.1,
    seed: int = 0,
) -> np.ndarray:
    """Assign pairs to ``"train"``, ``"validation"`` and ``"test"``.

    ``random``: pairs drawn at random; ``leave_drug_out`` / ``leave_cell_line_out``: whole drugs
    / cell lines drawn, all of their pairs going with them (at least one group each in
    validation and test), so that test drugs / cell lines are never seen in training or model
    selection.

    Parameters
    ----------
    pairs
        Columns ``drug``, ``cell_line``.
    kind
        ``"random"``, ``"leave_drug_out"`` or ``"leave_cell_line_out"``.
    test_fraction, validation_fraction
        Fractions of pairs (``random``) or of drugs / cell lines.
    seed
        Seed of the draw (numpy ``default_rng``).

    Returns
    -------
    ``(n_pairs,)`` array of split names.
    """
    if kind not in SPLITS:
        raise ScLongInputError(f"split must be one of {SPLITS}, not {kind!r}.")
    if kind == "random":
        return split_examples(len(pairs), None, test_fraction, validation_fraction, seed)
    column = "drug" if kind == "leave_drug_out" else "cell_line"
    return split_examples(
        len(pairs),
        [pairs[column].astype(str).to_numpy()],
        test_fraction,
        validation_fraction,
        seed,
        what=f"{column.replace('_', ' ')}s",
    )


class SCLONGDrugResponse(CellLineTableHead):
    """DeepCDR-style cancer drug response model: drug graph network + cell-line vector -> ln IC50.

    The AnnData holds one row per cell line (or sample): its feature vector in ``adata.X`` or
    ``adata.obsm[features_key]`` (scLong's pooled representation from
    :func:`~sclong_scverse.tl.cell_line_embedding`, or any per-cell-line table: expression,
    mutations, tissue one-hot; the model does not care where the numbers come from), and the
    measured responses as a cell lines x drugs DataFrame in ``adata.obsm[response_key]`` (NaN
    where a pair was not measured). Drugs are given as SMILES and featurised with
    :func:`~sclong_scverse.chem.deepcdr_graph` (75-d atoms, <= ``max_atoms`` atoms; RDKit, the
    ``[chem]`` extra).

    The training pairs are split with :meth:`split` (``random``, ``leave_drug_out``,
    ``leave_cell_line_out``; validation kept apart from test): training uses the training pairs,
    model selection (the best epoch, early stopping) the validation pairs only, and the test pairs
    are read only by :meth:`evaluate`. :meth:`evaluate` scores the model next to three mean
    baselines (drug mean, cell-line mean, drug + cell-line mean), which are strong on the random
    split (see ``docs/drug_response.md``). :meth:`split` defaults to ``leave_drug_out`` with
    10% / 10% of the drugs for test / validation; :meth:`train` (MSE) to DeepCDR's recipe, 100
    epochs of 256 pairs at Adam lr 1e-3, and first fits on the training pairs the feature
    scaling (their cell lines), the output offset (their mean ln IC50) and the wide part.

    Parameters
    ----------
    adata
        AnnData registered with :meth:`setup_anndata` (cell lines x features).
    smiles
        Drug name -> SMILES for every drug (column) of the response table.
    graph_dims, cell_dims, fusion_dims
        Widths of the drug graph convolutions, the cell-line MLP and the fusion MLP.
    dropout
        Dropout of all branches.
    standardize
        Centre and scale each feature column on the training cell lines (constant columns kept
        at 0).
    max_atoms
        Padding size of the drug graphs (DeepCDR: 100).
    residual
        Wide & deep (default): the ridge probe on the model's own inputs (standardised cell-line
        features, drug one-hot, the drug's mean atom features; ``baselines()["ridge"]``) is
        fitted on the training pairs and kept as a fixed linear part, and the DeepCDR-style
        network learns its residual (its output layer starts at zero). ``False``: the network
        alone, as DeepCDR (it scored below the ridge probe on GDSC, ``docs/drug_response.md``).
    seed
        Seed of the initial weights.

    Examples
    --------
    >>> scl.SCLONGDrugResponse.setup_anndata(lines, response_key="ln_ic50")
    >>> model = scl.SCLONGDrugResponse(lines, smiles=smiles)
    >>> model.split("leave_drug_out", seed=0)
    >>> model.train(max_epochs=100)
    >>> model.evaluate()  # model and baselines, Pearson / Spearman / RMSE per split
    >>> model.predict(["Erlotinib"], ["ACH-000012"])  # drugs x cell lines DataFrame
    """

    _module_cls = DrugResponseModule

    _examples_attr = "pairs_"
    _text_columns = ("drug", "cell_line", "split")
    _example_noun = "pairs"
    split_kinds = {
        "random": None,
        "leave_drug_out": ("drug",),
        "leave_cell_line_out": ("cell_line",),
    }
    split_defaults = {"kind": "leave_drug_out", "test_fraction": 0.1, "validation_fraction": 0.1}
    train_defaults = {"max_epochs": 100, "batch_size": 256, "lr": 1e-3}
    _target_column = RESPONSE_KEY
    _baseline_names = BASELINES
    _metrics = staticmethod(regression_metrics)

    def __init__(
        self,
        adata: ad.AnnData,
        smiles: Mapping[str, str],
        graph_dims: Sequence[int] = (256, 256, 256, 100),
        cell_dims: Sequence[int] = (256, 100),
        fusion_dims: Sequence[int] = (300, 100),
        dropout: float = 0.1,
        standardize: bool = True,
        max_atoms: int = 100,
        residual: bool = True,
        seed: int = 0,
    ):
        settings = head_settings(locals())
        super().__init__(adata)
        drugs = [str(d) for d in self._response_table().columns]
        self._build(self._cell_line_spec(drugs, smiles, "the response table", **settings))
        self._init_examples(self._measured_pairs())

    # ------------------------------------------------------------------ setup
    @classmethod
    def setup_anndata(
        cls,
        adata: ad.AnnData,
        response_key: str = RESPONSE_KEY,
        features_key: str | None = None,
        **kwargs,
    ) -> None:
        """Register cell lines: their features and their measured responses.

        Reads ``adata.obsm[response_key]`` (a cell lines x drugs DataFrame of ln IC50, NaN =
        not measured) and ``adata.obsm[features_key]`` (or ``adata.X``: one feature vector per
        cell line). Writes the scvi-tools registration (``adata.uns["_scvi_uuid"]``,
        ``adata.uns["_scvi_manager_uuid"]``).

        Parameters
        ----------
        adata
            Cell lines x features AnnData; ``obs_names`` are the cell-line ids.
        response_key
            ``adata.obsm`` key of the response DataFrame (columns: drug names).
        features_key
            ``adata.obsm`` key of the features (``None``: ``adata.X``).
        **kwargs
            Passed to :meth:`scvi.data.AnnDataManager.register_fields`.

        Raises
        ------
        KeyError
            ``response_key`` or ``features_key`` not in ``adata.obsm``.
        ScLongInputError
            A response table that is not a DataFrame, has no measured pair, or holds infinite
            values; features that are not finite; duplicated cell-line ids.
        """
        setup_method_args = cls._get_setup_method_args(**locals())  # first: the call's arguments
        what = "a cell lines x drugs DataFrame of ln IC50 (columns: drug names, NaN: not measured)"
        table = cls._examples_table(adata, "obsm", response_key, "response_key", what)
        values = table.to_numpy(dtype=np.float64)
        if np.isinf(values).any():
            raise ScLongInputError(f"adata.obsm[{response_key!r}] holds infinite values.")
        if not np.isfinite(values).any():
            raise ScLongInputError(
                f"adata.obsm[{response_key!r}] has no measured (drug, cell line) pair."
            )
        if table.columns.has_duplicates:
            raise ScLongInputError(f"adata.obsm[{response_key!r}] has duplicated drug columns.")
        response = fields.ObsmField("response", response_key, is_count_data=False)
        cls._register_cell_lines(adata, features_key, setup_method_args, [response], **kwargs)

    def _response_table(self) -> pd.DataFrame:
        table = self.adata.obsm[self._setup_args["response_key"]]
        return table.set_axis([str(c) for c in table.columns], axis=1)

    def _measured_pairs(self) -> pd.DataFrame:
        table = self._response_table()
        long = table.stack(future_stack=True).rename(RESPONSE_KEY).reset_index()
        long.columns = ["cell_line", "drug", RESPONSE_KEY]
        long["cell_line"] = long["cell_line"].astype(str)
        n_missing = int(long[RESPONSE_KEY].isna().sum())
        long = long.dropna(subset=[RESPONSE_KEY]).reset_index(drop=True)
        if n_missing:
            logger.info(
                "SCLONGDrugResponse: %d of %d (drug, cell line) pairs are not measured (NaN) and "
                "left out (never imputed); %d measured pairs",
                n_missing,
                n_missing + len(long),
                len(long),
            )
        self.n_unmeasured_ = n_missing
        long["split"] = "train"
        return long[["drug", "cell_line", RESPONSE_KEY, "split"]]

    # ------------------------------------------------------------------ construction
    def _build(self, spec: dict) -> None:
        branches = self._branches(spec)
        self.module = self._module_cls(
            **branches, n_drugs=len(spec["drugs"]), residual=bool(spec.get("residual", False))
        )
        self._finish_build(branches["n_cell_features"], "DeepCDR-style drug graph network")

    # ------------------------------------------------------------------ training
    def _training_examples(self, rows: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Scaling on the training pairs' cell lines, offset (their mean ln IC50), wide part."""
        pairs = self.pairs_
        features = self._fit_cell_line_scaling(pairs["cell_line"].to_numpy()[rows["train"]])
        self.module.offset.fill_(float(pairs[RESPONSE_KEY].to_numpy()[rows["train"]].mean()))
        if self.module.residual:
            self._fit_wide(rows)
        self.module.set_context(cells=self._standardized(features), **self._graph_context())
        return {
            "drug": pairs["drug"].map(self._drug_index).to_numpy(dtype=np.int64),
            "cell": pairs["cell_line"].map(self._cell_index).to_numpy(dtype=np.int64),
            "y": pairs[RESPONSE_KEY].to_numpy(dtype=np.float32),
        }

    def _fit_wide(self, rows: dict[str, np.ndarray]) -> None:
        """Set the module's wide part to the ridge probe fitted on the training pairs."""
        coef, intercept, self.probe_alpha_ = fit_ridge(
            self._probe_features(standardized=True), self.pairs_[RESPONSE_KEY].to_numpy(), rows
        )
        n_cell, n_drugs = len(self.feature_mean_), len(self._drug_index)
        self.module.set_wide(
            torch.as_tensor(coef[:n_cell]),
            torch.as_tensor(coef[n_cell : n_cell + n_drugs]),
            torch.as_tensor(coef[n_cell + n_drugs :]),
            float(intercept),
        )

    # ------------------------------------------------------------------ queries
    def _predict_pairs(
        self, drug_rows: np.ndarray, cell_features: np.ndarray, cell_rows: np.ndarray, drugs=None
    ) -> np.ndarray:
        self.module.eval()
        device = self._device
        tensors = self._drug_graphs if drugs is None else drugs
        with torch.no_grad():
            atoms, adjacency, pooling = (t.to(device) for t in tensors)
            vectors = self.module.drug_embedding(atoms, adjacency, pooling)
            terms = self.module.wide_drug_terms(atoms, pooling, known=drugs is None)
            cells = self._standardized(cell_features).to(device)
            out = []
            for start in range(0, len(drug_rows), 8192):
                d = torch.as_tensor(drug_rows[start : start + 8192]).to(device)
                c = torch.as_tensor(cell_rows[start : start + 8192]).to(device)
                out.append(self.module(vectors, cells, d, c, terms).cpu().numpy())
        return np.concatenate(out) if out else np.zeros(0, dtype=np.float32)

    def predict(
        self,
        drugs: Sequence[str] | Mapping[str, str] | None = None,
        cell_lines: Sequence[str] | pd.DataFrame | None = None,
    ) -> pd.DataFrame:
        """Predicted ln IC50 of every drug x cell line combination.

        Reads the registered cell-line features (or ``cell_lines``' own); writes nothing.

        Parameters
        ----------
        drugs
            Names of the model's drugs, or a mapping name -> SMILES (new drugs featurised on
            the fly; the model's drugs may be among them); default: the model's drugs.
        cell_lines
            Registered cell-line ids, or a DataFrame of new cell lines' features (rows: cell
            lines; the registered feature columns, in order); default: the registered ones.

        Returns
        -------
        DataFrame ``(n_drugs, n_cell_lines)``.

        Raises
        ------
        ScLongInputError
            Unknown drug names (without SMILES), unknown cell-line ids, or a feature table of
            the wrong width.
        """
        from ..chem import featurize_drugs

        features = self._feature_matrix()
        if cell_lines is None:
            names = list(self.spec_["cell_lines"])
            table = features
        elif isinstance(cell_lines, pd.DataFrame):
            names = [str(c) for c in cell_lines.index]
            table = cell_lines.to_numpy(dtype=np.float32)
            if table.shape[1] != features.shape[1]:
                raise ScLongInputError(
                    f"cell_lines has {table.shape[1]} feature columns; the model was trained on "
                    f"{features.shape[1]}."
                )
        else:
            names = [str(c) for c in cell_lines]
            unknown = [c for c in names if c not in self._cell_index]
            if unknown:
                raise ScLongInputError(
                    f"Unknown cell-line ids {unknown[:10]} (not in the registered adata.obs_names"
                    "); pass their features as a DataFrame instead."
                )
            table = features[[self._cell_index[c] for c in names]]
        drug_names, drug_rows, tensors = self._resolve_drugs(
            drugs,
            lambda table: packed_drug_graphs(
                featurize_drugs(table, max_atoms=self.spec_["max_atoms"])
            ),
        )
        grid_d = np.repeat(drug_rows, len(names))
        grid_c = np.tile(np.arange(len(names)), len(drug_rows))
        values = self._predict_pairs(grid_d, table, grid_c, drugs=tensors)
        return pd.DataFrame(
            values.reshape(len(drug_names), len(names)), index=drug_names, columns=names
        )

    def predict_pairs(self, pairs: pd.DataFrame | None = None) -> np.ndarray:
        """Predictions for pairs (columns ``drug``, ``cell_line``; default: all measured pairs)."""
        pairs = self.pairs_ if pairs is None else pairs
        unknown = sorted(set(pairs["cell_line"].astype(str)) - set(self._cell_index))
        if unknown:
            raise ScLongInputError(f"Unknown cell-line ids {unknown[:10]}.")
        unknown = sorted(set(pairs["drug"].astype(str)) - set(self._drug_index))
        if unknown:
            raise ScLongInputError(f"Unknown drugs {unknown[:10]}.")
        d = pairs["drug"].astype(str).map(self._drug_index).to_numpy(dtype=np.int64)
        c = pairs["cell_line"].astype(str).map(self._cell_index).to_numpy(dtype=np.int64)
        return self._predict_pairs(d, self._feature_matrix(), c)

    def baselines(self) -> pd.DataFrame:
        """The baselines for every measured pair, fitted on the training pairs.

        The three means of :func:`baseline_predictions`, and ``ridge``: the linear probe on the
        model's own inputs (:func:`~sclong_scverse.model._head_base.ridge_probe`): a pair's
        cell-line features, its drug's one-hot code and its drug's mean atom features (so that
        a held-out drug is described too), standardised on the training pairs, the penalty
        chosen on the validation pairs.

        Returns
        -------
        ``model.pairs_`` with one column per baseline (:data:`BASELINES`).
        """
        train = self.pairs_[self.pairs_["split"] == "train"]
        table = pd.concat([self.pairs_, baseline_predictions(train, self.pairs_)], axis=1)
        table["ridge"] = self._ridge_probe()
        return table

    def _probe_features(self, standardized: bool = False) -> np.ndarray:
        """Per pair: cell-line features, drug one-hot, drug mean atom features."""
        atoms, _adjacency, pooling = self._drug_graphs
        drug_atoms = torch.sparse.mm(pooling, atoms).numpy()
        drugs = self.pairs_["drug"].map(self._drug_index).to_numpy(dtype=np.int64)
        cells = self.pairs_["cell_line"].map(self._cell_index).to_numpy(dtype=np.int64)
        one_hot = np.eye(len(self._drug_index), dtype=np.float32)[drugs]
        table = self._feature_matrix()
        if standardized:
            table = self._standardized(table).numpy()
        return np.hstack([table[cells], one_hot, drug_atoms[drugs]])

    def _ridge_probe(self) -> np.ndarray:
        rows = self._split_rows()
        prediction, self.probe_alpha_ = ridge_probe(
            self._probe_features(), self.pairs_[RESPONSE_KEY].to_numpy(), rows
        )
        return prediction

    def _predict_examples(self) -> np.ndarray:
        return self.predict_pairs(self.pairs_)

    # ------------------------------------------------------------------ save / load
