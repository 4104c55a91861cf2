"""scvi-tools model class of the DeepCE-style chemical perturbation head (L1000 signatures)."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Literal

import anndata as ad
import numpy as np
import pandas as pd
import torch
from scvi import REGISTRY_KEYS
from scvi.data import fields

from ..datasets._l1000 import check_not_signatures, parse_dose
from ..errors import ScLongKeyError
from ..metrics import PRECISION_KS, signature_metrics
from ..module import ChemPerturbationModule, pack_bond_graphs
from ..validation import ScLongInputError, check_not_view
from ._anndata import register_fields
from ._drug_response import SCLONGDrugResponse
from ._head_base import SCLONGHead, dense, drug_smiles, fit_ridge

if TYPE_CHECKING:
    from ._sclong import SCLONG

logger = logging.getLogger(__name__)

#: Methods of :meth:`SCLONGChemPerturbation.evaluate` besides the model.
CHEM_BASELINES = ("mean_profile", "cell_line_mean", "drug_mean", "ridge")


def sclong_gene_features(
    model: SCLONG,
    genes: Sequence[str],
    kind: Literal["static", "contextual"] = "static",
    cells: ad.AnnData | None = None,
    batch_size: int | None = None,
) -> pd.DataFrame:
    """Gene vectors from scLong for genes given by symbol or id (e.g. the L1000 landmark genes).

    The genes are mapped through the model's vocabulary
    (:meth:`~sclong_scverse.genes.GeneVocabulary.align`: ids, symbols, NCBI symbol <-> Ensembl,
    aliases). Genes that do not map are NaN rows and are reported (a ``UserWarning`` and
    ``frame.attrs["unmapped"]``), never silently given another gene's vector.

    Parameters
    ----------
    model
        A trained or loaded :class:`~sclong_scverse.model.SCLONG`.
    genes
        Gene symbols or ids, in the order wanted (e.g.
        :func:`~sclong_scverse.datasets.deepce_landmark_genes`).
    kind
        ``"static"``: the model's gene embedding table (identity + GO graph; all vocabulary
        genes); ``"contextual"``: the genes' decodings averaged over ``cells`` (only genes
        registered with the model; a gene never decoded is NaN, reported too).
    cells
        Cells for ``"contextual"``: log-normalised *expression* with the model's genes
        (:func:`~sclong_scverse.pp.normalize`). Perturbation signatures (z-scores) are refused:
        scLong reads values <= -1 as mask tokens.
    batch_size
        Cells per forward pass (``"contextual"``).

    Returns
    -------
    DataFrame ``(len(genes), dim)`` indexed by ``genes``; ``attrs["unmapped"]`` lists the genes
    without a vector, ``attrs["kind"]`` the kind.

    Raises
    ------
    ScLongInputError
        ``cells`` missing for ``"contextual"``, or holding signatures rather than expression.
    ValueError
        No gene maps to the vocabulary, or an unknown ``kind``.
    """
    genes = [str(g) for g in genes]
    alignment = model.vocabulary.align(genes, min_coverage=0.0)
    positions = alignment.var_positions
    if kind == "static":
        model.module.eval()
        with torch.inference_mode():
            tokens = model.module.network.gene_embedding().float().cpu().numpy()
    elif kind == "contextual":
        if cells is None:
            raise ScLongInputError(
                "kind='contextual' averages the genes' decodings over cells: pass cells= "
                "(log-normalised expression registered like the model's data)."
            )
        check_not_signatures(cells, "sclong_gene_features(kind='contextual')")
        per_var = model.get_gene_embeddings("contextual", adata=cells, batch_size=batch_size)
        var_positions = model.alignment.var_positions
        tokens = np.full((model.vocabulary.n_tokens, per_var.shape[1]), np.nan, dtype=np.float32)
        kept = var_positions >= 0
        tokens[var_positions[kept]] = per_var.to_numpy()[kept]
    else:
        raise ScLongInputError(f"kind must be 'static' or 'contextual', not {kind!r}.")
    out = np.full((len(genes), tokens.shape[1]), np.nan, dtype=np.float32)
    mapped = positions >= 0
    out[mapped] = tokens[positions[mapped]]
    frame = pd.DataFrame(
        out,
        index=pd.Index(genes, name="gene"),
        columns=[f"sclong_{i}" for i in range(out.shape[1])],
    )
    absent = [g for g, p in zip(genes, positions, strict=True) if p < 0]
    undecoded = [
        g for g, p, v in zip(genes, positions, out, strict=True) if p >= 0 and np.isnan(v).all()
    ]
    frame.attrs["unmapped"] = absent + undecoded
    frame.attrs["kind"] = kind
    if absent or undecoded:
        parts = []
        if absent:
            parts.append(
                f"{len(absent)} of {len(genes)} genes do not map to the scLong vocabulary "
                f"(e.g. {absent[:10]})"
            )
        if undecoded:
            parts.append(
                f"{len(undecoded)} genes of the vocabulary have no contextual vector (not "
                f"registered with the model, or never decoded in these cells; e.g. "
                f"{undecoded[:10]})"
            )
        warnings.warn(
            "; ".join(parts) + ": they have no scLong vector (NaN rows; "
            "SCLONGChemPerturbation gives them a learned vector or zeros).",
            UserWarning,
            stacklevel=2,
        )
    return frame


def _doses(values) -> np.ndarray:
    values = pd.Series(values)
    if pd.api.types.is_numeric_dtype(values):
        out = values.to_numpy(dtype=np.float64)
        if np.isnan(out).any() or (out < 0).any():
            raise ScLongInputError("Doses must be non-negative numbers (µM); found NaN or < 0.")
        return np.round(out, 6)
    return np.round(parse_dose(values.astype(str)), 6)


class SCLONGChemPerturbation(SCLONGHead):
    """DeepCE-style chemical perturbation model: drug graph + scLong gene vectors -> 978 genes.

    Predicts an L1000 signature (one z-score per landmark gene) from a compound (its SMILES, as a
    graph of atoms and bonds, :func:`~sclong_scverse.chem.deepce_graph`'s 62-d atom / 6-d bond
    features through a neural fingerprint), a cell line and a dose. Each landmark gene is
    represented by a fixed vector, scLong's (:func:`sclong_gene_features`: static embeddings
    or decodings averaged over cells) or any other table (DeepCE's own gene vectors,
    :func:`~sclong_scverse.datasets.read_deepce_gene_vectors`, as the baseline); genes attend
    to the drug's atoms (multi-head attention), and a per-gene MLP reads the attended gene
    vector, the drug vector and the cell-line and dose embeddings
    (:class:`~sclong_scverse.module.ChemPerturbationModule`).

    The AnnData holds one row per signature: the z-scores in ``adata.X`` (or a layer; genes as
    ``var_names``, e.g. from :func:`~sclong_scverse.datasets.read_deepce_signatures` or
    :func:`~sclong_scverse.datasets.read_gctx`) and the drug id, cell line and dose in ``obs``.

    **Signatures are targets, never scLong input.** They are z-scores; fed to scLong as
    expression, every value <= -1 would be read as a mask token. scLong only supplies the gene
    vectors (from its weights, or from expression of cells), and the cell-line vectors if you
    pass them (:func:`~sclong_scverse.tl.cell_line_embedding` of cells). The readers mark
    signature AnnData (``uns["sclong_signatures"]``); :func:`sclong_gene_features` refuses
    such data (and any negative values) where it expects expression, and
    :meth:`~sclong_scverse.model.SCLONG.setup_anndata` refuses negative values.

    Splits (:meth:`split`): ``random`` (profiles), ``leave_drug_out`` (DeepCE's de novo setting:
    test compounds never seen) and ``leave_cell_line_out``; validation is kept apart from test
    and chooses the epoch. :meth:`evaluate` scores the model next to three mean baselines
    (mean training profile, cell-line mean, drug mean) and the ridge probe on the head's own
    inputs (``ridge``) with DeepCE's metrics
    (:func:`~sclong_scverse.tl.signature_metrics`). :meth:`split` defaults to DeepCE's de
    novo setting, ``leave_drug_out`` with 20% / 20% of the compounds for test / validation.
    :meth:`train` (MSE) runs scvi-tools' ``TrainRunner`` (Lightning), as ``SCVI.train`` does,
    by default 100 epochs of 64 profiles at Adam lr 2e-4 (DeepCE: batches of 16), after
    fitting on the training profiles the output offset (their mean profile), the cell-line
    feature scaling and, with ``residual``, the wide part (the ridge probe).

    :meth:`save` writes ``model.pt`` (weights, drugs and SMILES, genes and their feature table,
    cell lines and their feature table, doses, the profiles and their split, feature scaling,
    the genes without features, the history) and ``manifest.json``; :meth:`load` needs the
    same signatures (same genes in the same order, same number of profiles).

    Parameters
    ----------
    adata
        Signatures x genes AnnData registered with :meth:`setup_anndata`.
    smiles
        Drug id -> SMILES for every drug of ``adata``.
    gene_features
        Genes x dims table of gene vectors indexed by gene (``adata.var_names``); genes absent
        from it or with NaN rows have no vector (reported) and get a learned one (or zeros,
        ``learn_missing=False``). ``None``: every gene gets a learned vector (the ablation
        without any gene representation).
    cell_features
        Cell lines x dims table (e.g. scLong vectors from
        :func:`~sclong_scverse.tl.cell_line_embedding`), indexed by the cell-line ids of
        ``adata``; ``None``: a learned vector per cell line (DeepCE: one-hot cell id).
    d_model, conv_dims, n_layers, n_heads, ff_dim, embedding_dim, hidden_dim, dropout
        Network sizes (DeepCE: 128, (16, 16), 2, 4, 512, 4, 128, 0.1).
    gene_self_attention
        Genes also attend to each other (DeepCE: yes; ``978^2`` per profile, slow on a CPU).
    learn_missing
        Learned vectors for genes without features (else zeros, as scLong's DeepCE run).
    normalize_atoms
        Layer-normalise the drug's atom vectors (DeepCE: no; see
        :class:`~sclong_scverse.module.ChemPerturbationModule`).
    residual
        Wide & deep (default): the ridge probe on the head's own inputs (the drug's mean atom
        features, the standardised cell-line features or the cell line, the dose level;
        ``baselines()["ridge"]``) is fitted on the training profiles when :meth:`train` starts
        and kept fixed; the network learns its residual (its output layer starts at zero) and
        the epoch is chosen on validation. ``False``: the network alone, as DeepCE. On the test
        data's held-out compounds (3 seeds) the network alone scored test Pearson 0.57-0.64
        against the probe's 0.69; wide & deep 0.79-0.83.
    seed
        Seed of the initial weights.

    Examples
    --------
    >>> signatures = scl.datasets.read_deepce_signatures("signature_train.csv", time="24H")
    >>> genes = scl.model.sclong_gene_features(sclong, signatures.var_names)  # reports unmapped
    >>> scl.SCLONGChemPerturbation.setup_anndata(signatures)
    >>> model = scl.SCLONGChemPerturbation(signatures, smiles=smiles, gene_features=genes)
    >>> model.split("leave_drug_out")
    >>> model.train(max_epochs=100)
    >>> model.evaluate()  # model and baselines: Pearson, Spearman, RMSE, precision@k
    """

    _module_cls = ChemPerturbationModule

    _examples_attr = "profiles_"
    _text_columns = ("drug", "cell_line", "split")
    _example_noun = "profiles"
    split_kinds = SCLONGDrugResponse.split_kinds
    split_defaults = {"kind": "leave_drug_out", "test_fraction": 0.2, "validation_fraction": 0.2}
    train_defaults = {"max_epochs": 100, "batch_size": 64, "lr": 2e-4}

    def __init__(
        self,
        adata: ad.AnnData,
        smiles: Mapping[str, str],
        gene_features: pd.DataFrame | None = None,
        cell_features: pd.DataFrame | None = None,
        d_model: int = 128,
        conv_dims: Sequence[int] = (16, 16),
        n_layers: int = 2,
        n_heads: int = 4,
        ff_dim: int = 512,
        embedding_dim: int = 4,
        hidden_dim: int = 128,
        dropout: float = 0.1,
        gene_self_attention: bool = True,
        learn_missing: bool = True,
        normalize_atoms: bool = True,
        residual: bool = True,
        seed: int = 0,
    ):
        super().__init__(adata)
        profiles = self._profile_table()
        drugs = sorted(set(profiles["drug"]))
        ordered_smiles = drug_smiles(drugs, smiles, "adata", "drop their profiles")
        genes = [str(g) for g in self.adata.var_names]
        cell_lines = sorted(set(profiles["cell_line"]))
        if gene_features is None:
            table = np.full((len(genes), 1), np.nan, dtype=np.float32)
            self.genes_without_features_ = list(genes)
        else:
            if not isinstance(gene_features, pd.DataFrame):
                raise ScLongInputError("gene_features must be a DataFrame indexed by gene.")
            frame = gene_features.set_axis(gene_features.index.astype(str), axis=0)
            frame = frame.loc[~frame.index.duplicated()].reindex(genes)
            table = frame.to_numpy(dtype=np.float32)
            if np.isinf(table).any():
                raise ScLongInputError("gene_features holds infinite values.")
            empty = np.isnan(table).all(axis=1)
            partial = np.isnan(table).any(axis=1) & ~empty
            if partial.any():
                raise ScLongInputError(
                    f"{int(partial.sum())} genes have partly NaN features (e.g. "
                    f"{[g for g, p in zip(genes, partial, strict=True) if p][:5]}); a gene has a "
                    "whole vector or none."
                )
            if empty.all():
                raise ScLongInputError(
                    "No gene of adata has features in gene_features (check the gene ids); pass "
                    "gene_features=None for learned gene vectors."
                )
            self.genes_without_features_ = [g for g, e in zip(genes, empty, strict=True) if e]
            if self.genes_without_features_:
                warnings.warn(
                    f"{len(self.genes_without_features_)} of {len(genes)} genes have no "
                    f"features (e.g. {self.genes_without_features_[:10]}); they get "
                    f"{'a learned vector' if learn_missing else 'zeros'}.",
                    UserWarning,
                    stacklevel=2,
                )
        cells = None
        if cell_features is not None:
            if not isinstance(cell_features, pd.DataFrame):
                raise ScLongInputError("cell_features must be a DataFrame indexed by cell line.")
            index = [str(c) for c in cell_features.index]
            unknown = [c for c in cell_lines if c not in set(index)]
            if unknown:
                raise ScLongInputError(
                    f"Unknown cell ids {unknown[:10]}: adata's cell lines are not all rows of "
                    "cell_features."
                )
            frame = cell_features.set_axis(index, axis=0)
            frame = frame.loc[~frame.index.duplicated()]
            cells = frame.loc[cell_lines].to_numpy(dtype=np.float32)
            if not np.isfinite(cells).all():
                raise ScLongInputError("cell_features holds NaN or infinite values.")
        spec = {
            "drugs": drugs,
            "smiles": ordered_smiles,
            "genes": genes,
            "gene_features": table,
            "gene_feature_columns": (
                ["learned"] if gene_features is None else [str(c) for c in gene_features.columns]
            ),
            "cell_lines": cell_lines,
            "cell_features": cells,
            "doses": sorted({float(d) for d in profiles["dose_um"]}),
            "d_model": int(d_model),
            "conv_dims": [int(d) for d in conv_dims],
            "n_layers": int(n_layers),
            "n_heads": int(n_heads),
            "ff_dim": int(ff_dim),
            "embedding_dim": int(embedding_dim),
            "hidden_dim": int(hidden_dim),
            "dropout": float(dropout),
            "gene_self_attention": bool(gene_self_attention),
            "learn_missing": bool(learn_missing),
            "normalize_atoms": bool(normalize_atoms),
            "residual": bool(residual),
            "seed": int(seed),
        }
        self._build(spec)
        self._init_examples(profiles)

    # ------------------------------------------------------------------ setup
    @classmethod
    def setup_anndata(
        cls,
        adata: ad.AnnData,
        drug_key: str = "pert_id",
        cell_line_key: str = "cell_id",
        dose_key: str = "pert_idose",
        layer: str | None = None,
        **kwargs,
    ) -> None:
        """Register signatures: the profiles (targets) and their drug, cell line and dose.

        Reads ``adata.X`` (or ``adata.layers[layer]``: the signatures, e.g. z-scores) and the
        ``obs`` columns; writes the scvi-tools registration (``adata.uns["_scvi_uuid"]``,
        ``adata.uns["_scvi_manager_uuid"]``).

        Parameters
        ----------
        adata
            Signatures x genes AnnData.
        drug_key, cell_line_key
            ``obs`` columns of the drug id (SMILES keys) and the cell line.
        dose_key
            ``obs`` column of the dose: labels such as ``"10.0 um"`` or numbers in µM.
        layer
            Layer of the signatures (``None``: ``adata.X``).
        **kwargs
            Passed to :meth:`scvi.data.AnnDataManager.register_fields`.

        Raises
        ------
        KeyError
            A column or layer not found.
        ScLongInputError
            Profiles with NaN or infinite values (refused, never imputed: drop them, as
            :func:`~sclong_scverse.datasets.read_deepce_signatures` does with a count),
            unreadable doses, missing drug or cell ids, duplicated genes.
        """
        setup_method_args = cls._get_setup_method_args(**locals())  # first: the call's arguments
        check_not_view(adata)
        for key in (drug_key, cell_line_key, dose_key):
            if key not in adata.obs.columns:
                raise ScLongKeyError(f"{key!r} is not a column of adata.obs ({list(adata.obs)}).")
        if layer is not None and layer not in adata.layers:
            raise ScLongKeyError(f"layer {layer!r} not in adata.layers ({list(adata.layers)}).")
        if adata.var_names.has_duplicates:
            raise ScLongInputError("adata.var_names (genes) have duplicates.")
        values = adata.X if layer is None else adata.layers[layer]
        values = dense(values)
        bad = ~np.isfinite(values.astype(np.float64)).all(axis=1)
        if bad.any():
            raise ScLongInputError(
                f"{int(bad.sum())} of {adata.n_obs} profiles hold NaN or infinite values (e.g. "
                f"{list(adata.obs_names[bad][:3])}); drop them first (never imputed): "
                "adata = adata[np.isfinite(adata.X).all(axis=1)].copy()."
            )
        for key in (drug_key, cell_line_key):
            empty = adata.obs[key].isna().to_numpy()
            if empty.any():
                raise ScLongInputError(f"{int(empty.sum())} profiles have no {key!r}.")
        _doses(adata.obs[dose_key])  # raises on unreadable doses
        values_field = fields.LayerField(REGISTRY_KEYS.X_KEY, layer, is_count_data=False)
        register_fields(cls, adata, setup_method_args, [values_field], **kwargs)

    def _profile_table(self) -> pd.DataFrame:
        args = self._setup_args
        obs = self.adata.obs
        return pd.DataFrame(
            {
                "drug": obs[args["drug_key"]].astype(str).to_numpy(),
                "cell_line": obs[args["cell_line_key"]].astype(str).to_numpy(),
                "dose_um": _doses(obs[args["dose_key"]]),
            }
        )

    def _targets(self) -> np.ndarray:
        layer = self._setup_args["layer"]
        values = self.adata.X if layer is None else self.adata.layers[layer]
        return dense(values).astype(np.float32)

    # ------------------------------------------------------------------ construction
    def _build(self, spec: dict) -> None:
        from ..chem import featurize_drugs

        self.spec_ = spec
        graphs = featurize_drugs(dict(zip(spec["drugs"], spec["smiles"], strict=True)), "deepce")
        self._graphs = self._pack(graphs)
        self._drug_index = {d: i for i, d in enumerate(spec["drugs"])}
        self._cell_index = {c: i for i, c in enumerate(spec["cell_lines"])}
        self._dose_index = {float(d): i for i, d in enumerate(spec["doses"])}
        cells = spec["cell_features"]
        torch.manual_seed(int(spec["seed"]))
        self.module = self._module_cls(
            torch.as_tensor(np.asarray(spec["gene_features"], dtype=np.float32)),
            n_cell_lines=len(spec["cell_lines"]),
            n_doses=len(spec["doses"]),
            n_cell_features=None if cells is None else int(np.asarray(cells).shape[1]),
            conv_dims=spec["conv_dims"],
            d_model=spec["d_model"],
            n_layers=spec["n_layers"],
            n_heads=spec["n_heads"],
            ff_dim=spec["ff_dim"],
            embedding_dim=spec["embedding_dim"],
            hidden_dim=spec["hidden_dim"],
            dropout=spec["dropout"],
            gene_self_attention=spec["gene_self_attention"],
            learn_missing=spec["learn_missing"],
            normalize_atoms=spec.get("normalize_atoms", False),  # models saved before: none
            residual=spec.get("residual", False),
        )
        self._reset_feature_scaling(0 if cells is None else np.asarray(cells).shape[1])
        n_missing = int(np.isnan(np.asarray(spec["gene_features"])).all(axis=1).sum())
        self._model_summary_string = (
            f"SCLONGChemPerturbation: DeepCE-style drug atoms x gene attention; "
            f"{len(spec['drugs'])} drugs, {len(spec['genes'])} genes ({n_missing} without "
            f"features), {len(spec['cell_lines'])} cell lines, {len(spec['doses'])} doses."
        )

    @staticmethod
    def _pack(graphs: dict) -> dict[str, torch.Tensor]:
        items = [graphs["graphs"][d] for d in graphs["drugs"]]
        return pack_bond_graphs(
            [g["atom_features"] for g in items],
            [g["bond_features"] for g in items],
            [g["edge_index"] for g in items],
        )

    def _cell_tensor(self, cells: np.ndarray | None = None) -> torch.Tensor:
        table = self.spec_["cell_features"] if cells is None else cells
        if table is None:
            return torch.zeros(len(self.spec_["cell_lines"]), 0)
        table = np.asarray(table, dtype=np.float32)
        return torch.as_tensor((table - self.feature_mean_) / self.feature_scale_)

    # ------------------------------------------------------------------ training
    def _indices(self, frame: pd.DataFrame) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        d = frame["drug"].map(self._drug_index).to_numpy(dtype=np.int64)
        c = frame["cell_line"].map(self._cell_index).to_numpy(dtype=np.int64)
        s = frame["dose_um"].map(self._dose_index).to_numpy(dtype=np.int64)
        return torch.as_tensor(d), torch.as_tensor(c), torch.as_tensor(s)

    def _run(self, graphs, cells, rows, d, c, s, batch_size=256) -> np.ndarray:
        """Predicted profiles of ``rows`` (positions in ``d``, ``c``, ``s``), no gradient."""
        self.module.eval()
        out = []
        rows = rows.to(d.device)
        with torch.no_grad():
            atoms = self.module.atom_vectors(graphs)
            inputs = self.module.mean_atom_inputs(graphs)
            for start in range(0, len(rows), batch_size):
                r = rows[start : start + batch_size]
                prediction = self.module(
                    atoms, graphs["slots"], d[r], cells, c[r], s[r], drug_inputs=inputs
                )
                out.append(prediction.cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, len(self.spec_["genes"])), np.float32)

    def _training_examples(self, rows: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
        """Cell-line scaling, offset (mean training profile) and wide part on the training rows."""
        targets = self._targets()
        if self.spec_["cell_features"] is not None:
            lines = self.profiles_["cell_line"].to_numpy()[rows["train"]]
            self._fit_feature_scaling(
                np.asarray(self.spec_["cell_features"], dtype=np.float32),
                sorted({self._cell_index[c] for c in lines}),
            )
        self.module.offset.copy_(torch.as_tensor(targets[rows["train"]].mean(axis=0)))
        if self.module.residual:
            self._fit_wide(targets, rows)
        self.module.set_context(cells=self._cell_tensor(), **self._graphs)
        d, c, s = self._indices(self.profiles_)
        return {"drug": d, "cell": c, "dose": s, "y": torch.as_tensor(targets)}

    def _probe_features(self) -> tuple[np.ndarray, list[int]]:
        """Per profile, the wide part's inputs: ``[mean atom features ; cell line ; dose]``.

        The cell line is its standardised feature vector (or a one-hot with learned cell-line
        vectors), the dose a one-hot of the levels. Returns the matrix and the widths of the
        three blocks.
        """
        d, c, s = (t.numpy() for t in self._indices(self.profiles_))
        atoms = ChemPerturbationModule.mean_atom_inputs(self._graphs).numpy()
        if self.spec_["cell_features"] is not None:
            cells = self._cell_tensor().numpy()
        else:
            cells = np.eye(len(self.spec_["cell_lines"]), dtype=np.float32)
        doses = np.eye(len(self.spec_["doses"]), dtype=np.float32)
        blocks = [atoms[d], cells[c], doses[s]]
        return np.hstack(blocks), [b.shape[1] for b in blocks]

    def _fit_wide(self, targets: np.ndarray, rows: dict[str, np.ndarray]) -> None:
        """Set the module's wide part to the ridge probe fitted on the training profiles."""
        features, widths = self._probe_features()
        coef, intercept, self.probe_alpha_ = fit_ridge(features, targets, rows)
        atoms, cells, doses = np.split(coef, np.cumsum(widths)[:-1])
        self.module.set_wide(
            torch.as_tensor(atoms), torch.as_tensor(cells), torch.as_tensor(doses), intercept
        )

    def _ridge_probe(self) -> np.ndarray:
        """The ridge probe's profiles (fitted on the training profiles, penalty on validation)."""
        features, _ = self._probe_features()
        rows = self._split_rows()
        coef, intercept, _ = fit_ridge(features, self._targets(), rows)
        return (features.astype(np.float64) @ coef + intercept).astype(np.float32)

    # ------------------------------------------------------------------ queries
    def predict_profiles(self, rows: Sequence[int] | None = None) -> np.ndarray:
        """Predicted profiles ``(n, n_genes)`` of registered signatures (default: all)."""
        rows = np.arange(len(self.profiles_)) if rows is None else np.asarray(rows)
        device = self._device
        graphs = {k: v.to(device) for k, v in self._graphs.items()}
        d, c, s = (t.to(device) for t in self._indices(self.profiles_))
        return self._run(graphs, self._cell_tensor().to(device), torch.as_tensor(rows), d, c, s)

    def predict(
        self,
        drugs: Sequence[str] | Mapping[str, str] | None = None,
        cell_lines: Sequence[str] | None = None,
        doses: Sequence[float | str] | None = None,
    ) -> pd.DataFrame:
        """Predicted profiles of every drug x cell line x dose combination.

        Parameters
        ----------
        drugs
            The model's drug ids, or a mapping id -> SMILES (new compounds featurised on the
            fly); default: the model's drugs.
        cell_lines
            The model's cell lines (default: all).
        doses
            Dose levels the model was trained with (µM numbers or labels such as
            ``"10.0 um"``); default: all.

        Returns
        -------
        DataFrame: rows a ``(drug, cell_line, dose_um)`` MultiIndex, columns the genes.

        Raises
        ------
        ScLongInputError
            Unknown drugs (without SMILES), unknown cell ids or dose levels; unparsable SMILES
            (:class:`~sclong_scverse.chem.DrugFeatureError`, naming the drug).
        """
        from ..chem import featurize_drugs

        drug_names, drug_rows, graphs = self._resolve_drugs(
            drugs, lambda table: self._pack(featurize_drugs(table, "deepce"))
        )
        graphs = self._graphs if graphs is None else graphs
        names = (
            list(self.spec_["cell_lines"]) if cell_lines is None else [str(x) for x in cell_lines]
        )
        unknown = [x for x in names if x not in self._cell_index]
        if unknown:
            raise ScLongInputError(
                f"Unknown cell ids {unknown[:10]}; the model knows {self.spec_['cell_lines'][:10]}."
            )
        levels = list(self.spec_["doses"]) if doses is None else list(_doses(doses))
        unknown = [x for x in levels if float(x) not in self._dose_index]
        if unknown:
            raise ScLongInputError(
                f"Dose levels {unknown[:10]} µM were not in training (levels: "
                f"{self.spec_['doses']})."
            )
        grid = pd.MultiIndex.from_product(
            [drug_names, names, [float(x) for x in levels]], names=["drug", "cell_line", "dose_um"]
        )
        d = np.repeat(drug_rows, len(names) * len(levels))
        c = np.tile(np.repeat([self._cell_index[x] for x in names], len(levels)), len(drug_rows))
        s = np.tile([self._dose_index[float(x)] for x in levels], len(drug_rows) * len(names))
        device = self._device
        values = self._run(
            {k: v.to(device) for k, v in graphs.items()},
            self._cell_tensor().to(device),
            torch.arange(len(d)),
            torch.as_tensor(d).to(device),
            torch.as_tensor(c).to(device),
            torch.as_tensor(s).to(device),
        )
        return pd.DataFrame(values, index=grid, columns=list(self.spec_["genes"]))

    def baselines(self) -> dict[str, np.ndarray]:
        """The baselines for every registered profile, fitted on the training ones.

        - ``mean_profile``: the mean training profile;
        - ``cell_line_mean``: the mean training profile of the cell line;
        - ``drug_mean``: the mean training profile of the drug (over cell lines and doses);
        - ``ridge``: the linear probe on the head's own inputs (the drug's mean atom features,
          the cell line's standardised features, the dose one-hot; one ridge per gene, the
          penalty chosen on validation); with ``residual`` the network starts from it.

        A cell line or drug without training profiles (held out) gets the mean profile.

        Returns
        -------
        Method -> ``(n_profiles, n_genes)`` array.
        """
        targets = self._targets()
        train = (self.profiles_["split"] == "train").to_numpy()
        mean = targets[train].mean(axis=0)
        out = {"mean_profile": np.broadcast_to(mean, targets.shape).copy()}
        for name, column in (("cell_line_mean", "cell_line"), ("drug_mean", "drug")):
            keys = self.profiles_[column].to_numpy()
            table = out["mean_profile"].copy()
            for key in np.unique(keys):
                rows = keys == key
                if (rows & train).any():
                    table[rows] = targets[rows & train].mean(axis=0)
            out[name] = table
        out["ridge"] = self._ridge_probe()
        return out

    def evaluate(
        self, splits: Sequence[str] = ("validation", "test"), ks: Sequence[int] = PRECISION_KS
    ) -> pd.DataFrame:
        """DeepCE's metrics of the model and the baselines on each split.

        Parameters
        ----------
        splits
            Splits to score (``"train"``, ``"validation"``, ``"test"``).
        ks
            Cut-offs of precision@k (capped at the number of genes).

        Returns
        -------
        Long DataFrame: ``method`` (``"model"`` and :data:`CHEM_BASELINES`), ``split``,
        ``pearson``, ``spearman``, ``rmse``, ``precision_up@k``, ``precision_down@k``,
        ``n_profiles``.
        """
        targets = self._targets()
        predictions = {"model": self.predict_profiles(), **self.baselines()}
        ks = [k for k in ks if k <= targets.shape[1]]
        n_true = min(100, targets.shape[1])
        return self._score_splits(
            list(predictions),
            splits,
            lambda method, rows: signature_metrics(
                targets[rows], predictions[method][rows], ks=ks, n_true=n_true
            ),
        )

    # ------------------------------------------------------------------ save / load
    def _saved_spec(self) -> dict:
        """The spec with the gene and cell-line feature tables as float32 arrays."""
        spec = dict(self.spec_)
        spec["gene_features"] = np.asarray(spec["gene_features"], dtype=np.float32)
        if spec["cell_features"] is not None:
            spec["cell_features"] = np.asarray(spec["cell_features"], dtype=np.float32)
        return spec

    def _saved_attributes(self) -> dict:
        """The base's attributes (profiles and split, scaling) and the genes without features."""
        return {
            **super()._saved_attributes(),
            "genes_without_features_": list(self.genes_without_features_),
        }

    def _restore_attributes(self, attrs: dict) -> None:
        super()._restore_attributes(attrs)
        self.genes_without_features_ = list(attrs.get("genes_without_features_", []))

    @classmethod
    def _check_loaded_data(cls, adata: ad.AnnData, spec: dict, attrs: dict) -> None:
        """The signatures must be the saved model's: same genes (in order), same profiles."""
        if [str(g) for g in adata.var_names] != [str(g) for g in spec["genes"]]:
            raise ScLongInputError("adata's genes differ from the saved model's (order included).")
        if adata.n_obs != len(attrs["profiles_"]):
            raise ScLongInputError(
                f"adata has {adata.n_obs} profiles; the saved model {len(attrs['profiles_'])}."
            )
