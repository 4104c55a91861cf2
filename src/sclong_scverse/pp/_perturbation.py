"""Perturbation screens: GEARS condition labels, DE genes vs control, and GEARS data splits."""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from typing import Literal

import anndata as ad
import numpy as np
import pandas as pd
from scipy import sparse

from ..errors import ScLongKeyError
from ..validation import ScLongInputError, check_not_view
from ..validation._anndata import refuse_missing

logger = logging.getLogger(__name__)

#: The control label of the GEARS convention (``obs["condition"]``).
CONTROL = "ctrl"
#: Spellings read as "control" (compared case-insensitively, ``-``/``_``/space ignored).
CONTROL_SPELLINGS = (
    "ctrl",
    "control",
    "non-targeting",
    "nontargeting",
    "non_targeting",
    "NT",
    "NTC",
    "safe-targeting",
    "negative_control",
    "unperturbed",
)
#: Separators of combined perturbations read when ``sep`` is ``None``.
SEPARATORS = ("+", "|", "_")
#: Names of the GEARS split subgroups written to ``obs[f"{key_added}_subgroup"]``.
SUBGROUPS = ("ctrl", "train", "val", "unseen_single", "combo_seen0", "combo_seen1", "combo_seen2")


def _canonical(label: str) -> str:
    return re.sub(r"[-_ ]", "", str(label)).lower()


_CONTROL_CANONICAL = {_canonical(s) for s in CONTROL_SPELLINGS}


def is_control_label(label: str, control: Sequence[str] | None = None) -> bool:
    """Whether ``label`` names the control (one of ``control``, else a known spelling)."""
    if control is not None:
        return str(label) in set(map(str, control))
    return _canonical(label) in _CONTROL_CANONICAL


def parse_condition(label: str, sep: str | Sequence[str] | None = None) -> tuple[str, ...]:
    """The perturbed genes of one label (GEARS ``A+ctrl``/``A+B``/``ctrl`` or another spelling).

    Parameters
    ----------
    label
        A perturbation label, e.g. ``"IFNGR1"``, ``"IFNGR1+ctrl"``, ``"A_B"``, ``"A|B"``,
        ``"control"``.
    sep
        Separator(s) of combined perturbations; ``None``: any of ``+``, ``|``, ``_``.

    Returns
    -------
    The perturbed genes, in sorted order, without control parts (``()`` for a control).
    """
    text = str(label).strip()
    if _canonical(text) in _CONTROL_CANONICAL:
        return ()
    separators = SEPARATORS if sep is None else ([sep] if isinstance(sep, str) else list(sep))
    pattern = "|".join(re.escape(s) for s in separators)
    parts = [p.strip() for p in re.split(pattern, text)] if pattern else [text]
    genes = {p for p in parts if p and _canonical(p) not in _CONTROL_CANONICAL}
    return tuple(sorted(genes))


def condition_label(genes: Sequence[str]) -> str:
    """GEARS label of a gene set: ``ctrl``, ``A+ctrl`` or ``A+B`` (genes sorted)."""
    genes = sorted(set(genes))
    if not genes:
        return CONTROL
    if len(genes) == 1:
        return f"{genes[0]}+{CONTROL}"
    return "+".join(genes)


def condition_genes(condition: str) -> tuple[str, ...]:
    """The genes of a GEARS label (``"A+ctrl"`` -> ``("A",)``, ``"ctrl"`` -> ``()``)."""
    return tuple(sorted({g for g in str(condition).split("+") if g and g != CONTROL}))


def perturbation_labels(
    adata: ad.AnnData, key: str, argument: str, layer: str | None, hint: str = ""
) -> np.ndarray:
    """The perturbation labels ``adata.obs[key]`` as text, after checking them and ``layer``.

    Parameters
    ----------
    adata
        The screen (not a view).
    key
        ``adata.obs`` column of the labels (every cell needs one).
    argument
        The argument that named it (``"perturbation_key"``), for messages.
    layer
        The layer the caller reads (``None``: ``adata.X``).
    hint
        Appended to the message of a missing column (what to run first).

    Raises
    ------
    KeyError
        ``key`` or ``layer`` not found.
    ScLongInputError
        ``adata`` is a view, or cells without a label.
    """
    check_not_view(adata)
    if key not in adata.obs.columns:
        raise ScLongKeyError(
            f"{argument}={key!r} is not a column of adata.obs (columns: "
            f"{list(adata.obs.columns)}){hint}."
        )
    if layer is not None and layer not in adata.layers:
        raise ScLongKeyError(f"Layer {layer!r} not in adata.layers ({list(adata.layers)}).")
    labels = adata.obs[key]
    refuse_missing(labels, f"adata.obs[{key!r}]", "label", "cells", "drop them or label them first")
    return labels.astype(str).to_numpy()


def perturbation_conditions(
    adata: ad.AnnData,
    perturbation_key: str,
    control: str | Sequence[str] | None = None,
    sep: str | Sequence[str] | None = None,
    *,
    key_added: str = "condition",
    layer: str | None = None,
    n_de_genes: int = 20,
    n_expressed_genes: int = 1000,
    copy: bool = False,
) -> ad.AnnData | None:
    """GEARS condition labels, DE genes of each condition vs control, most expressed genes.

    Reads ``adata.obs[perturbation_key]`` (pertpy / scPerturb spellings: ``"control"``,
    ``"non-targeting"``, ``"NT"``, ``"ctrl"``; combined perturbations joined by ``+``, ``|`` or
    ``_``) and the values of ``layer`` (or ``adata.X``) for the DE genes. Writes:

    - ``adata.obs[key_added]``: ``"ctrl"``, ``"A+ctrl"`` (one gene) or ``"A+B"`` (genes sorted),
      categorical;
    - ``adata.uns["rank_genes_groups_cov_all"]``: ``{condition: array of the n_de_genes genes}``
      ranked by absolute Welch t statistic vs the control cells (as GEARS, which ranks with
      ``rankby_abs=True``; keyed by condition, not GEARS's ``celltype_condition_dose``);
    - ``adata.uns["top_expressed_genes"]``: the ``n_expressed_genes`` genes with the highest
      mean value over all cells (all genes when there are fewer);
    - ``adata.uns[key_added]``: the parameters.

    Values that look like raw counts (all integers) are normalised to 10,000 per cell and
    ``log1p``-transformed for the DE test only; other values are used as they are.

    Parameters
    ----------
    adata
        AnnData of a perturbation screen.
    perturbation_key
        ``adata.obs`` column of perturbation labels.
    control
        The label(s) of control cells in that column; ``None``: every known control spelling.
    sep
        Separator(s) of combined perturbations; ``None``: ``+``, ``|`` and ``_``.
    key_added
        ``adata.obs`` column to write.
    layer
        Values for the DE genes (``None``: ``adata.X``).
    n_de_genes
        DE genes kept per condition (GEARS: 20).
    n_expressed_genes
        Most expressed genes kept (the L2 metric of Ahlmann-Eltze et al.: 1,000).
    copy
        Return a modified copy instead of writing into ``adata``.

    Returns
    -------
    ``None``, or the copy when ``copy``.

    Raises
    ------
    KeyError
        ``perturbation_key`` or ``layer`` not found.
    ScLongInputError
        A ``control`` label that is not in the column, no control cells, or missing labels.
    """
    text = perturbation_labels(adata, perturbation_key, "perturbation_key", layer)
    if copy:
        adata = adata.copy()
    present = set(text)
    controls = None
    if control is not None:
        controls = [control] if isinstance(control, str) else [str(c) for c in control]
        absent = [c for c in controls if c not in present]
        if absent:
            known = sorted(label for label in present if is_control_label(label))
            raise ScLongInputError(
                f"control label(s) {absent} do not occur in adata.obs[{perturbation_key!r}]"
                + (
                    f"; control-like labels there: {known}"
                    if known
                    else f" (labels like {sorted(present)[:5]})"
                )
                + "."
            )
    mapping = {}
    for label in present:
        if is_control_label(label, controls):
            mapping[label] = CONTROL
        else:
            mapping[label] = condition_label(parse_condition(label, sep))
    conditions = pd.Series(text).map(mapping).to_numpy()
    if not (conditions == CONTROL).any():
        raise ScLongInputError(
            f"No control cells in adata.obs[{perturbation_key!r}] (labels like "
            f"{sorted(present)[:5]}); name the control label with control=..., e.g. "
            "control='non-targeting'. Effects are measured against control cells."
        )
    order = [CONTROL] + sorted(set(conditions) - {CONTROL})
    adata.obs[key_added] = pd.Categorical(conditions, categories=order)
    rank_perturbation_genes(
        adata,
        condition_key=key_added,
        layer=layer,
        n_de_genes=n_de_genes,
        n_expressed_genes=n_expressed_genes,
    )
    adata.uns[key_added] = {
        "perturbation_key": perturbation_key,
        "control": CONTROL if controls is None else list(controls),
        "sep": "auto" if sep is None else sep,
        "n_conditions": len(order) - 1,
    }
    logger.info("%d conditions besides the control", len(order) - 1)
    return adata if copy else None


def _analysis_values(adata: ad.AnnData, layer: str | None) -> sparse.csr_matrix | np.ndarray:
    values = adata.X if layer is None else adata.layers[layer]
    values = sparse.csr_matrix(values, dtype=np.float64) if sparse.issparse(values) else values
    data = values.data if sparse.issparse(values) else np.asarray(values)
    if data.size and np.all(np.equal(np.mod(data, 1), 0)) and data.min() >= 0:
        totals = np.asarray(values.sum(axis=1)).ravel()
        scale = np.divide(1e4, totals, out=np.zeros_like(totals, dtype=float), where=totals > 0)
        if sparse.issparse(values):
            values = sparse.csr_matrix(sparse.diags(scale) @ values)
            values.data = np.log1p(values.data)
        else:
            values = np.log1p(np.asarray(values, dtype=float) * scale[:, None])
    return values


def _mean_var(values, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    block = values[rows]
    if sparse.issparse(block):
        mean = np.asarray(block.mean(axis=0)).ravel()
        square = np.asarray(block.multiply(block).mean(axis=0)).ravel()
    else:
        block = np.asarray(block, dtype=float)
        mean, square = block.mean(axis=0), (block**2).mean(axis=0)
    n = len(rows)
    var = np.maximum(square - mean**2, 0.0) * n / max(n - 1, 1)
    return mean, var


def rank_perturbation_genes(
    adata: ad.AnnData,
    condition_key: str = "condition",
    layer: str | None = None,
    n_de_genes: int = 20,
    n_expressed_genes: int = 1000,
) -> None:
    """Top DE genes of each condition vs control and the most expressed genes, into ``uns``.

    Reads ``adata.obs[condition_key]`` (GEARS labels, control ``"ctrl"``) and the values of
    ``layer`` (or ``adata.X``; raw counts are log-normalised for the test). Writes
    ``adata.uns["rank_genes_groups_cov_all"]`` (``{condition: gene names}``, by absolute Welch
    t statistic) and ``adata.uns["top_expressed_genes"]`` (highest mean value).

    Parameters
    ----------
    adata
        AnnData with GEARS condition labels (:func:`perturbation_conditions`).
    condition_key
        ``adata.obs`` column of conditions.
    layer
        Values to test (``None``: ``adata.X``).
    n_de_genes
        Genes kept per condition.
    n_expressed_genes
        Most expressed genes kept.
    """
    conditions = adata.obs[condition_key].astype(str).to_numpy()
    control_rows = np.flatnonzero(conditions == CONTROL)
    if not len(control_rows):
        raise ScLongInputError(f"No control cells ({CONTROL!r}) in adata.obs[{condition_key!r}].")
    values = _analysis_values(adata, layer)
    genes = np.asarray(adata.var_names, dtype=object)
    control_mean, control_var = _mean_var(values, control_rows)
    ranked = {}
    for condition in sorted(set(conditions) - {CONTROL}):
        rows = np.flatnonzero(conditions == condition)
        mean, var = _mean_var(values, rows)
        scale = np.sqrt(var / len(rows) + control_var / len(control_rows))
        diff = mean - control_mean
        t = np.divide(diff, scale, out=np.zeros_like(diff), where=scale > 0)
        order = np.argsort(-np.abs(t), kind="stable")[:n_de_genes]
        ranked[condition] = genes[order].astype(str)
    mean_all = np.asarray(values.mean(axis=0)).ravel()
    top = np.argsort(-mean_all, kind="stable")[:n_expressed_genes]
    adata.uns["rank_genes_groups_cov_all"] = ranked
    adata.uns["top_expressed_genes"] = genes[top].astype(str)


def perturbation_split(
    adata: ad.AnnData,
    split: Literal["simulation", "single"] = "simulation",
    condition_key: str = "condition",
    *,
    train_gene_fraction: float = 0.75,
    combo_seen2_train_fraction: float = 0.75,
    val_gene_fraction: float = 0.1,
    seed: int = 1,
    test_genes: Sequence[str] | None = None,
    key_added: str = "split",
) -> dict:
    """GEARS data splits of perturbation conditions (held-out genes), seeded.

    ``"simulation"`` (GEARS): the genes perturbed alone or in combinations are shuffled
    (``seed``); ``train_gene_fraction`` of them are seen in training. Test subgroups: singles of
    unseen genes (``unseen_single``), doubles with 0, 1 or 2 seen genes (``combo_seen0``,
    ``combo_seen1``, ``combo_seen2``: of the doubles with both genes seen,
    ``combo_seen2_train_fraction`` stay in training). ``"single"``: for screens of single
    perturbations only, the held-out genes' conditions are the test set. In both, validation
    conditions are drawn the same way from the training genes (``val_gene_fraction``). Control
    cells are training cells.

    Reads ``adata.obs[condition_key]`` (GEARS labels). Writes ``adata.obs[key_added]``
    (``"train"``, ``"val"``, ``"test"``), ``adata.obs[f"{key_added}_subgroup"]`` (one of
    ``ctrl``, ``train``, ``val``, ``unseen_single``, ``combo_seen0/1/2``) and
    ``adata.uns[key_added]`` (parameters, gene sets and the conditions of each subgroup).

    Parameters
    ----------
    adata
        AnnData with condition labels (:func:`perturbation_conditions`).
    split
        ``"simulation"`` or ``"single"``.
    condition_key
        ``adata.obs`` column of GEARS labels.
    train_gene_fraction
        Fraction of perturbed genes seen in training (GEARS: 0.75).
    combo_seen2_train_fraction
        Fraction of doubles of two seen genes kept in training (GEARS: 0.75).
    val_gene_fraction
        Fraction of the training genes held out for validation (0: no validation set).
    seed
        Seed of the shuffles (GEARS default 1).
    test_genes
        Held-out genes chosen by hand (instead of drawing ``1 - train_gene_fraction``).
    key_added
        ``adata.obs`` column to write.

    Returns
    -------
    ``adata.uns[key_added]``: ``{"split", "seed", "train_genes", "val_genes", "test_genes",
    "subgroups": {subgroup: conditions}}``.

    Raises
    ------
    ScLongInputError
        No control cells, fewer than two perturbed genes, ``"single"`` on a screen with
        combinations, or a split that leaves the training set, the test set or a test subgroup
        the data call for (``unseen_single`` when there are singles; ``combo_seen0/1/2`` when
        there are doubles) empty.
    """
    if split not in ("simulation", "single"):
        raise ScLongInputError(f"split must be 'simulation' or 'single', not {split!r}.")
    if condition_key not in adata.obs.columns:
        raise ScLongKeyError(
            f"condition_key={condition_key!r} is not a column of adata.obs; run "
            "scl.pp.perturbation_conditions first."
        )
    for name, value in (
        ("train_gene_fraction", train_gene_fraction),
        ("combo_seen2_train_fraction", combo_seen2_train_fraction),
    ):
        if not 0.0 < value < 1.0:
            raise ScLongInputError(f"{name} must be in (0, 1), got {value}.")
    if not 0.0 <= val_gene_fraction < 1.0:
        raise ScLongInputError(f"val_gene_fraction must be in [0, 1), got {val_gene_fraction}.")
    labels = adata.obs[condition_key].astype(str).to_numpy()
    if not (labels == CONTROL).any():
        raise ScLongInputError(f"No control cells ({CONTROL!r}) in adata.obs[{condition_key!r}].")
    conditions = sorted(set(labels) - {CONTROL})
    genes_of = {c: condition_genes(c) for c in conditions}
    singles = [c for c in conditions if len(genes_of[c]) == 1]
    doubles = [c for c in conditions if len(genes_of[c]) >= 2]
    if split == "single" and doubles:
        raise ScLongInputError(
            f"split='single' is for screens of single perturbations, but there are "
            f"{len(doubles)} combinations (e.g. {doubles[:2]}); use split='simulation'."
        )
    genes = sorted({g for c in conditions for g in genes_of[c]})
    if len(genes) < 2:
        raise ScLongInputError(
            f"A held-out-gene split needs at least two perturbed genes; there are {genes}."
        )
    rng = np.random.default_rng(seed)

    def draw(pool: list[str], fraction_kept: float) -> tuple[list[str], list[str]]:
        shuffled = list(rng.permutation(pool))
        n_kept = int(round(fraction_kept * len(pool)))
        n_kept = min(max(n_kept, 1), len(pool) - 1)
        return sorted(shuffled[:n_kept]), sorted(shuffled[n_kept:])

    if test_genes is None:
        train_genes, test_genes = draw(genes, train_gene_fraction)
    else:
        test_genes = sorted(set(map(str, test_genes)))
        unknown = sorted(set(test_genes) - set(genes))
        if unknown:
            raise ScLongInputError(
                f"test_genes {unknown} are not perturbed in adata.obs[{condition_key!r}]."
            )
        train_genes = sorted(set(genes) - set(test_genes))
    val_genes: list[str] = []
    if val_gene_fraction > 0 and len(train_genes) >= 3 and test_genes:
        train_genes, val_genes = draw(train_genes, 1.0 - val_gene_fraction)
    seen, held_val = set(train_genes), set(val_genes)
    subgroup_of: dict[str, str] = {}
    seen2 = []
    for c in conditions:
        gs = set(genes_of[c])
        if gs <= seen:
            if len(gs) == 1:
                subgroup_of[c] = "train"
            else:
                seen2.append(c)
        elif gs <= seen | held_val:
            subgroup_of[c] = "val"
        elif len(gs) == 1:
            subgroup_of[c] = "unseen_single"
        else:
            subgroup_of[c] = f"combo_seen{len(gs & seen)}"
    if seen2:
        kept, held = draw(seen2, combo_seen2_train_fraction) if len(seen2) > 1 else (seen2, [])
        subgroup_of.update({c: "train" for c in kept})
        subgroup_of.update({c: "combo_seen2" for c in held})
    members = {name: sorted(c for c, s in subgroup_of.items() if s == name) for name in SUBGROUPS}
    members["ctrl"] = [CONTROL]
    required = ["train"]
    if singles:
        required.append("unseen_single")
    if doubles:
        required += ["combo_seen0", "combo_seen1", "combo_seen2"]
    empty = [name for name in required if not members[name]]
    if empty:
        raise ScLongInputError(
            f"The {split!r} split (seed {seed}, train_gene_fraction {train_gene_fraction}) "
            f"leaves the subgroup(s) {empty} empty ({len(singles)} single and {len(doubles)} "
            f"combined conditions over {len(genes)} genes). Try another seed or "
            "train_gene_fraction"
            + (", or split='single' for a screen of single perturbations." if doubles else ".")
        )
    subgroup = np.array([CONTROL if c == CONTROL else subgroup_of[c] for c in labels])
    part = np.where(
        np.isin(subgroup, ["ctrl", "train"]), "train", np.where(subgroup == "val", "val", "test")
    )
    adata.obs[key_added] = pd.Categorical(part, categories=["train", "val", "test"])
    adata.obs[f"{key_added}_subgroup"] = pd.Categorical(subgroup, categories=list(SUBGROUPS))
    record = {
        "split": split,
        "seed": int(seed),
        "condition_key": condition_key,
        "train_gene_fraction": float(train_gene_fraction),
        "train_genes": np.asarray(train_genes, dtype=str),
        "val_genes": np.asarray(val_genes, dtype=str),
        "test_genes": np.asarray(test_genes, dtype=str),
        "subgroups": {k: np.asarray(v, dtype=str) for k, v in members.items()},
    }
    adata.uns[key_added] = record
    return record
