from __future__ import annotations

import contextlib
import copy
import logging
import os
import warnings
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import anndata as ad
import numpy as np
import pandas as pd
import torch
from mudata import MuData
from scipy import sparse
from scvi import REGISTRY_KEYS, settings
from scvi.data import AnnDataManager, fields
from scvi.model.base import BaseModelClass, UnsupervisedTrainingMixin
from tqdm.auto import tqdm

from ..genes import GeneVocabulary
from ..go import GeneGraph, default_human_annotations
from ..module import ScLongModule, ScLongTrainingPlan
from ..module._module import pool_decoded
from ..nn import ScLongConfig, ScLongNetwork
from ..pp._checks import (
    SCLONG_MAX_VALUE,
    ScLongInputError,
    check_not_view,
    check_obs_key,
    check_unique_var_names,
    model_normalization,
    normalization_record,
    to_memory,
    validate_adata_input,
)

logger = logging.getLogger(__name__)
#: calls reading at least this many cell x gene values show a progress bar by default
_PROGRESS_MIN_VALUES = 10_000_000
#: epochs of at least this many steps get a progress bar per step (else per epoch)
_STEP_BAR_MIN_STEPS = 50

Pooling = Literal["mean", "max", "sum"]


def _rna(adata: ad.AnnData | MuData, modality: str | None) -> ad.AnnData:
    if isinstance(adata, MuData):
        if modality is None:
            raise ValueError("This model was set up on an AnnData; pass an AnnData, not a MuData.")
        return adata.mod[modality]
    return adata


def _gene_ids(adata: ad.AnnData, gene_id_key: str | None) -> pd.Index:
    if gene_id_key is None:
        return pd.Index(adata.var_names.astype(str))
    if gene_id_key not in adata.var:
        raise KeyError(
            f"gene_id_key {gene_id_key!r} is not a column of adata.var "
            f"(columns: {list(adata.var.columns)})."
        )
    column = adata.var[gene_id_key]
    missing = np.asarray(column.isna())
    if missing.any():
        raise ScLongInputError(
            f"adata.var[{gene_id_key!r}] (gene_id_key) has no id for {int(missing.sum())} genes "
            f"(e.g. {list(adata.var_names[missing][:3])}); remove those genes "
            f"(adata = adata[:, adata.var[{gene_id_key!r}].notna()].copy()) or fill in their ids."
        )
    return pd.Index(column.astype(str))


def _values(adata: ad.AnnData, layer: str | None):
    if layer is None:
        return adata.X
    if layer not in adata.layers:
        raise KeyError(
            f"Layer {layer!r} not in adata.layers ({list(adata.layers)}). Run "
            f"`scl.pp.normalize(adata, key_added={layer!r})` on raw counts first."
        )
    return adata.layers[layer]


# Default GO graphs built in this process, by vocabulary: a model built again on the same genes
# (a notebook re-run, several models on one dataset) reuses the graph instead of rebuilding it
# (28,517 CellBench genes: 2.7 s, then 0.19 s; benchmarks/bench_model.py). A full human graph
# (~480k edges) takes about 10 MB.
_DEFAULT_GRAPHS: OrderedDict[tuple, GeneGraph] = OrderedDict()
_DEFAULT_GRAPHS_KEPT = 4


def _default_gene_graph(vocabulary: GeneVocabulary) -> GeneGraph:
    """The GO graph of ``vocabulary`` from the embedded human annotations, once per process."""
    key = (vocabulary.id_type, vocabulary.pad_token, tuple(vocabulary.genes))
    graph = _DEFAULT_GRAPHS.get(key)
    if graph is None:
        annotations = default_human_annotations(id_type=vocabulary.id_type)
        graph = GeneGraph.from_annotations(vocabulary, annotations)
        _DEFAULT_GRAPHS[key] = graph
        while len(_DEFAULT_GRAPHS) > _DEFAULT_GRAPHS_KEPT:
            _DEFAULT_GRAPHS.popitem(last=False)
    else:
        _DEFAULT_GRAPHS.move_to_end(key)
    # a copy: the network keeps the edge tensors as buffers, which must not alias the cache
    return GeneGraph(
        vocabulary,
        graph.edge_index.clone(),
        graph.edge_weight.clone(),
        n_nodes=graph.n_nodes,
        annotated=graph.annotated.copy(),
        params=copy.deepcopy(graph.params),
    )


QueryPrecision = Literal["32", "bf16", "16"]


def inference_autocast(precision: str | int | None, device: torch.device):
    """Autocast context of a query at ``precision``.

    ``"32"`` / ``None`` (float32, no autocast), ``"bf16"`` or ``"16"`` (float16, GPUs only);
    Lightning's spellings (``"bf16-mixed"``, ``"32-true"``) are accepted.
    """
    name = str(precision).removesuffix("-mixed").removesuffix("-true") if precision else "32"
    if name == "32":
        return contextlib.nullcontext()
    if name == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    if name == "16":
        if device.type == "cpu":
            raise ValueError(
                "precision='16' (float16) needs a GPU; on a CPU use precision='bf16' or '32'."
            )
        return torch.autocast(device_type=device.type, dtype=torch.float16)
    raise ValueError(f"precision must be '32', 'bf16' or '16', not {precision!r}.")


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


def register_fields(
    cls: type,
    adata: ad.AnnData,
    setup_method_args: dict,
    layer: str | None,
    batch_key: str | None,
    labels_key: str | None,
    **kwargs,
) -> None:
    """Register the values layer and the batch / label columns with an scvi-tools manager."""
    anndata_fields = [
        fields.LayerField(REGISTRY_KEYS.X_KEY, layer, is_count_data=False),
        fields.CategoricalObsField(REGISTRY_KEYS.BATCH_KEY, batch_key),
        fields.CategoricalObsField(REGISTRY_KEYS.LABELS_KEY, labels_key),
    ]
    adata_manager = AnnDataManager(fields=anndata_fields, setup_method_args=setup_method_args)
    adata_manager.register_fields(adata, **kwargs)
    cls.register_manager(adata_manager)


class SCLONG(UnsupervisedTrainingMixin, BaseModelClass):
    """scLong single-cell foundation model (Bai et al., Nat. Commun. 2026).

    A dual Performer encoder over the whole transcriptome (the most expressed genes through a
    large encoder, all others through a small one), merged by a full-length Performer, with gene
    embeddings enriched by a graph network over Gene Ontology; pretrained by masked-expression
    modelling.

    The model reads the values registered by :meth:`setup_anndata` (``adata.layers[layer]`` or
    ``adata.X``) and the gene ids (``adata.var_names`` or ``adata.var[gene_id_key]``); it never
    writes into ``adata`` itself. The query methods return arrays and tables; the
    ``scl.tl`` functions write them into AnnData (``obsm["X_sclong"]``,
    ``varm["sclong"]``, ``varp["sclong_grn"]``).

    Parameters
    ----------
    adata
        AnnData (or MuData) registered with :meth:`setup_anndata` (or :meth:`setup_mudata`). Its
        values must be log-normalised as scLong expects (:func:`sclong_scverse.pp.normalize`).
    config
        A preset name (``"tiny"``, ``"small"``, ``"bench"``, ``"1b"``) or a
        :class:`~sclong_scverse.ScLongConfig`; ``n_genes`` is set from the vocabulary.
    vocabulary
        The model's gene vocabulary (:class:`~sclong_scverse.genes.GeneVocabulary` or a list of
        gene ids). Default: the genes of ``adata``.
    gene_graph
        The GO gene graph: a :class:`~sclong_scverse.go.GeneGraph` (re-indexed onto the
        vocabulary), ``None`` (default: built from the embedded human GO annotations) or
        ``False`` (no GO edges: the article's ablation *without the GO graph*; the GO table
        and its graph convolution stay in the network, but with no edges the convolution
        passes nothing between genes, so a gene's embedding is its identity row plus one
        shared learned vector, the convolution's bias; see ``docs/ablation.md``).
    gene2vec
        Optional ``(n_genes, dim)`` array or ``.npy`` path initialising both gene tables, as the
        official Gene2Vec initialisation.
    mask_fraction
        Fraction of each cell's non-zero values chosen for the objective (0.15).
    replace_fraction
        Fraction of the chosen values replaced by the mask token (0.9).
    network
        An existing :class:`~sclong_scverse.nn.ScLongNetwork` over ``vocabulary`` (used by
        :meth:`from_official`).
    low_expression_branch
        ``False``: the article's ablation *without the low-expression branch*
        (:class:`~sclong_scverse.nn.ScLongConfig`): only each cell's ``top_seq_len`` most
        expressed genes enter, the decoder sees them alone, and the model predicts and
        represents only them. Cell embeddings pool the decoded genes only, contextual gene
        embeddings average a gene over the cells where it was decoded (NaN for a gene never
        among a cell's top genes), :meth:`predict` gives NaN at genes outside a cell's top set,
        and the masked-expression objective masks as the published model does but routes the
        masked genes into the top set (:class:`~sclong_scverse.module.ScLongModule`).
        ``None`` (default): as ``config``
        says (``True`` for the presets). Saved and loaded with the model.

    Notes
    -----
    The article's two ablations are options: ``low_expression_branch=False`` and
    ``gene_graph=False``. ``docs/ablation.md`` trains both next to the full model with the same
    budget and scores them on masked-expression error, batch integration and GRN inference.

    Examples
    --------
    >>> import sclong_scverse as scl
    >>> scl.pp.normalize(adata)  # writes adata.layers["sclong"]
    >>> scl.SCLONG.setup_anndata(adata, layer="sclong")
    >>> model = scl.SCLONG(adata, config="tiny")
    >>> model.train(max_epochs=5)
    >>> scl.tl.embed(adata, model)  # writes adata.obsm["X_sclong"]
    """

    _module_cls = ScLongModule
    _training_plan_cls = ScLongTrainingPlan

    def __init__(
        self,
        adata: ad.AnnData | MuData,
        config: str | ScLongConfig | dict = "tiny",
        vocabulary: GeneVocabulary | Sequence[str] | None = None,
        gene_graph: GeneGraph | Literal[False] | None = None,
        gene2vec: np.ndarray | str | os.PathLike | None = None,
        mask_fraction: float = 0.15,
        replace_fraction: float = 0.9,
        network: ScLongNetwork | None = None,
        low_expression_branch: bool | None = None,
    ):
        super().__init__(adata)
        rna = _rna(adata, self._modality)
        if vocabulary is None:
            vocabulary = GeneVocabulary.from_anndata(rna, gene_id_key=self._gene_id_key)
        elif not isinstance(vocabulary, GeneVocabulary):
            vocabulary = GeneVocabulary(list(vocabulary))
        self.vocabulary = vocabulary
        self.alignment = vocabulary.align(rna, gene_id_key=self._gene_id_key)

        if isinstance(config, dict):
            config = ScLongConfig.from_dict(config)
        if isinstance(config, str):
            config = ScLongConfig.preset(config, n_genes=len(vocabulary))
        elif config.n_genes is None:
            config = config.replace(n_genes=len(vocabulary))
        if config.n_genes != len(vocabulary):
            raise ValueError(
                f"config.n_genes ({config.n_genes}) differs from the vocabulary size "
                f"({len(vocabulary)})."
            )
        if low_expression_branch is not None:
            if network is not None and network.config.low_expression_branch != bool(
                low_expression_branch
            ):
                raise ValueError(
                    "low_expression_branch differs from the given network's; a network's "
                    "branches are fixed when it is built."
                )
            config = config.replace(low_expression_branch=bool(low_expression_branch))
        if config.top_seq_len >= config.n_tokens:
            config = config.replace(top_seq_len=max(1, config.n_tokens // 4))
            warnings.warn(
                f"top_seq_len is larger than the vocabulary; using {config.top_seq_len}.",
                UserWarning,
                stacklevel=2,
            )

        edge_index = edge_weight = None
        if network is None and gene_graph is not False:
            graph = self._gene_graph(vocabulary, gene_graph)
            if graph is not None:
                edge_index, edge_weight = graph.edge_index, graph.edge_weight

        self.module = self._module_cls(
            config,
            torch.as_tensor(self.alignment.var_positions),
            edge_index=edge_index,
            edge_weight=edge_weight,
            mask_fraction=mask_fraction,
            replace_fraction=replace_fraction,
            network=network,
        )
        if gene2vec is not None and network is None:
            self._init_gene_tables(gene2vec)
        self.is_pretrained = network is not None
        self._model_summary_string = (
            f"SCLONG: {len(vocabulary)} genes, dim {config.dim}, top {config.top_seq_len}, "
            f"large {config.large_depth}x{config.large_heads}x{config.large_dim_head} at "
            f"{config.large_dim}, {sum(p.numel() for p in self.module.parameters()):,} "
            f"parameters, attention {config.attention_mode}"
            f"{'' if config.low_expression_branch else ', no low-expression branch'}"
            f"; data genes in vocabulary: "
            f"{self.alignment.n_vocab_covered}/{len(vocabulary)}"
        )
        # saved with the model: plain values; the GO graph travels in the module's state dict
        self.init_params_ = {
            "non_kwargs": {
                "config": config.to_dict(),
                "vocabulary": list(vocabulary.genes),
                "gene_graph": False,
                "gene2vec": None,
                "mask_fraction": mask_fraction,
                "replace_fraction": replace_fraction,
            },
            "kwargs": {"kwargs": {}},
        }

    # ------------------------------------------------------------------ set-up
    @classmethod
    def setup_anndata(
        cls,
        adata: ad.AnnData,
        layer: str | None = None,
        batch_key: str | None = None,
        labels_key: str | None = None,
        gene_id_key: str | None = None,
        check_normalization: bool = True,
        normalization: dict | None = None,
        **kwargs,
    ) -> None:
        """Register an AnnData for scLong.

        Reads ``adata.layers[layer]`` (or ``adata.X``), ``adata.var_names`` (or
        ``adata.var[gene_id_key]``), the ``adata.obs`` columns ``batch_key`` and ``labels_key``
        and the record :func:`sclong_scverse.pp.normalize` leaves in ``adata.uns``. Writes the
        scvi-tools registration: ``adata.uns["_scvi_uuid"]``, ``adata.uns["_scvi_manager_uuid"]``,
        ``adata.obs["_scvi_batch"]`` and ``adata.obs["_scvi_labels"]``.

        The values are validated by :func:`sclong_scverse.pp.validate_model_input`: finite,
        non-negative (the model reads values <= -1 as mask tokens) and, unless
        ``check_normalization=False``, normalised as scLong expects (not raw counts, each cell
        rescaled to the maximum of ``normalization``). The normalisation is recorded in the
        registry (saved with the model); every later query of the model (embeddings, gene
        networks, predictions, training) is checked against it the same way.

        Parameters
        ----------
        adata
            AnnData with log-normalised values (:func:`sclong_scverse.pp.normalize`), at least
            one cell and one gene.
        layer
            ``adata.layers[layer]`` holds the values (``None``: ``adata.X``). Usually
            ``"sclong"``, the layer written by :func:`sclong_scverse.pp.normalize`.
        batch_key
            ``adata.obs`` column of batches (recorded, e.g. for integration benchmarks); every
            cell needs a value. The model never reads it, so queries may have other batches.
        labels_key
            ``adata.obs`` column of cell labels (recorded); every cell needs a value.
        gene_id_key
            ``adata.var`` column with the gene ids to match to the vocabulary (``None``:
            ``adata.var_names``). Symbols and Ensembl ids are both understood.
        check_normalization
            Test that the values look normalised as scLong expects (integer-valued data are
            refused as raw counts; values above the per-cell maximum, or no cell reaching it,
            are refused as another normalisation). ``False`` keeps only the finite and
            non-negative tests, for data normalised otherwise on purpose; recorded, so queries
            skip those tests as well.
        normalization
            How the values were normalised: a dict with ``max_value`` (the per-cell maximum)
            and optionally ``target_sum`` and ``method``. ``None`` (default): read from the
            record :func:`sclong_scverse.pp.normalize` leaves in ``adata.uns`` when it wrote
            these values, else scLong's preprocessing is assumed (maximum 10). Recorded in the
            registry as ``{"method", "target_sum", "max_value"}``.
        **kwargs
            Passed to :meth:`scvi.data.AnnDataManager.register_fields`.

        Raises
        ------
        ScLongInputError
            ``adata`` is a view, has no cells or genes, duplicated gene names, values the
            model cannot read (see above; the message names cells and says what to run), or
            a ``batch_key`` / ``labels_key`` column with missing values.
        KeyError
            ``layer``, ``gene_id_key``, ``batch_key`` or ``labels_key`` not found.
        """
        check_obs_key(adata, batch_key, "batch_key")
        check_obs_key(adata, labels_key, "labels_key")
        normalization = check_model_input(
            adata, layer, gene_id_key, normalization, bool(check_normalization)
        )
        setup_method_args = cls._get_setup_method_args(
            cls=cls,
            adata=adata,
            layer=layer,
            batch_key=batch_key,
            labels_key=labels_key,
            gene_id_key=gene_id_key,
            check_normalization=bool(check_normalization),
            normalization=normalization,
        )
        register_fields(cls, adata, setup_method_args, layer, batch_key, labels_key, **kwargs)

    @classmethod
    def setup_mudata(
        cls,
        mdata: MuData,
        rna_layer: str | None = None,
        batch_key: str | None = None,
        labels_key: str | None = None,
        gene_id_key: str | None = None,
        modalities: dict[str, str] | None = None,
        check_normalization: bool = True,
        normalization: dict | None = None,
        **kwargs,
    ) -> None:
        """Register the RNA modality of a MuData for scLong.

        Reads the RNA modality's layer ``rna_layer`` (or its ``X``), its ``var_names`` (or
        ``var[gene_id_key]``), its ``uns`` record of :func:`sclong_scverse.pp.normalize` and the
        ``obs`` columns ``batch_key`` and ``labels_key``. Writes the scvi-tools registration:
        ``mdata.uns["_scvi_uuid"]``, ``mdata.uns["_scvi_manager_uuid"]``, and
        ``obs["_scvi_batch"]`` / ``obs["_scvi_labels"]`` of the modalities holding those
        columns. The values are validated as in :meth:`setup_anndata`.

        Parameters
        ----------
        mdata
            MuData whose RNA modality holds log-normalised values.
        rna_layer
            Layer of the RNA modality with the values (``None``: its ``X``).
        batch_key, labels_key
            ``obs`` columns of batches and labels (of the modality named in ``modalities``).
        gene_id_key
            ``var`` column of the RNA modality with gene ids (``None``: its ``var_names``).
        modalities
            Which modality holds each field, e.g. ``{"rna_layer": "rna"}`` (default ``"rna"``
            for all).
        check_normalization, normalization
            As in :meth:`setup_anndata`.
        **kwargs
            Passed to :meth:`scvi.data.AnnDataManager.register_fields`.
        """
        modalities = {
            "rna_layer": "rna",
            "batch_key": "rna",
            "labels_key": "rna",
            **(modalities or {}),
        }
        rna_name = modalities["rna_layer"]
        if rna_name not in mdata.mod:
            raise KeyError(f"Modality {rna_name!r} not in the MuData ({list(mdata.mod)}).")
        rna = mdata.mod[rna_name]
        if rna.n_obs == 0 or rna.n_vars == 0:
            raise ScLongInputError(
                f"mdata.mod[{rna_name!r}] has {rna.n_obs} cells x {rna.n_vars} genes; scLong "
                "needs at least one cell and one gene."
            )
        check_unique_var_names(rna)
        _gene_ids(rna, gene_id_key)
        for key, argument in ((batch_key, "batch_key"), (labels_key, "labels_key")):
            if key is not None and modalities[argument] in mdata.mod:
                check_obs_key(mdata.mod[modalities[argument]], key, argument)
        _values(rna, rna_layer)
        normalization = model_normalization(rna, rna_layer, normalization)
        validate_adata_input(
            rna,
            rna_layer,
            expected_max=normalization["max_value"],
            check_normalization=bool(check_normalization),
            name=f"mdata.mod[{rna_name!r}]",
        )
        setup_method_args = cls._get_setup_method_args(
            cls=cls,
            mdata=mdata,
            rna_layer=rna_layer,
            batch_key=batch_key,
            labels_key=labels_key,
            gene_id_key=gene_id_key,
            modalities=modalities,
            check_normalization=bool(check_normalization),
            normalization=normalization,
        )
        mudata_fields = [
            fields.MuDataLayerField(
                REGISTRY_KEYS.X_KEY,
                rna_layer,
                mod_key=rna_name,
                is_count_data=False,
                mod_required=True,
            ),
            fields.MuDataCategoricalObsField(
                REGISTRY_KEYS.BATCH_KEY, batch_key, mod_key=modalities["batch_key"]
            ),
            fields.MuDataCategoricalObsField(
                REGISTRY_KEYS.LABELS_KEY, labels_key, mod_key=modalities["labels_key"]
            ),
        ]
        adata_manager = AnnDataManager(fields=mudata_fields, setup_method_args=setup_method_args)
        adata_manager.register_fields(mdata, **kwargs)
        cls.register_manager(adata_manager)

    @property
    def gene_graph_summary(self) -> str:
        """The GO graph the network uses (it travels with saved and official models)."""
        embedding = self.module.network.gene_embedding
        n_edges = embedding.edge_index.shape[1]
        n_connected = int(torch.unique(embedding.edge_index[1]).numel()) if n_edges else 0
        return f"{n_edges:,} GO edges into {n_connected:,} of {embedding.n_tokens - 1:,} genes"

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
        args = self._setup_args
        if "modalities" not in args:
            return None
        return {"rna_layer": "rna", **(args["modalities"] or {})}["rna_layer"]

    def _gene_graph(self, vocabulary: GeneVocabulary, gene_graph: GeneGraph | None):
        if isinstance(gene_graph, GeneGraph):
            return gene_graph.reindex(vocabulary)
        id_type = vocabulary.id_type
        if id_type not in ("ensembl", "symbol"):
            warnings.warn(
                "The vocabulary's genes are neither human Ensembl ids nor symbols: no GO graph. "
                "Pass gene_graph=GeneGraph.from_annotations(...) built from your annotations.",
                UserWarning,
                stacklevel=3,
            )
            return None
        return _default_gene_graph(vocabulary)

    def _init_gene_tables(self, gene2vec) -> None:
        table = np.load(gene2vec) if isinstance(gene2vec, str | os.PathLike) else gene2vec
        table = torch.as_tensor(np.asarray(table), dtype=torch.float32)
        config = self.module.config
        if table.shape != (config.n_genes, config.dim):
            raise ValueError(
                f"gene2vec must have shape (n_genes, dim) = ({config.n_genes}, {config.dim}), "
                f"got {tuple(table.shape)}."
            )
        embedding = self.module.network.gene_embedding
        with torch.no_grad():
            for weight in (embedding.identity.weight, embedding.go_table.weight):
                weight[: config.n_genes] = table
                weight[config.n_genes :] = 0.0

    # ------------------------------------------------------------------ official weights
    @classmethod
    def from_official(
        cls,
        adata: ad.AnnData,
        checkpoint: str | os.PathLike,
        hparams: str | os.PathLike,
        genes: str | os.PathLike,
        attention_mode: Literal["faithful", "per_cell"] = "faithful",
        expected_sha256: str | dict[str, str] | None = None,
        **kwargs,
    ) -> SCLONG:
        """Official scLong weights on the user's data.

        The data's genes are aligned to the official vocabulary (symbols or Ensembl ids;
        absent vocabulary genes enter as 0; coverage is reported); results are returned for the
        data's genes. Reads the registered gene ids of ``adata`` (``adata.var_names`` or
        ``adata.var[gene_id_key]``); writes nothing into ``adata``.

        Parameters
        ----------
        adata
            AnnData registered with :meth:`setup_anndata`.
        checkpoint, hparams, genes
            The official ``.pth``, hyper-parameter ``.pkl`` and gene list ``.txt``.
        attention_mode
            ``"faithful"`` (default) or ``"per_cell"``.
        expected_sha256
            sha256 of the checkpoint, or ``{"checkpoint": ..., "hparams": ..., "genes": ...}``:
            files whose checksum differs are refused. The files are always read without running
            code from them, cross-checked, and their weights checked to be finite
            (:func:`sclong_scverse.io.load_official`).
        **kwargs
            Passed to :class:`SCLONG` (e.g. ``mask_fraction``).

        Returns
        -------
        The model, its network in eval mode with the official weights (and their stored
        random features and GO graph).
        """
        from ..io import load_official

        release = load_official(
            checkpoint,
            hparams,
            genes,
            attention_mode=attention_mode,
            expected_sha256=expected_sha256,
        )
        vocabulary = GeneVocabulary(release.genes)
        model = cls(
            adata,
            config=release.network.config,
            vocabulary=vocabulary,
            network=release.network,
            **kwargs,
        )
        logger.info(model.alignment.summary())
        return model

    # ------------------------------------------------------------------ training
    def train(
        self,
        max_epochs: int = 10,
        batch_size: int = 8,
        lr: float = 1e-3,
        accelerator: str = "auto",
        devices: int | list[int] | str = "auto",
        strategy: str | None = None,
        precision: str | int | None = None,
        gradient_clip_val: float | None = 1.0,
        accumulate_grad_batches: int = 1,
        train_size: float | None = 0.9,
        validation_size: float | None = None,
        early_stopping: bool = False,
        redraw_interval: int | Literal["auto"] | None = "auto",
        plan_kwargs: dict | None = None,
        gradient_checkpointing: bool = False,
        **trainer_kwargs,
    ):
        """Pretrain or fine-tune by masked-expression modelling (scvi-tools + Lightning).

        Per cell, ``ceil(15%)`` of the non-zero values are chosen, each replaced by the mask
        token with probability 0.9 (``replace_fraction``), and the mean squared error on the
        chosen positions is minimised.

        Reads the registered values (``adata.layers[layer]`` or ``adata.X``; checked again as
        :meth:`setup_anndata` checks them, since they may have changed since); writes nothing
        into ``adata`` (the losses go to ``model.history``).

        Parameters
        ----------
        max_epochs
            Passes over the training cells.
        batch_size
            Cells per step (per device).
        lr
            Peak learning rate (linear warm-up, then cosine decay).
        accelerator, devices, strategy
            Lightning settings, e.g. ``accelerator="gpu", devices=8, strategy="ddp"``.
        precision
            Lightning precision, e.g. ``"bf16-mixed"`` on GPUs.
        gradient_clip_val
            Gradient-norm clipping (the original clips at 100).
        accumulate_grad_batches
            Steps of gradient accumulation (the original reaches 200 cells per update).
        train_size, validation_size
            Split of the cells; the validation loss is the masked MSE on held-out cells. When
            the split holds out no cell (fewer than 10 cells with the default 0.9), training
            uses all cells without validation and warns (with ``early_stopping``: an error).
        early_stopping
            Stop when the validation loss stops improving (monitor ``validation_loss``); not
            with a ``max_steps`` trainer argument.
        redraw_interval
            Redraw the FAVOR+ random features every this many steps. ``"auto"``: every 1,000
            steps when pretraining a new model, never for pretrained/official weights.
        plan_kwargs
            Passed to :class:`~sclong_scverse.module.ScLongTrainingPlan` (``optimizer``,
            ``weight_decay``, ``warmup_steps``, ``min_lr_ratio``).
        gradient_checkpointing
            Recompute each Performer layer in the backward pass instead of keeping its
            activations (``torch.utils.checkpoint``): the same gradients, about a third more
            compute, activation memory of one layer instead of all (for the 1b preset about
            1 GB instead of 16 GB per cell in bf16; ``benchmarks/bench_gpu.py --paper``).
        **trainer_kwargs
            Passed to the Lightning trainer (through :class:`scvi.train.Trainer`). The progress
            bar (``enable_progress_bar``, default on) counts epochs when an epoch takes fewer
            than 50 steps, else steps within each epoch (Lightning's bar, with time left);
            both show the training speed in cells/s. ``simple_progress_bar=True`` / ``False``
            chooses the epoch / step bar.
        """
        if redraw_interval == "auto":
            redraw_interval = None if self.is_pretrained else 1000
        for performer in self.module.network.performers:
            performer.gradient_checkpointing = bool(gradient_checkpointing)
        plan_kwargs = {"lr": lr, "redraw_interval": redraw_interval, **(plan_kwargs or {})}
        plan_kwargs.setdefault(
            "warmup_steps",
            min(100, max(1, int(0.1 * max_epochs * self.adata.n_obs / batch_size))),
        )
        if strategy is not None:
            trainer_kwargs["strategy"] = strategy
        if precision is not None:
            trainer_kwargs["precision"] = precision
        if early_stopping:
            trainer_kwargs.setdefault("early_stopping_monitor", "validation_loss")
        self._query(None)  # the registered values may have been changed since setup_anndata
        fraction = 0.9 if train_size is None else float(train_size)
        if not 0.0 < fraction <= 1.0:
            raise ValueError(f"train_size must be in (0, 1], got {train_size!r}.")
        if validation_size is not None and not 0.0 <= validation_size < 1.0 - fraction + 1e-9:
            raise ValueError(
                f"validation_size must be in [0, 1 - train_size], got {validation_size!r} "
                f"with train_size={fraction:g}."
            )
        has_validation = train_size is None or train_size < 1.0 or bool(validation_size)
        if early_stopping and not has_validation:
            raise ValueError("early_stopping needs validation cells: use train_size < 1.")
        if early_stopping and trainer_kwargs.get("max_steps", -1) not in (None, -1):
            raise ValueError(
                "early_stopping watches the validation loss computed at the end of each epoch, "
                "but max_steps can end training in the middle of an epoch, before it exists. "
                "Limit training with max_epochs instead, or train without early_stopping."
            )
        if has_validation:
            n_cells = self.adata.n_obs
            if validation_size:
                n_validation = int(np.floor(n_cells * validation_size))
            else:
                n_validation = n_cells - int(np.ceil(fraction * n_cells))
            if n_validation == 0:
                if early_stopping:
                    raise ScLongInputError(
                        f"early_stopping needs validation cells, but with {n_cells} cells and "
                        f"train_size={fraction:g} none is held out. Use more cells or a smaller "
                        "train_size, or train without early_stopping."
                    )
                warnings.warn(
                    f"With {n_cells} cells and train_size={fraction:g}, no cell is held out for "
                    f"validation: training on all {n_cells} cells without a validation loss. "
                    "Pass train_size=1.0 to say so (no warning), or a smaller train_size.",
                    UserWarning,
                    stacklevel=2,
                )
                train_size, validation_size, has_validation = 1.0, None, False
        if has_validation:
            trainer_kwargs.setdefault("check_val_every_n_epoch", 1)
        steps_per_epoch = self.adata.n_obs * (fraction if has_validation else 1.0) / batch_size
        step_bar = steps_per_epoch >= _STEP_BAR_MIN_STEPS
        if "simple_progress_bar" in trainer_kwargs:
            step_bar = not trainer_kwargs["simple_progress_bar"]
        if step_bar and trainer_kwargs.get("enable_progress_bar", True):
            from lightning.pytorch.callbacks import ProgressBar, TQDMProgressBar

            callbacks = list(trainer_kwargs.get("callbacks") or [])
            if not any(isinstance(callback, ProgressBar) for callback in callbacks):
                callbacks.append(TQDMProgressBar())  # per step, with cells/s and time left
            trainer_kwargs["callbacks"] = callbacks
            trainer_kwargs["simple_progress_bar"] = False
        self.module.train()  # queries leave it in eval mode; Lightning warns about eval modules
        result = super().train(
            max_epochs=max_epochs,
            batch_size=batch_size,
            accelerator=accelerator,
            devices=devices,
            train_size=train_size,
            validation_size=validation_size,
            early_stopping=early_stopping,
            plan_kwargs=plan_kwargs,
            gradient_clip_val=gradient_clip_val,
            accumulate_grad_batches=accumulate_grad_batches,
            **trainer_kwargs,
        )
        self.module.eval()
        return result

    @classmethod
    def from_corpus(
        cls,
        corpus,
        config: str | ScLongConfig | dict = "tiny",
        vocabulary: GeneVocabulary | Sequence[str] | None = None,
        **kwargs,
    ) -> SCLONG:
        """A new model to pretrain on a corpus of AnnData stores (:meth:`pretrain`).

        The model's genes are ``vocabulary`` (default: the union of the stores' genes, see
        :meth:`sclong_scverse.data.ScLongCorpus.default_vocabulary`); it is set up on a small
        template AnnData holding the corpus' first cells on those genes (``model.adata``; no
        cell is loaded beyond those).

        Parameters
        ----------
        corpus
            A :class:`~sclong_scverse.data.ScLongCorpus`, or the stores (paths, folders, globs).
        config
            Preset name, :class:`~sclong_scverse.nn.ScLongConfig` or its dict.
        vocabulary
            The model's genes, e.g. the official release's vocabulary.
        **kwargs
            Passed to :class:`SCLONG` (``gene_graph``, ``gene2vec``, ``mask_fraction`` ...).

        Returns
        -------
        The new, untrained model.
        """
        from ._pretrain import model_from_corpus

        return model_from_corpus(cls, corpus, config=config, vocabulary=vocabulary, **kwargs)

    def pretrain(
        self,
        corpus,
        max_epochs: int = 1,
        batch_size: int = 8,
        lr: float = 1e-3,
        *,
        max_steps: int = -1,
        accelerator: str = "auto",
        devices: int | list[int] | str = "auto",
        num_nodes: int = 1,
        strategy: str | object = "auto",
        precision: str | int | None = None,
        accumulate_grad_batches: int = 1,
        gradient_clip_val: float | None = 1.0,
        checkpoint_dir: str | os.PathLike | None = None,
        checkpoint_every_n_steps: int | None = None,
        resume: str | os.PathLike | None = None,
        num_workers: int = 0,
        redraw_interval: int | Literal["auto"] | None = "auto",
        plan_kwargs: dict | None = None,
        gradient_checkpointing: bool = False,
        min_coverage: float = 0.0,
        enable_progress_bar: bool = True,
        **trainer_kwargs,
    ) -> pd.DataFrame:
        """Pretrain by masked-expression modelling on a corpus streamed from disk.

        The corpus (:class:`~sclong_scverse.data.ScLongCorpus`: many ``.h5ad`` / zarr stores,
        any genes and id types) is aligned to this model's genes, normalised per batch when it
        holds counts and read a mini-batch at a time; Lightning spreads the steps over
        ``devices`` x ``num_nodes`` processes. Launch one process per device yourself
        (``torchrun``, SLURM's ``srun``: Lightning reads their environment) and call this in
        each; the docs' "Pretraining at scale" page has the recipe.

        The objective is :meth:`train`'s, with masks drawn per cell from the corpus seed, the
        epoch and the cell, and each step's loss normalised over the chosen positions of all
        processes: with the same global batch (``batch_size`` x processes) one process and
        many follow the same loss curve (:class:`~sclong_scverse.module.ScLongPretrainingPlan`).

        Reads the stores; writes ``model.history["pretrain_masked_mse_step"]`` (the masked MSE
        of every step, all processes together) and, with ``checkpoint_dir``, Lightning
        checkpoints there (``last.ckpt`` and, with ``checkpoint_every_n_steps``, one per that
        many steps) holding the model, optimiser, schedule, corpus position and random state.

        Parameters
        ----------
        corpus
            A :class:`~sclong_scverse.data.ScLongCorpus`, or paths / folders / glob patterns
            of stores (opened with the corpus defaults: ``X``, values detected, seed 0).
        max_epochs, max_steps
            Passes over the corpus; or optimiser steps (``-1``: no limit).
        batch_size
            Cells per step and process (the global batch is ``batch_size`` x processes x
            ``accumulate_grad_batches``).
        lr
            Peak learning rate (linear warm-up, then cosine decay over the run).
        accelerator, devices, num_nodes, strategy
            Lightning settings: e.g. ``accelerator="gpu", devices=8, num_nodes=4,
            strategy="ddp"``. ``strategy="fsdp"`` shards parameters, gradients and optimiser
            state over the processes, one Performer layer at a time (GPUs only).
        precision
            Lightning precision, e.g. ``"bf16-mixed"`` on GPUs.
        accumulate_grad_batches, gradient_clip_val
            Gradient accumulation and gradient-norm clipping.
        checkpoint_dir, checkpoint_every_n_steps
            Where and how often to write checkpoints (``None``: at the end only).
        resume
            ``"last"`` (the ``last.ckpt`` of ``checkpoint_dir``) or a checkpoint path: continue
            an interrupted run exactly (same corpus, seed, batch size and process count);
            ``"auto"``: ``"last"`` when ``checkpoint_dir`` has one, else start (for jobs that
            are requeued). Loaded with ``weights_only=True`` (no code is unpickled).
        num_workers
            Reader processes per training process.
        redraw_interval
            Redraw the FAVOR+ features every this many steps (same features on every process);
            ``"auto"``: 1,000 for a new model, never for pretrained weights.
        plan_kwargs
            Passed to :class:`~sclong_scverse.module.ScLongPretrainingPlan`.
        gradient_checkpointing
            Recompute each Performer layer in the backward pass (see :meth:`train`).
        min_coverage
            Refuse stores with fewer than this fraction of their genes on the model's genes.
        enable_progress_bar
            Show a progress bar per step with the global cells/s and the masked MSE.
        **trainer_kwargs
            Passed to :class:`lightning.pytorch.Trainer`.

        Returns
        -------
        The masked MSE of every step (``step``, ``masked_mse``, ``lr``) of this process.
        """
        from ._pretrain import pretrain_on_corpus

        return pretrain_on_corpus(
            self,
            corpus,
            max_epochs=max_epochs,
            max_steps=max_steps,
            batch_size=batch_size,
            lr=lr,
            accelerator=accelerator,
            devices=devices,
            num_nodes=num_nodes,
            strategy=strategy,
            precision=precision,
            accumulate_grad_batches=accumulate_grad_batches,
            gradient_clip_val=gradient_clip_val,
            checkpoint_dir=checkpoint_dir,
            checkpoint_every_n_steps=checkpoint_every_n_steps,
            resume=resume,
            num_workers=num_workers,
            redraw_interval=redraw_interval,
            plan_kwargs=plan_kwargs,
            gradient_checkpointing=gradient_checkpointing,
            min_coverage=min_coverage,
            enable_progress_bar=enable_progress_bar,
            **trainer_kwargs,
        )

    # ------------------------------------------------------------------ queries
    def _query(
        self, adata: ad.AnnData | MuData | None, indices: Sequence[int] | None = None
    ) -> ad.AnnData | MuData:
        """The data to read, validated as :meth:`setup_anndata` validates the registered data.

        ``adata`` ``None`` (or the registered object itself): the registered data, whose values
        are checked again (they may have been changed since registration; only the cells in
        ``indices``). Another AnnData: its values are checked against the model's recorded
        normalisation and a new AnnData holding them on the model's genes (read into memory
        when backed; genes aligned when they differ) is registered in its place, so nothing is
        written into ``adata`` and its ``obs`` columns do not matter (the model reads values
        only; batches unseen in training are fine). A MuData is checked and registered as is.
        """
        args = self._setup_args
        expected_max = (args.get("normalization") or {}).get("max_value", SCLONG_MAX_VALUE)
        check = bool(args.get("check_normalization", True))
        layer = self._layer
        if adata is None or adata is self.adata:
            rna = _rna(self.adata, self._modality)
            validate_adata_input(
                rna,
                layer,
                expected_max=expected_max,
                check_normalization=check,
                indices=indices if rna is self.adata else None,
            )
            return self.adata
        if isinstance(adata, MuData):
            if self._modality is None:
                raise ValueError(
                    "This model was set up on an AnnData; pass an AnnData, not a MuData."
                )
            rna = _rna(adata, self._modality)
            validate_adata_input(
                rna,
                layer,
                expected_max=expected_max,
                check_normalization=check,
                name=f"mdata.mod[{self._modality!r}]",
            )
            return self._validate_anndata(adata)
        if not isinstance(adata, ad.AnnData):
            raise TypeError(f"expected an AnnData, got {type(adata).__name__}.")
        if self._modality is not None:
            raise ValueError(
                f"This model was set up on a MuData; pass a MuData with the {self._modality!r} "
                "modality, not an AnnData."
            )
        check_not_view(adata)
        if adata.n_obs == 0:
            raise ScLongInputError("adata has no cells; nothing to read.")
        ids = _gene_ids(adata, self._gene_id_key)
        registered = _rna(self.adata, self._modality)
        model_ids = _gene_ids(registered, self._gene_id_key)
        if ids.equals(model_ids):
            validate_adata_input(
                adata, layer, expected_max=expected_max, check_normalization=check, indices=indices
            )
            values = to_memory(_values(adata, layer))
            if sparse.issparse(values) and values.format != "csr":
                values = values.tocsr()
            query = ad.AnnData(X=values, var=pd.DataFrame(index=registered.var_names.copy()))
            query.obs_names = adata.obs_names.copy()
            if layer is not None:
                query.layers[layer] = values
        else:
            query = _align_to_genes(
                adata,
                layer,
                ids,
                model_ids,
                registered.var_names,
                expected_max=expected_max,
                check_normalization=check,
            )
            query.obs = pd.DataFrame(index=adata.obs_names.copy())
        if self._gene_id_key is not None:
            query.var[self._gene_id_key] = model_ids.to_numpy()
        # the registered obs columns, filled with a category the model knows (it never reads them)
        for registry_key in (REGISTRY_KEYS.BATCH_KEY, REGISTRY_KEYS.LABELS_KEY):
            key = args.get("batch_key" if registry_key == REGISTRY_KEYS.BATCH_KEY else "labels_key")
            if key is not None:
                state = self.adata_manager.get_state_registry(registry_key)
                query.obs[key] = pd.Categorical.from_codes(
                    np.zeros(query.n_obs, dtype=np.int64), categories=state.categorical_mapping
                )
        return self._validate_anndata(query)

    def _loader(self, adata, indices, batch_size, progress_bar=False, desc="cells"):
        """Yield the mini-batches of :meth:`_query`'s data, then drop a query's registration.

        ``progress_bar``: ``True``/``False``, or ``None`` to show one (cells done, cells/s, time
        left) when the call reads at least ``_PROGRESS_MIN_VALUES`` cell x gene values.
        """
        if indices is not None:
            indices = np.asarray(indices)
            if indices.dtype == bool:
                indices = np.flatnonzero(indices)
        data = self._query(adata, indices)
        n_cells = len(indices) if indices is not None else data.n_obs
        if progress_bar is None:
            progress_bar = n_cells * self.module.config.n_genes >= _PROGRESS_MIN_VALUES
        bar = tqdm(total=n_cells, desc=desc, unit="cell", disable=not progress_bar)
        try:
            loader = self._make_data_loader(
                adata=data, indices=indices, batch_size=batch_size or settings.batch_size
            )
            for tensors in loader:
                yield tensors
                bar.update(int(tensors[REGISTRY_KEYS.X_KEY].shape[0]))
        finally:
            bar.close()
            if data is not self.adata and not isinstance(data, MuData):
                # the model keeps no reference to the query's values (scvi-tools would)
                uuid = data.uns.get("_scvi_uuid")
                self._per_instance_manager_store.get(self.id, {}).pop(uuid, None)

    def _batches(
        self,
        adata,
        indices,
        batch_size,
        mask_fraction=None,
        replace_fraction=1.0,
        seed=None,
        progress_bar=None,
        desc="cells",
        precision=None,
    ):
        """Yield network outputs batch by batch (streaming; nothing cells x genes x d kept).

        ``mask_fraction`` ``None``: no masking; otherwise that fraction of each cell's non-zero
        values is chosen and ``replace_fraction`` of those masked, with masks from ``seed``.
        ``progress_bar``: see :meth:`_loader`. ``precision``: see :func:`inference_autocast`.
        """
        self.module.eval()
        generator = None
        if seed is not None:
            generator = torch.Generator(device=self.device).manual_seed(seed)
        mask = bool(mask_fraction)
        autocast = inference_autocast(precision, torch.device(self.device))
        with torch.inference_mode(), autocast:
            for tensors in self._loader(adata, indices, batch_size or 16, progress_bar, desc):
                inputs = self.module._get_inference_input(tensors)
                yield self.module.inference(
                    **inputs,
                    mask=mask,
                    generator=generator,
                    mask_fraction=mask_fraction,
                    replace_fraction=replace_fraction,
                )

    def get_latent_representation(
        self,
        adata: ad.AnnData | None = None,
        indices: Sequence[int] | None = None,
        batch_size: int | None = None,
        pooling: Pooling = "max",
        progress_bar: bool | None = None,
        precision: QueryPrecision | None = None,
    ) -> np.ndarray:
        """Cell embeddings: the merged decodings pooled over the vocabulary's genes.

        Reads the registered values (``adata.layers[layer]`` or ``adata.X``, as given to
        :meth:`setup_anndata`); writes nothing. :func:`sclong_scverse.tl.embed` stores the result
        in ``adata.obsm["X_sclong"]``.

        Parameters
        ----------
        adata
            AnnData with the model's genes (other orders and missing genes are aligned, with a
            report); default: the registered data.
        indices
            Cells to embed (default: all).
        batch_size
            Cells per forward pass.
        pooling
            ``"max"`` (default), ``"mean"`` or ``"sum"`` over all gene positions (pad token
            excluded). Max pooling is the default because it scored best in the integration
            benchmark (``docs/benchmarks.md``) and in a cell-line linear probe: mean pooling
            averages gene vectors that share a large gene-identity part, which dilutes what
            differs between cells. Sum is mean times the number of genes (same up to scale).
            Without the low-expression branch only each cell's decoded (top) genes are
            pooled.
        progress_bar
            Show a progress bar (cells done, cells/s, time left); ``None`` (default): when the
            call reads at least 10 million cell x gene values (e.g. 400 cells of the whole
            27,874-gene vocabulary).
        precision
            ``"32"`` (default: float32), ``"bf16"`` (bfloat16 autocast: on GPUs about twice
            as fast and half the activation memory, embeddings within ~1e-2 of float32) or
            ``"16"`` (float16 autocast, GPUs only).

        Returns
        -------
        ``(n_cells, dim)`` float32 array. Computed batch by batch: memory does not grow with the
        number of cells beyond the result.
        """
        if pooling not in ("mean", "max", "sum"):
            raise ValueError(f"pooling must be 'mean', 'max' or 'sum', not {pooling!r}.")
        n_genes = self.module.config.n_genes
        pooled = []
        batches = self._batches(
            adata, indices, batch_size, progress_bar=progress_bar, desc="embed", precision=precision
        )
        for outputs in batches:
            pooled.append(self._pooled(outputs, pooling, n_genes))
        return torch.cat(pooled).cpu().numpy()

    def _pooled(self, outputs: dict, pooling: str, n_genes: int) -> torch.Tensor:
        """A batch's cell embeddings: decodings pooled over the vocabulary's genes."""
        decodings = outputs["decodings"][:, :n_genes].float()
        decoded = None
        if not self.module.config.low_expression_branch:
            decoded = outputs["predicted"][:, :n_genes]
        return pool_decoded(decodings, decoded, pooling)

    def _predicted_values(self, outputs: dict) -> torch.Tensor:
        """A batch's predictions on the registered genes (NaN where nothing predicts)."""
        positions = torch.as_tensor(self.alignment.var_positions)
        kept = positions >= 0
        values = torch.full((outputs["prediction"].shape[0], len(positions)), torch.nan)
        prediction = outputs["prediction"].float()
        if not self.module.config.low_expression_branch:
            prediction = prediction.masked_fill(~outputs["predicted"], torch.nan)
        values[:, kept] = prediction[:, positions[kept]].cpu()
        return values

    def _embed_and_predict(
        self,
        adata: ad.AnnData | None = None,
        batch_size: int | None = None,
        pooling: Pooling = "max",
        progress_bar: bool | None = False,
    ) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`get_latent_representation` and :meth:`predict` from one forward pass."""
        n_genes = self.module.config.n_genes
        pooled, predictions = [], []
        for outputs in self._batches(adata, None, batch_size, progress_bar=progress_bar):
            pooled.append(self._pooled(outputs, pooling, n_genes))
            predictions.append(self._predicted_values(outputs))
        return torch.cat(pooled).cpu().numpy(), torch.cat(predictions).numpy()

    def get_gene_embeddings(
        self,
        kind: Literal["static", "contextual"] = "static",
        adata: ad.AnnData | None = None,
        indices: Sequence[int] | None = None,
        batch_size: int | None = None,
        progress_bar: bool | None = None,
        precision: QueryPrecision | None = None,
    ) -> pd.DataFrame:
        """Gene embeddings for the registered data's genes.

        Reads the registered values of the cells (``"contextual"`` only) and the registered
        genes; writes nothing. :func:`sclong_scverse.tl.gene_embeddings` stores the result in
        ``adata.varm["sclong"]``.

        Parameters
        ----------
        kind
            ``"static"``: identity table + GO-GCN embedding (no cells needed);
            ``"contextual"``: the per-gene merged decodings averaged over the given cells,
            accumulated batch by batch (without the low-expression branch: over the cells
            where the gene is among the decoded top genes; NaN for a gene that never is).
        adata, indices, batch_size
            Cells for ``"contextual"`` (default: all registered cells).
        progress_bar
            Show a progress bar (cells done, cells/s, time left); ``None`` (default): when the
            call reads at least 10 million cell x gene values (e.g. 400 cells of the whole
            27,874-gene vocabulary).
        precision
            ``"32"`` (default: float32), ``"bf16"`` (bfloat16 autocast: on GPUs about twice
            as fast and half the activation memory, results within ~1e-2 of float32) or
            ``"16"`` (float16 autocast, GPUs only).

        Returns
        -------
        DataFrame ``(n_vars, dim)`` indexed by the registered genes; genes outside the vocabulary
        are NaN rows.
        """
        if kind == "static":
            self.module.eval()
            with torch.inference_mode():
                table = self.module.network.gene_embedding().float().cpu()
        elif kind == "contextual":
            total, n_cells = None, 0
            batches = self._batches(
                adata,
                indices,
                batch_size,
                progress_bar=progress_bar,
                desc="gene embeddings",
                precision=precision,
            )
            top_only = not self.module.config.low_expression_branch
            for outputs in batches:
                decodings = outputs["decodings"].float()
                if top_only:  # per gene: the cells where it was decoded
                    decoded = outputs["predicted"]
                    batch_sum = (decodings * decoded.unsqueeze(-1)).sum(dim=0)
                    batch_count = decoded.sum(dim=0)
                    n_cells = batch_count if isinstance(n_cells, int) else n_cells + batch_count
                else:
                    batch_sum = decodings.sum(dim=0)
                    n_cells += decodings.shape[0]
                total = batch_sum if total is None else total + batch_sum
            if top_only and total is not None:
                counts = n_cells.unsqueeze(-1).float()
                table = torch.where(counts > 0, total / counts.clamp(min=1), torch.nan).cpu()
            else:
                table = (total / max(n_cells, 1)).cpu()
        else:
            raise ValueError(f"kind must be 'static' or 'contextual', not {kind!r}.")
        return self._per_var(table.numpy())

    def _per_var(self, token_table: np.ndarray) -> pd.DataFrame:
        positions = self.alignment.var_positions
        out = np.full((len(positions), token_table.shape[1]), np.nan, dtype=np.float32)
        kept = positions >= 0
        out[kept] = token_table[positions[kept]]
        names = _rna(self.adata, self._modality).var_names
        return pd.DataFrame(out, index=names.copy())

    def predict(
        self,
        adata: ad.AnnData | None = None,
        indices: Sequence[int] | None = None,
        mask_fraction: float | None = None,
        batch_size: int | None = None,
        seed: int = 0,
        return_mask: bool = False,
        progress_bar: bool | None = None,
        precision: QueryPrecision | None = None,
    ) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """The model's reconstruction of the data's values (imputation).

        Reads the registered values (``adata.layers[layer]`` or ``adata.X``); writes nothing.

        Parameters
        ----------
        adata, indices, batch_size
            Cells to predict (default: all registered cells).
        mask_fraction
            ``None`` or ``0``: no masking, the head's output for every gene. Otherwise this
            fraction of each cell's non-zero values is masked (all of them replaced by the mask
            token) and predicted from the rest.
        seed
            Seed of the masks.
        return_mask
            Also return the ``(n_cells, n_vars)`` boolean array of masked values.
        progress_bar
            Show a progress bar (cells done, cells/s, time left); ``None`` (default): when the
            call reads at least 10 million cell x gene values (e.g. 400 cells of the whole
            27,874-gene vocabulary).
        precision
            ``"32"`` (default: float32), ``"bf16"`` (bfloat16 autocast: on GPUs about twice
            as fast and half the activation memory, predictions within ~1e-2 of float32) or
            ``"16"`` (float16 autocast, GPUs only).

        Returns
        -------
        ``(n_cells, n_vars)`` float32 predictions for the registered genes (NaN for genes
        outside the vocabulary and, without the low-expression branch, for genes outside the
        cell's top set, which the network does not predict), and the mask when
        ``return_mask``. Without the low-expression branch the masked genes enter the
        network's top set, so they are predicted (:class:`~sclong_scverse.module.ScLongModule`).
        """
        positions = torch.as_tensor(self.alignment.var_positions)
        kept = positions >= 0
        predictions, masks = [], []
        batches = self._batches(
            adata,
            indices,
            batch_size,
            mask_fraction=mask_fraction,
            seed=seed,
            progress_bar=progress_bar,
            desc="predict",
            precision=precision,
        )
        for outputs in batches:
            values = self._predicted_values(outputs)
            predictions.append(values)
            if return_mask:
                chosen = torch.zeros_like(values, dtype=torch.bool)
                if mask_fraction:
                    chosen[:, kept] = outputs["replaced"][:, positions[kept]].cpu()
                masks.append(chosen)
        result = torch.cat(predictions).numpy()
        return (result, torch.cat(masks).numpy()) if return_mask else result

    def evaluate_masked_mse(
        self,
        adata: ad.AnnData | None = None,
        indices: Sequence[int] | None = None,
        reference_indices: Sequence[int] | None = None,
        batch_size: int | None = None,
        seed: int = 0,
        progress_bar: bool | None = None,
        precision: QueryPrecision | None = None,
    ) -> dict[str, float]:
        """Masked-value error on (held-out) cells, against a per-gene mean baseline.

        Reads the registered values of the evaluated and the reference cells; writes nothing.

        Parameters
        ----------
        adata, indices, batch_size
            Cells to evaluate (default: the validation cells after training, else all).
        reference_indices
            Cells of the registered data the baseline's per-gene means come from (default: the
            training cells after training, else all registered cells).
        seed
            Seed of the masks (same masks for model and baseline).
        progress_bar
            Show a progress bar (cells done, cells/s, time left); ``None`` (default): when the
            call reads at least 10 million cell x gene values (e.g. 400 cells of the whole
            27,874-gene vocabulary).
        precision
            Of the model's forward passes: ``"32"`` (default), ``"bf16"`` or ``"16"`` (GPUs
            only), see :meth:`get_latent_representation`.

        Returns
        -------
        A dictionary: ``model_mse`` (masked positions, the pretraining objective with all
        chosen values masked), ``baseline_mse`` (each masked value predicted by its gene's mean
        non-zero value over the reference cells), ``n_masked``. The same ``seed`` masks the
        same values whatever the network; without the low-expression branch the masked genes
        enter its top set (:class:`~sclong_scverse.module.ScLongModule`), and only masked
        values it predicts are counted (all, unless a cell has more than ``top_seq_len``).
        """
        if (
            adata is None
            and indices is None
            and getattr(self, "validation_indices", None) is not None
        ):
            indices = self.validation_indices
        if reference_indices is None:
            reference_indices = getattr(self, "train_indices", None)
        sums = torch.zeros(self.module.config.n_tokens)
        counts = torch.zeros(self.module.config.n_tokens)
        with torch.inference_mode():
            for tensors in self._loader(None, reference_indices, 128):
                tokens = self.module.to_tokens(tensors[REGISTRY_KEYS.X_KEY].float())
                sums += tokens.sum(dim=0).cpu()
                counts += (tokens > 0).sum(dim=0).cpu()
        gene_means = sums / counts.clamp(min=1)
        model_error = baseline_error = 0.0
        n_masked = 0
        batches = self._batches(
            adata,
            indices,
            batch_size,
            mask_fraction=self.module.mask_fraction,
            seed=seed,
            progress_bar=progress_bar,
            desc="masked MSE",
            precision=precision,
        )
        for outputs in batches:
            replaced = outputs["replaced"] & outputs["predicted"]
            truth = outputs["tokens"][replaced]
            model_error += float(((outputs["prediction"][replaced].float() - truth) ** 2).sum())
            baseline = gene_means.to(truth.device).expand_as(outputs["tokens"])[replaced]
            baseline_error += float(((baseline - truth) ** 2).sum())
            n_masked += int(replaced.sum())
        return {
            "model_mse": model_error / max(n_masked, 1),
            "baseline_mse": baseline_error / max(n_masked, 1),
            "n_masked": n_masked,
        }

    # ------------------------------------------------------------------ save / load
    def save(
        self,
        dir_path: str | os.PathLike,
        prefix: str | None = None,
        overwrite: bool = False,
        save_anndata: bool = False,
        **anndata_write_kwargs,
    ) -> None:
        """Save the model as plain data with a checksum manifest.

        Writes, in ``dir_path``: ``model.pt`` (weights, gene names, setup registry, training
        history; plain tensors and arrays that load with ``torch.load(weights_only=True)``),
        ``adata.h5ad`` (or ``mdata.h5mu``) when ``save_anndata``, and ``manifest.json`` (sha256
        of each file, package/torch/scvi-tools versions, the network configuration). Each file
        is written under a temporary name and renamed when complete. Reads the registered
        AnnData only when ``save_anndata``.

        Parameters
        ----------
        dir_path
            Folder to write (created).
        prefix
            Prefix of the file names (several models in one folder).
        overwrite
            Replace the files of a model already saved there.
        save_anndata
            Also write the registered AnnData (or MuData).
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
            suffix = "mdata.h5mu" if isinstance(self.adata, MuData) else "adata.h5ad"
            target = folder / f"{stem}{suffix}"
            temporary = folder / f".{target.name}.partial"
            try:
                self.adata.write(temporary, **anndata_write_kwargs)
                os.replace(temporary, target)
            finally:
                temporary.unlink(missing_ok=True)
            files.append(target.name)
        attributes = {
            name: value for name, value in self._get_user_attributes() if name.endswith("_")
        }
        content = {
            "model_state_dict": self.module.state_dict(),
            "var_names": self.get_var_names(),
            "attr_dict": attributes,
        }
        if self._gene_id_key is not None:  # to register aligned queries on load
            rna = _rna(self.adata, self._modality)
            content["gene_ids"] = np.asarray(_gene_ids(rna, self._gene_id_key), dtype=object)
        save_model_file(content, folder / f"{stem}{MODEL_FILE}")
        files.append(f"{stem}{MODEL_FILE}")
        write_manifest(
            folder,
            files,
            extra={"model": type(self).__name__, "config": self.module.config.to_dict()},
            prefix=prefix,
        )

    @classmethod
    def load(
        cls,
        dir_path: str | os.PathLike,
        adata: ad.AnnData | MuData | None = None,
        accelerator: str = "auto",
        device: int | str = "auto",
        prefix: str | None = None,
        verify: bool = True,
    ) -> SCLONG:
        """Load a saved model safely, aligning ``adata`` to the saved genes when they differ.

        ``model.pt`` is read with ``torch.load(weights_only=True)`` (no code in the file can
        run), checked against ``manifest.json`` (sha256) and for finite weights. Reads
        ``adata.var_names`` and the values of the layer the model was set up with. When the
        genes match, ``adata`` itself is registered (the scvi-tools fields that
        :meth:`setup_anndata` writes); otherwise a new aligned AnnData is registered and
        ``adata`` is left unchanged.

        Parameters
        ----------
        dir_path
            Folder written by :meth:`save`.
        adata
            Data to attach (default: the AnnData saved with the model). Its genes may be in
            another order or partly missing: the values are reordered to the saved genes
            (missing genes enter as 0) with a report.
        accelerator, device
            Where the model runs (scvi-tools / Lightning settings).
        prefix
            File name prefix given to :meth:`save`.
        verify
            Check the files against ``manifest.json``. ``False`` loads a folder without a
            manifest (saved by an older version) or whose files changed; the weights are still
            read with ``weights_only=True`` and checked to be finite.

        Returns
        -------
        The model, in eval mode; fine-tuning keeps its random features (``is_pretrained``).

        Raises
        ------
        ModelIntegrityError
            A file differs from its checksum, the manifest is missing (with ``verify``), the
            weights are NaN or infinite, or they do not fit the saved configuration.
        UnsafeFileError
            ``model.pt`` refers to code or object types outside the allow-list.
        """
        from scvi.model._utils import parse_device_args
        from scvi.model.base._save_load import _initialize_model, _validate_var_names

        from ._saving import ModelIntegrityError, read_saved_model, verify_manifest

        _, _, torch_device = parse_device_args(
            accelerator=accelerator,
            devices=device,
            return_device="torch",
            validate_single_device=True,
        )
        folder = Path(dir_path)
        saved = read_saved_model(folder, prefix, verify=verify)
        attr_dict, state = saved["attr_dict"], saved["model_state_dict"]
        var_names = saved.get("var_names")
        state.pop("pyro_param_store", None)
        registry = attr_dict.pop("registry_")
        saved_class = registry.get("model_name", cls.__name__)
        if saved_class != cls.__name__:
            raise ValueError(f"{folder} holds a {saved_class} model, not a {cls.__name__}.")
        setup_method = registry.get("setup_method_name", "setup_anndata")
        if adata is None:
            suffix = "mdata.h5mu" if setup_method == "setup_mudata" else "adata.h5ad"
            path = folder / f"{prefix or ''}{suffix}"
            if not path.exists():
                raise ValueError(
                    f"{folder} was saved without its AnnData; pass the data to attach: "
                    f"{cls.__name__}.load({str(folder)!r}, adata=adata)."
                )
            if verify:
                verify_manifest(folder, [path.name], prefix=prefix)
            if setup_method == "setup_mudata":
                import mudata

                adata = mudata.read_h5mu(path)
            else:
                adata = ad.read_h5ad(path)
        elif not isinstance(adata, MuData):
            layer = registry["setup_args"].get("layer")
            model_ids = pd.Index(np.asarray(var_names).astype(str))
            ids = pd.Index(adata.var_names.astype(str))
            if not ids.equals(model_ids):
                setup_args = registry["setup_args"]
                adata = _align_to_genes(
                    adata,
                    layer,
                    ids,
                    model_ids,
                    model_ids,
                    # checked as the model's setup_anndata checked its data, on adata's genes
                    expected_max=(setup_args.get("normalization") or {}).get(
                        "max_value", SCLONG_MAX_VALUE
                    ),
                    check_normalization=bool(setup_args.get("check_normalization", True)),
                )
                gene_id_key = registry["setup_args"].get("gene_id_key")
                if gene_id_key is not None and saved.get("gene_ids") is not None:
                    adata.var[gene_id_key] = np.asarray(saved["gene_ids"]).astype(str)
        _validate_var_names(adata, var_names)
        getattr(cls, setup_method)(adata, source_registry=registry, **registry["setup_args"])
        model = _initialize_model(cls, adata, registry, attr_dict, None)
        try:
            model.module.load_state_dict(state)
        except RuntimeError as error:
            raise ModelIntegrityError(
                f"The weights in {folder} do not fit the configuration saved with them "
                f"({str(error).splitlines()[0]} ...); the file is corrupted or was edited."
            ) from None
        model.to_device(torch_device)
        model.module.eval()
        model._validate_anndata(adata)
        model.is_pretrained = True  # fine-tuning keeps the loaded random features
        return model

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | os.PathLike,
        adata: ad.AnnData | MuData | None = None,
        *,
        revision: str | None = None,
        cache_dir: str | os.PathLike | None = None,
        manifest_sha256: str | None = None,
        local_files_only: bool = False,
        **load_kwargs,
    ) -> SCLONG:
        """Load a saved scLong model by registered name, hub repository id or folder.

        Resolves ``name_or_path`` with :func:`~sclong_scverse.model.resolve_pretrained` (a
        folder; a name from :func:`~sclong_scverse.model.pretrained_models`, pinned to a commit
        and a manifest checksum; or a hub repository ``"org/name"``, read from the hub cache so it
        works offline, downloaded with ``huggingface_hub`` when installed), then loads it with
        :meth:`load`, which verifies every file against ``manifest.json``.

        Reads and writes ``adata`` as :meth:`load` does.

        Parameters
        ----------
        name_or_path
            Folder, registered name or hub repository id.
        adata
            The data to set the model up on (default: the AnnData saved with the model).
        revision
            Commit or branch of a repository id (default ``"main"``).
        cache_dir
            Hub cache (default ``$HF_HUB_CACHE`` or ``~/.cache/huggingface/hub``).
        manifest_sha256
            Expected sha256 of ``manifest.json`` (registered names carry theirs).
        local_files_only
            Never download.
        **load_kwargs
            Passed to :meth:`load` (``accelerator``, ``device``, ``verify``, ...).

        Returns
        -------
        The loaded model.
        """
        from ._pretrained import resolve_pretrained

        folder = resolve_pretrained(
            name_or_path,
            revision=revision,
            cache_dir=cache_dir,
            manifest_sha256=manifest_sha256,
            local_files_only=local_files_only,
        )
        return cls.load(folder, adata=adata, **load_kwargs)

    def save_pretrained(
        self,
        dir_path: str | os.PathLike,
        *,
        name: str,
        training_data: str,
        metrics: dict | None = None,
        overwrite: bool = False,
        save_anndata: bool = False,
    ) -> str:
        """Save the model as a hub release: :meth:`save`'s files plus a model card.

        Writes ``model.pt``, ``manifest.json`` (and ``adata.h5ad`` with ``save_anndata``) as
        :meth:`save` does, and ``README.md``, a model card naming the network, gene vocabulary,
        training data and ``metrics``. Upload the folder with
        ``huggingface_hub.upload_folder(folder_path=dir_path, repo_id="org/name")``; users then
        load it with :meth:`from_pretrained`.

        Parameters
        ----------
        dir_path
            Folder to write.
        name
            Model name for the card.
        training_data
            What the model was trained on.
        metrics
            Measured figures for the card.
        overwrite, save_anndata
            As in :meth:`save`.

        Returns
        -------
        The sha256 of ``manifest.json``: pin it in a
        :class:`~sclong_scverse.model.PretrainedRelease` so the release cannot change unnoticed.
        """
        from ._pretrained import manifest_checksum, model_card

        self.save(dir_path, overwrite=overwrite, save_anndata=save_anndata)
        card = model_card(self, name=name, training_data=training_data, metrics=metrics)
        (Path(dir_path) / "README.md").write_text(card)
        return manifest_checksum(dir_path)


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
