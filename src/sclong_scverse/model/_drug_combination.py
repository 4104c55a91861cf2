"""scvi-tools model class of the DeepDDS-style drug combination (synergy) head."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Literal

import anndata as ad
import numpy as np
import pandas as pd
import torch

from ..metrics import synergy_metrics
from ..module import DrugCombinationModule
from ..validation import ScLongInputError
from ._cell_line_head import CellLineTableHead, head_settings, packed_drug_graphs
from ._head_base import split_examples

logger = logging.getLogger(__name__)

CombinationSplit = Literal[
    "random", "leave_combination_out", "leave_drug_out", "leave_cell_line_out"
]
#: Splits of :func:`split_combinations` (and :meth:`SCLONGDrugCombination.split`).
COMBINATION_SPLITS = ("random", "leave_combination_out", "leave_drug_out", "leave_cell_line_out")
#: Methods of :meth:`SCLONGDrugCombination.evaluate` besides the model.
COMBINATION_BASELINES = ("cell_line_rate", "drug_rate", "combination_rate")
COMBINATION_COLUMNS = ("drug1", "drug2", "cell_line", "label")


def _pair_keys(frame: pd.DataFrame) -> np.ndarray:
    a, b = frame["drug1"].astype(str).to_numpy(), frame["drug2"].astype(str).to_numpy()
    return np.array([f"{x}|{y}" if x <= y else f"{y}|{x}" for x, y in zip(a, b, strict=True)])


def split_combinations(
    frame: pd.DataFrame,
    kind: CombinationSplit,
    test_fraction: float = 0.2,
    validation_fraction: float = 0.1,
    seed: int = 0,
) -> np.ndarray:
    """Assign (drug 1, drug 2, cell line) triples to ``"train"``, ``"validation"``, ``"test"``.

    - ``random``: triples at random (DeepDDS's 5-fold setting: every drug pair and cell line is
      seen in training);
    - ``leave_combination_out``: whole drug pairs (in either order) with all their cell lines;
    - ``leave_drug_out``: whole drugs: a triple with a test drug is a test triple, one with a
      validation drug (and no test drug) a validation triple, so that test drugs are never
      seen in training or model selection;
    - ``leave_cell_line_out``: whole cell lines.

    Parameters
    ----------
    frame
        Columns ``drug1``, ``drug2``, ``cell_line``.
    kind
        One of :data:`COMBINATION_SPLITS`.
    test_fraction, validation_fraction
        Fractions of triples, pairs, drugs or cell lines.
    seed
        Seed of the draw (numpy ``default_rng``).

    Returns
    -------
    ``(n_triples,)`` array of split names.

    Raises
    ------
    ValueError
        Unknown ``kind`` or fractions out of range.
    ScLongInputError
        Fewer than 3 groups to hold out.
    """
    groups, what = _combination_groups(frame, kind)
    return split_examples(len(frame), groups, test_fraction, validation_fraction, seed, what)


def _combination_groups(
    frame: pd.DataFrame, kind: CombinationSplit
) -> tuple[list[np.ndarray] | None, str]:
    """The group columns that ``kind`` holds out (``None``: random) and what a group is."""
    if kind not in COMBINATION_SPLITS:
        raise ScLongInputError(f"split must be one of {COMBINATION_SPLITS}, not {kind!r}.")
    if kind == "random":
        return None, "groups"
    if kind == "leave_combination_out":
        return [_pair_keys(frame)], "drug pairs"
    if kind == "leave_cell_line_out":
        return [frame["cell_line"].astype(str).to_numpy()], "cell lines"
    drugs = [frame[c].astype(str).to_numpy() for c in ("drug1", "drug2")]
    return drugs, "drugs"


class SCLONGDrugCombination(CellLineTableHead):
    """DeepDDS-style drug combination model: a shared drug graph network + a cell-line vector.

    Classifies a (drug 1, drug 2, cell line) triple as synergistic (1) or not (0). Both drugs go
    through one graph convolution network (:class:`~sclong_scverse.module.DrugGraphEncoder` on
    :func:`~sclong_scverse.chem.deepcdr_graph`'s 75-d atom features; DeepDDS: GAT or GCN on 78-d
    atom features), the cell line's vector (scLong's pooled representation from
    :func:`~sclong_scverse.tl.cell_line_embedding`, or a one-hot id as the ablation, or any
    per-cell-line table) through an MLP; the drug pair is combined symmetrically (the order of
    the two drugs does not matter; :class:`~sclong_scverse.module.DrugCombinationModule`).

    The AnnData holds one row per cell line, its features in ``adata.X`` or
    ``adata.obsm[features_key]``, and the labelled triples as a DataFrame in
    ``adata.uns[combinations_key]`` (columns ``drug1``, ``drug2``, ``cell_line``, ``label``;
    e.g. :func:`~sclong_scverse.datasets.read_deepdds_combinations`). Triples without a label
    are dropped with a count (never imputed).

    Splits (:meth:`split`): ``random``, ``leave_combination_out``, ``leave_drug_out``,
    ``leave_cell_line_out``; validation kept apart from test chooses the epoch. :meth:`evaluate`
    scores AUROC and AUPR of the model next to three rate baselines (the training synergy rate
    of the cell line, of the two drugs, of the drug pair), which a random split flatters.
    :meth:`split` defaults to ``leave_drug_out`` with 20% / 10% of the drugs for test /
    validation. :meth:`train` (binary cross-entropy) runs scvi-tools' ``TrainRunner``
    (Lightning), as ``SCVI.train`` does, by default with DeepDDS's recipe (100 epochs of 256
    triples at Adam lr 5e-4), the feature scaling fitted on the training triples' cell lines.

    :meth:`save` writes ``model.pt`` (weights, drugs and SMILES, cell-line ids, feature scaling,
    the triples and their split, the history) and ``manifest.json``; :meth:`load` needs the
    saved model's cell lines, in the same order.

    Parameters
    ----------
    adata
        Cell lines x features AnnData registered with :meth:`setup_anndata`.
    smiles
        Drug name -> SMILES for every drug of the triples.
    graph_dims, cell_dims, fusion_dims
        Widths of the graph convolutions, the cell-line MLP and the fusion MLP.
    dropout
        Dropout of all branches (DeepDDS: 0.2).
    symmetric
        Order-invariant drug pair (``False``: ``[d1 ; d2]`` as DeepDDS).
    standardize
        Centre and scale the cell-line features on the training cell lines.
    max_atoms
        Largest molecule accepted (heavy atoms).
    seed
        Seed of the initial weights.

    Examples
    --------
    >>> data = scl.datasets.read_deepdds_combinations("new_labels_0_10.csv", drugs="drugs_0_10.csv")
    >>> lines.uns["combinations"] = data["combinations"]  # lines: cell lines x scLong vectors
    >>> scl.SCLONGDrugCombination.setup_anndata(lines)
    >>> model = scl.SCLONGDrugCombination(lines, smiles=data["smiles"])
    >>> model.split("leave_drug_out")
    >>> model.train()
    >>> model.evaluate()  # AUROC, AUPR of the model and the baselines
    """

    _module_cls = DrugCombinationModule

    _examples_attr = "triples_"
    _text_columns = ("drug1", "drug2", "cell_line", "split")
    _example_noun = "triples"
    split_kinds = {kind: None for kind in COMBINATION_SPLITS}  # groups: _split_groups
    split_defaults = {"kind": "leave_drug_out", "test_fraction": 0.2, "validation_fraction": 0.1}
    train_defaults = {"max_epochs": 100, "batch_size": 256, "lr": 5e-4}
    _target_column = "label"
    _baseline_names = COMBINATION_BASELINES
    _metrics = staticmethod(synergy_metrics)

    def __init__(
        self,
        adata: ad.AnnData,
        smiles: Mapping[str, str],
        graph_dims: Sequence[int] = (128, 128, 128),
        cell_dims: Sequence[int] = (512, 128),
        fusion_dims: Sequence[int] = (512, 128),
        dropout: float = 0.2,
        symmetric: bool = True,
        standardize: bool = True,
        max_atoms: int = 150,
        seed: int = 0,
    ):
        settings = head_settings(locals())
        super().__init__(adata)
        triples = self._triples()
        drugs = sorted(set(triples["drug1"]) | set(triples["drug2"]))
        self._build(self._cell_line_spec(drugs, smiles, "the combinations", **settings))
        self._init_examples(triples)

    # ------------------------------------------------------------------ setup
    @classmethod
    def setup_anndata(
        cls,
        adata: ad.AnnData,
        combinations_key: str = "combinations",
        features_key: str | None = None,
        **kwargs,
    ) -> None:
        """Register cell lines: their features and the labelled drug combinations.

        Reads ``adata.uns[combinations_key]`` (DataFrame: ``drug1``, ``drug2``, ``cell_line``,
        ``label`` 0 / 1, NaN = no label) and ``adata.obsm[features_key]`` (or ``adata.X``).
        Writes the scvi-tools registration.

        Parameters
        ----------
        adata
            Cell lines x features AnnData; ``obs_names`` are the cell-line ids.
        combinations_key
            ``adata.uns`` key of the triples.
        features_key
            ``adata.obsm`` key of the features (``None``: ``adata.X``).
        **kwargs
            Passed to :meth:`scvi.data.AnnDataManager.register_fields`.

        Raises
        ------
        KeyError
            ``combinations_key`` or ``features_key`` not found.
        ScLongInputError
            Columns missing, labels other than 0 / 1, unknown cell ids (triples whose cell line
            is not a row of ``adata``), no labelled triple, features that are not finite,
            duplicated cell-line ids.
        """
        setup_method_args = cls._get_setup_method_args(**locals())  # first: the call's arguments
        what = f"a DataFrame with columns {', '.join(COMBINATION_COLUMNS)}"
        table = cls._examples_table(adata, "uns", combinations_key, "combinations_key", what)
        missing = [c for c in COMBINATION_COLUMNS if c not in table.columns]
        if missing:
            raise ScLongInputError(
                f"adata.uns[{combinations_key!r}] lacks the columns {missing} "
                f"({', '.join(COMBINATION_COLUMNS)})."
            )
        labels = pd.to_numeric(table["label"], errors="coerce")
        if (table["label"].notna() & labels.isna()).any() or not labels.dropna().isin([0, 1]).all():
            raise ScLongInputError("Combination labels must be 0 or 1 (NaN: no label).")
        if labels.notna().sum() == 0:
            raise ScLongInputError(f"adata.uns[{combinations_key!r}] has no labelled triple.")
        unknown = sorted(set(table["cell_line"].astype(str)) - {str(c) for c in adata.obs_names})
        if unknown:
            raise ScLongInputError(
                f"Unknown cell ids {unknown[:10]} ({len(unknown)}): the combinations name cell "
                "lines that are not rows of adata (no features); add them or drop those triples."
            )
        cls._register_cell_lines(adata, features_key, setup_method_args, **kwargs)

    def _triples(self) -> pd.DataFrame:
        table = self.adata.uns[self._setup_args["combinations_key"]]
        frame = pd.DataFrame(
            {
                "drug1": table["drug1"].astype(str).to_numpy(),
                "drug2": table["drug2"].astype(str).to_numpy(),
                "cell_line": table["cell_line"].astype(str).to_numpy(),
                "label": pd.to_numeric(table["label"], errors="coerce").to_numpy(),
            }
        )
        n_missing = int(frame["label"].isna().sum())
        if n_missing:
            logger.warning(
                "SCLONGDrugCombination: %d of %d triples have no label and are left out (never "
                "imputed)",
                n_missing,
                len(frame),
            )
        self.n_unlabelled_ = n_missing
        frame = frame.dropna(subset=["label"]).reset_index(drop=True)
        frame["label"] = frame["label"].astype(np.int64)
        return frame

    # ------------------------------------------------------------------ construction
    def _build(self, spec: dict) -> None:
        branches = self._branches(spec)
        self.module = self._module_cls(**branches, symmetric=spec["symmetric"])
        self._finish_build(branches["n_cell_features"], "DeepDDS-style shared drug graph network")

    # ------------------------------------------------------------------ splits
    def _split_groups(self, kind: str) -> tuple[list[np.ndarray] | None, str]:
        return _combination_groups(self.triples_, kind)

    def _split_summary(self) -> pd.DataFrame:
        """Per split: triples, synergistic triples, drugs (either position), cell lines."""
        triples = self.triples_
        frame = triples.assign(
            drugs=[{a, b} for a, b in zip(triples["drug1"], triples["drug2"], strict=True)]
        )
        return frame.groupby("split").agg(
            triples=("label", "size"),
            synergistic=("label", "sum"),
            drugs=("drugs", lambda s: len(set().union(*s))),
            cell_lines=("cell_line", "nunique"),
        )

    # ------------------------------------------------------------------ training
    def _training_examples(self, rows: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Feature scaling on the training triples' cell lines; the drugs' graphs as context."""
        triples = self.triples_
        features = self._fit_cell_line_scaling(triples["cell_line"].to_numpy()[rows["train"]])
        self.module.set_context(cells=self._standardized(features), **self._graph_context())
        return {
            "drug1": triples["drug1"].map(self._drug_index).to_numpy(dtype=np.int64),
            "drug2": triples["drug2"].map(self._drug_index).to_numpy(dtype=np.int64),
            "cell": triples["cell_line"].map(self._cell_index).to_numpy(dtype=np.int64),
            "y": triples["label"].to_numpy(dtype=np.float32),
        }

    # ------------------------------------------------------------------ queries
    def predict(
        self,
        combinations: pd.DataFrame | None = None,
        smiles: Mapping[str, str] | None = None,
    ) -> np.ndarray:
        """Synergy probabilities of triples.

        Parameters
        ----------
        combinations
            Columns ``drug1``, ``drug2``, ``cell_line`` (default: the labelled triples,
            ``model.triples_``). Cell lines must be registered.
        smiles
            Name -> SMILES of drugs the model has not seen (featurised on the fly; the
            model's drugs may be among them).

        Returns
        -------
        ``(n_triples,)`` probabilities.

        Raises
        ------
        ScLongInputError
            Unknown cell ids, or drugs that are neither the model's nor in ``smiles``.
        """
        from ..chem import featurize_drugs

        frame = self.triples_ if combinations is None else combinations
        cells_named = frame["cell_line"].astype(str)
        unknown = sorted(set(cells_named) - set(self._cell_index))
        if unknown:
            raise ScLongInputError(f"Unknown cell ids {unknown[:10]} (not registered cell lines).")
        names = sorted(set(frame["drug1"].astype(str)) | set(frame["drug2"].astype(str)))
        graphs, index = self._drug_graphs, self._drug_index
        if smiles is not None:
            table = {str(k): v for k, v in dict(smiles).items()}
            for name in names:
                if name not in table and name in self._drug_index:
                    table[name] = self.spec_["smiles"][self._drug_index[name]]
            unknown = [n for n in names if n not in table]
            if unknown:
                raise ScLongInputError(f"Unknown drugs {unknown[:10]} (no SMILES).")
            used = {n: table[n] for n in names}
            graphs = packed_drug_graphs(featurize_drugs(used, max_atoms=self.spec_["max_atoms"]))
            index = {n: i for i, n in enumerate(used)}
        else:
            unknown = [n for n in names if n not in self._drug_index]
            if unknown:
                raise ScLongInputError(
                    f"Unknown drugs {unknown[:10]}; pass smiles= for drugs the model has not seen."
                )
        device = self._device
        d1 = torch.as_tensor(frame["drug1"].astype(str).map(index).to_numpy(dtype=np.int64))
        d2 = torch.as_tensor(frame["drug2"].astype(str).map(index).to_numpy(dtype=np.int64))
        c = torch.as_tensor(cells_named.map(self._cell_index).to_numpy(dtype=np.int64))
        self.module.eval()
        with torch.no_grad():
            vectors = self.module.drug_embedding(*(t.to(device) for t in graphs))
            cells = self._standardized(self._feature_matrix()).to(device)
            out = []
            for start in range(0, len(d1), 8192):
                part = slice(start, start + 8192)
                logits = self.module(
                    vectors, cells, d1[part].to(device), d2[part].to(device), c[part].to(device)
                )
                out.append(torch.sigmoid(logits).cpu().numpy())
        return np.concatenate(out) if out else np.zeros(0, dtype=np.float32)

    def baselines(self) -> pd.DataFrame:
        """The three rate baselines for every labelled triple, fitted on the training triples.

        - ``cell_line_rate``: the share of synergistic training triples of the cell line;
        - ``drug_rate``: the mean of the two drugs' shares (over their training triples);
        - ``combination_rate``: the share of the drug pair (either order, all cell lines).

        A group without training triples gets the overall training share.

        Returns
        -------
        ``model.triples_`` with one column per baseline.
        """
        frame = self.triples_
        train = frame[frame["split"] == "train"]
        overall = float(train["label"].mean())
        cell = train.groupby("cell_line")["label"].mean()
        drug_rows = pd.concat(
            [
                train[["drug1", "label"]].set_axis(["drug", "label"], axis=1),
                train[["drug2", "label"]].set_axis(["drug", "label"], axis=1),
            ]
        )
        drug = drug_rows.groupby("drug")["label"].mean()
        pair = pd.Series(train["label"].to_numpy(), index=_pair_keys(train)).groupby(level=0).mean()
        out = frame.copy()
        out["cell_line_rate"] = frame["cell_line"].map(cell).fillna(overall).to_numpy()
        out["drug_rate"] = (
            frame["drug1"].map(drug).fillna(overall).to_numpy()
            + frame["drug2"].map(drug).fillna(overall).to_numpy()
        ) / 2
        out["combination_rate"] = pd.Series(_pair_keys(frame)).map(pair).fillna(overall).to_numpy()
        return out

    def _predict_examples(self) -> np.ndarray:
        return self.predict()

    # ------------------------------------------------------------------ save / load
