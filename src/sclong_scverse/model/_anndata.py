"""AnnData helpers of the scLong models: values, gene ids, input checks and registration.

Shared by :class:`~sclong_scverse.SCLONG` and the heads built on it: reading a registered
AnnData's values and gene ids, the checks every ``setup_anndata`` makes, the scvi-tools
registration and what a model reads back from it, aligning data to a model's genes, and the
autocast of a query.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Sequence
from typing import Any, Literal

import anndata as ad
import numpy as np
import pandas as pd
import torch
from mudata import MuData
from scipy import sparse
from scvi import REGISTRY_KEYS
from scvi.data import AnnDataManager, fields

from .._settings import quiet_libraries
from ..errors import ScLongKeyError
from ..io._lean import weights_dtype
from ..nn._precision import native_bf16, widened_weights
from ..validation import (
    ScLongInputError,
    check_not_view,
    check_unique_var_names,
    model_normalization,
    normalization_record,
    to_memory,
    validate_adata_input,
)
from ..validation._anndata import refuse_missing

logger = logging.getLogger(__name__)

Pooling = Literal["mean", "max", "sum"]


def _rna(adata: ad.AnnData | MuData, modality: str | None) -> ad.AnnData:
    if isinstance(adata, MuData):
        if modality is None:
            raise ScLongInputError(
                "This model was set up on an AnnData; pass an AnnData, not a MuData."
            )
        return adata.mod[modality]
    return adata


def _gene_ids(adata: ad.AnnData, gene_id_key: str | None) -> pd.Index:
    if gene_id_key is None:
        return pd.Index(adata.var_names.astype(str))
    if gene_id_key not in adata.var:
        raise ScLongKeyError(
            f"gene_id_key {gene_id_key!r} is not a column of adata.var "
            f"(columns: {list(adata.var.columns)})."
        )
    column = adata.var[gene_id_key]
    fix = (
        f"remove those genes (adata = adata[:, adata.var[{gene_id_key!r}].notna()].copy()) or "
        "fill in their ids"
    )
    refuse_missing(column, f"adata.var[{gene_id_key!r}] (gene_id_key)", "id", "genes", fix)
    return pd.Index(column.astype(str))


def _values(adata: ad.AnnData, layer: str | None):
    if layer is None:
        return adata.X
    if layer not in adata.layers:
        raise ScLongKeyError(
            f"Layer {layer!r} not in adata.layers ({list(adata.layers)}). Run "
            f"`scl.pp.normalize(adata, key_added={layer!r})` on raw counts first."
        )
    return adata.layers[layer]


QueryPrecision = Literal["32", "bf16", "16", "auto"]

#: what ``"bf16"`` costs where the CPU emulates it (benchmarks/bench_1b.py, bench preset)
_EMULATED_BF16_NOTE = "3-5x slower than float32 (2-core Xeon without AVX-512 BF16)"


def precision_name(precision: str | int | None) -> str | None:
    """``precision`` without Lightning's suffixes (``"bf16-mixed"`` -> ``"bf16"``), or ``None``."""
    return str(precision).removesuffix("-mixed").removesuffix("-true") if precision else None


def resolve_precision(precision: str | int | None, device: torch.device) -> str:
    """``"32"``, ``"bf16"`` or ``"16"``: the precision a query at ``precision`` runs in.

    ``"auto"`` is ``"bf16"`` where ``device`` has bfloat16 matrix instructions (GPUs from
    Ampere on, CPUs with AVX-512 BF16 or AMX: :func:`~sclong_scverse.nn._precision.native_bf16`)
    and ``"32"`` elsewhere. Lightning's spellings (``"bf16-mixed"``, ``"32-true"``) are accepted.
    """
    name = precision_name(precision) or "32"
    if name == "auto":
        return "bf16" if native_bf16(device) else "32"
    if name not in ("32", "bf16", "16"):
        raise ScLongInputError(
            f"precision must be '32', 'bf16', '16' or 'auto', not {precision!r}."
        )
    return name


def inference_autocast(
    precision: str | int | None, device: torch.device, module: torch.nn.Module | None = None
):
    """The context a query at ``precision`` runs in.

    ``"32"`` / ``None``: float32. For a ``module`` whose weights are held in bfloat16 that
    means widening them to float32 one block at a time as it runs
    (:func:`~sclong_scverse.nn._precision.widened_weights`: half the memory of float32 weights,
    nearly float32 speed). ``"bf16"``: bfloat16 autocast (warns on a CPU that emulates it);
    ``"16"``: float16 autocast (GPUs only); ``"auto"``: see :func:`resolve_precision`.
    """
    device = torch.device(device)
    name = resolve_precision(precision, device)
    if name == "32":
        if module is not None and weights_dtype(module) == torch.bfloat16:
            return widened_weights(module)
        return contextlib.nullcontext()
    if name == "bf16":
        if device.type == "cpu" and not native_bf16(device):
            warnings.warn(
                "precision='bf16' on a CPU without bfloat16 matrix instructions (AVX-512 BF16 "
                f"or AMX; see `lscpu`): they are emulated, about {_EMULATED_BF16_NOTE}. Use "
                "precision='32' (or 'auto'); a model held in bfloat16 then runs in float32 "
                "with its weights widened one block at a time (half the memory, nearly "
                "float32 speed).",
                UserWarning,
                stacklevel=3,
            )
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    if device.type == "cpu":
        raise ScLongInputError(
            "precision='16' (float16) needs a GPU; on a CPU use precision='32' or 'bf16'."
        )
    return torch.autocast(device_type=device.type, dtype=torch.float16)


def check_model_input(
    adata: ad.AnnData,
    layer: str | None,
    gene_id_key: str | None,
    normalization: dict | None,
    check_normalization: bool,
) -> dict:
    """The input checks every scLong model's ``setup_anndata`` makes; the normalisation record.

    Refuses a view, an empty AnnData, duplicated gene names or ids, a missing layer and values
    the model cannot read (:func:`~sclong_scverse.pp.validate_adata_input`); returns the
    normalisation to record (:func:`model_normalization`).
    """
    check_not_view(adata)
    if adata.n_obs == 0 or adata.n_vars == 0:
        raise ScLongInputError(
            f"adata has {adata.n_obs} cells x {adata.n_vars} genes; scLong needs at least "
            "one cell and one gene."
        )
    check_unique_var_names(adata)
    if gene_id_key is not None and _gene_ids(adata, gene_id_key).has_duplicates:
        raise ScLongInputError(
            f"adata.var[{gene_id_key!r}] (gene_id_key) has duplicated gene ids; make them "
            "unique (e.g. keep one gene per id) or register without gene_id_key."
        )
    _values(adata, layer)  # a clear KeyError for a missing layer
    normalization = model_normalization(adata, layer, normalization)
    validate_adata_input(
        adata,
        layer,
        expected_max=normalization["max_value"],
        check_normalization=check_normalization,
    )
    return normalization


def register_cell_values(cls: type, adata: ad.AnnData, arguments: dict, **kwargs) -> None:
    """Check the values scLong reads and register them with the batch / label columns.

    The one registration of :meth:`SCLONG.setup_anndata` and the heads on cells. ``arguments``
    is the ``setup_anndata`` call's ``locals()`` taken first thing (as scvi-tools'
    ``_get_setup_method_args(**locals())``): ``layer``, ``batch_key``, ``labels_key``,
    ``gene_id_key``, ``check_normalization``, ``normalization`` and the model's own settings.
    The values are checked (:func:`check_model_input`), the normalisation record resolved and
    kept with the setup arguments, and an scvi-tools manager registers ``adata``.
    """
    args = {k: v for k, v in arguments.items() if k not in ("cls", "adata", "kwargs")}
    args["check_normalization"] = bool(args["check_normalization"])
    args["normalization"] = check_model_input(
        adata,
        args["layer"],
        args["gene_id_key"],
        args["normalization"],
        args["check_normalization"],
    )
    setup_method_args = cls._get_setup_method_args(cls=cls, adata=adata, **args)
    anndata_fields = [
        fields.LayerField(REGISTRY_KEYS.X_KEY, args["layer"], is_count_data=False),
        fields.CategoricalObsField(REGISTRY_KEYS.BATCH_KEY, args["batch_key"]),
        fields.CategoricalObsField(REGISTRY_KEYS.LABELS_KEY, args["labels_key"]),
    ]
    register_fields(cls, adata, setup_method_args, anndata_fields, **kwargs)


def register_fields(
    cls: type,
    data: ad.AnnData | MuData,
    setup_method_args: dict,
    data_fields: Sequence[Any],
    **kwargs,
) -> None:
    """Register ``data`` with scvi-tools fields: the last step of every model's setup method.

    Parameters
    ----------
    cls
        The model class (its manager is registered on it).
    data
        The AnnData (or MuData) being set up.
    setup_method_args
        ``cls._get_setup_method_args(**locals())`` of the setup call, saved with the model.
    data_fields
        scvi-tools fields (``fields.LayerField``, ``fields.ObsmField``, ...).
    **kwargs
        Passed to :meth:`scvi.data.AnnDataManager.register_fields`.
    """
    manager = AnnDataManager(fields=list(data_fields), setup_method_args=setup_method_args)
    with quiet_libraries():  # scvi-tools' info lines ("Using column names from ...")
        manager.register_fields(data, **kwargs)
    cls.register_manager(manager)


class RegisteredCellsMixin:
    """What a model registered on cells (scLong, its classifier) reads from its registry.

    The setup arguments of :func:`register_cell_values` (or scLong's ``setup_mudata``).
    """

    @property
    def _setup_args(self) -> dict:
        return self.adata_manager.registry["setup_args"]

    @property
    def _gene_id_key(self) -> str | None:
        return self._setup_args.get("gene_id_key")

    @property
    def _layer(self) -> str | None:
        args = self._setup_args
        return args.get("layer", args.get("rna_layer"))

    @property
    def _modality(self) -> str | None:
        """The RNA modality of a MuData registration (``None``: an AnnData)."""
        args = self._setup_args
        if "modalities" not in args:
            return None
        return {"rna_layer": "rna", **(args["modalities"] or {})}["rna_layer"]

    @property
    def _registered_rna(self) -> ad.AnnData:
        """The registered AnnData (of a MuData, its RNA modality)."""
        return _rna(self.adata, self._modality)

    def _model_gene_ids(self) -> pd.Index:
        """The registered genes' ids (the ``gene_id_key`` column, else the var names)."""
        return _gene_ids(self._registered_rna, self._gene_id_key)

    def _saved_gene_ids(self) -> pd.Index | None:
        """The gene ids saved with the model: the ``gene_id_key`` column (``None``: none)."""
        return None if self._gene_id_key is None else self._model_gene_ids()


#: Fewest of the model's genes (fraction) a query must hold; below it, queries are refused.
MIN_QUERY_COVERAGE = 0.5


def check_query_coverage(
    model_ids: pd.Index, query_ids: pd.Index, min_coverage: float = MIN_QUERY_COVERAGE
) -> float:
    """Refuse a query that holds fewer than ``min_coverage`` of the model's genes.

    The one rule of every query path (embeddings, predictions, the classifier's queries, the
    CLI): with most of what the model reads missing (filled with 0), its outputs describe the
    missing genes more than the cells.

    Parameters
    ----------
    model_ids
        The gene ids the model was set up with.
    query_ids
        The query's gene ids (same kind: ``var_names`` or the ``gene_id_key`` column).
    min_coverage
        Fewest model genes (fraction) the query must hold (0 accepts any overlap).

    Returns
    -------
    The fraction of the model's genes found in the query.

    Raises
    ------
    ScLongInputError
        Fewer than ``min_coverage`` of the model's genes are in the query.
    """
    n_found = int(model_ids.isin(query_ids).sum())
    fraction = n_found / max(len(model_ids), 1)
    if fraction < min_coverage:
        raise ScLongInputError(
            f"Only {n_found} of the model's {len(model_ids)} genes ({fraction:.0%}) are in the "
            f"query; at least {min_coverage:.0%} are needed (min_coverage= / --min-coverage). "
            "Check that both use the same kind of gene ids (symbols vs Ensembl ids; set "
            "gene_id_key in setup_anndata when the ids are in an adata.var column): query "
            f"genes like {list(query_ids[:3])}, model genes like {list(model_ids[:3])}."
        )
    return fraction


def match_query_ids(query_ids: pd.Index, model_ids: pd.Index) -> pd.Index:
    """The query's gene ids written as the model's, where they name the same gene.

    As the official release and corpora match genes (:meth:`GeneVocabulary.align
    <sclong_scverse.genes.GeneVocabulary.align>`): the same id, an Ensembl id without its
    version, a symbol in another case, and across id types (Ensembl ids on a model set up with
    symbols, or the reverse) and through previous symbols and aliases via the embedded NCBI
    human gene tables. Each model gene is taken by one query gene at most (the best match, then
    the first); the others keep their own id (they match nothing). Logs how the genes matched
    when any matched other than by the same id.

    Returns
    -------
    ``(n_query_genes,)`` index: the model's id for matched genes, the query's own otherwise.
    """
    from ..genes import GeneVocabulary

    if query_ids.has_duplicates or query_ids.isin(model_ids).all():
        return query_ids  # duplicated ids are refused by the caller, with their own message
    alignment = GeneVocabulary(list(model_ids)).align(list(query_ids), min_coverage=0.0)
    positions = alignment.var_positions
    matched = np.asarray(model_ids)[np.maximum(positions, 0)]
    translated = pd.Index(np.where(positions >= 0, matched, np.asarray(query_ids, dtype=object)))
    other = {k: n for k, n in alignment.match_counts().items() if k not in ("exact", "absent")}
    if other:
        logger.info(
            "query genes matched to the model's %d genes: %s",
            len(model_ids),
            ", ".join(f"{n:,} {k}" for k, n in sorted(other.items())),
        )
    if translated.has_duplicates:  # an unmatched query id equal to a model id taken by another
        seen = translated.duplicated(keep="first") & (positions < 0)
        translated = pd.Index(
            [f"{t} (unmatched)" if d else t for t, d in zip(translated, seen, strict=True)]
        )
    return translated


def _align_to_genes(
    adata: ad.AnnData,
    layer: str | None,
    data_ids: pd.Index,
    model_ids: pd.Index,
    model_var_names: pd.Index,
    *,
    expected_max: float | None = None,
    check_normalization: bool = False,
) -> ad.AnnData:
    """A new AnnData with ``adata``'s values on the model's genes (absent genes = 0).

    The values are validated first (:func:`~sclong_scverse.pp.validate_adata_input`, on
    ``adata``'s own genes: removing genes lowers some cells' maximum); ``expected_max`` and
    ``check_normalization`` are the model's (defaults: finite and non-negative only). The new
    AnnData carries ``adata.obs`` and, when ``adata`` has one or the values were checked
    against ``expected_max``, a normalisation record in ``uns`` (so registering it does not
    test the per-cell maximum of the aligned values again).
    """
    check_not_view(adata)
    if data_ids.has_duplicates:
        check_unique_var_names(adata)
        raise ScLongInputError(
            "Gene ids of this AnnData are duplicated (the gene_id_key column); make them "
            "unique first, e.g. keep one gene per id."
        )
    validate_adata_input(
        adata, layer, expected_max=expected_max, check_normalization=check_normalization
    )
    values = to_memory(_values(adata, layer))
    source = data_ids.get_indexer(model_ids)
    found = source >= 0
    if not found.any():
        raise ScLongInputError(
            "None of the model's genes are in this AnnData, the model cannot be applied "
            f"(model genes like {list(model_ids[:3])}, data genes like {list(data_ids[:3])}). "
            "If the ids are in an adata.var column, set gene_id_key in setup_anndata."
        )
    n_missing = int((~found).sum())
    if n_missing:
        warnings.warn(
            f"{n_missing} of the model's {len(model_ids)} genes are absent from this AnnData and "
            f"enter as 0; {adata.n_vars - int(found.sum())} of its genes are not used.",
            UserWarning,
            stacklevel=3,
        )
    matrix = sparse.csc_matrix(values)[:, np.where(found, source, 0)]
    aligned = sparse.csr_matrix(matrix @ sparse.diags(found.astype(np.float32)), dtype=np.float32)
    result = ad.AnnData(obs=adata.obs.copy(), var=pd.DataFrame(index=model_var_names.copy()))
    # X holds the values too (scvi-tools reads an all-zero sparse X as minified data)
    result.X = aligned
    if layer is not None:
        result.layers[layer] = aligned
    record = normalization_record(adata, layer)
    if record is None and check_normalization and expected_max is not None:
        record = {"method": "checked before alignment", "max_value": float(expected_max)}
    if record is not None:
        record["output"] = "X" if layer is None else f"layers/{layer}"
        result.uns[layer or "sclong"] = {"params": record}
    return result
