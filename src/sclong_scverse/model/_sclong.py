from __future__ import annotations

import copy
import os
import warnings
from collections import OrderedDict
from collections.abc import Sequence
from typing import Literal

import anndata as ad
import numpy as np
import torch
from mudata import MuData
from scvi import REGISTRY_KEYS
from scvi.data import fields
from scvi.model.base import BaseModelClass, UnsupervisedTrainingMixin

from .._settings import quiet_libraries
from ..errors import ScLongKeyError
from ..genes import GeneVocabulary
from ..go import GeneGraph, default_human_annotations
from ..module import ScLongModule, ScLongTrainingPlan
from ..nn import ScLongConfig, ScLongNetwork
from ..validation import (
    ScLongInputError,
    check_obs_key,
    check_unique_var_names,
    model_normalization,
    validate_adata_input,
)
from ._anndata import (
    RegisteredCellsMixin,
    _gene_ids,
    _rna,
    _values,
    register_cell_values,
    register_fields,
)
from ._embed_corpus import EmbedCorpusMixin
from ._hub import SaveLoadMixin
from ._official import OfficialMixin
from ._pretrain import PretrainMixin
from ._queries import QueryMixin

#: epochs of at least this many steps get a progress bar per step (else per epoch)
_STEP_BAR_MIN_STEPS = 50

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


class SCLONG(
    RegisteredCellsMixin,
    QueryMixin,
    EmbedCorpusMixin,
    OfficialMixin,
    PretrainMixin,
    SaveLoadMixin,
    UnsupervisedTrainingMixin,
    BaseModelClass,
):
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
            raise ScLongInputError(
                f"config.n_genes ({config.n_genes}) differs from the vocabulary size "
                f"({len(vocabulary)})."
            )
        if low_expression_branch is not None:
            if network is not None and network.config.low_expression_branch != bool(
                low_expression_branch
            ):
                raise ScLongInputError(
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
        arguments = locals().copy()
        check_obs_key(adata, batch_key, "batch_key")
        check_obs_key(adata, labels_key, "labels_key")
        register_cell_values(cls, adata, arguments, **kwargs)

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
            raise ScLongKeyError(f"Modality {rna_name!r} not in the MuData ({list(mdata.mod)}).")
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
        register_fields(cls, mdata, setup_method_args, mudata_fields, **kwargs)

    @property
    def gene_graph_summary(self) -> str:
        """The GO graph the network uses (it travels with saved and official models)."""
        embedding = self.module.network.gene_embedding
        n_edges = embedding.edge_index.shape[1]
        n_connected = int(torch.unique(embedding.edge_index[1]).numel()) if n_edges else 0
        return f"{n_edges:,} GO edges into {n_connected:,} of {embedding.n_tokens - 1:,} genes"

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
            raise ScLongInputError(
                f"gene2vec must have shape (n_genes, dim) = ({config.n_genes}, {config.dim}), "
                f"got {tuple(table.shape)}."
            )
        embedding = self.module.network.gene_embedding
        with torch.no_grad():
            for weight in (embedding.identity.weight, embedding.go_table.weight):
                weight[: config.n_genes] = table
                weight[config.n_genes :] = 0.0

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
            raise ScLongInputError(f"train_size must be in (0, 1], got {train_size!r}.")
        if validation_size is not None and not 0.0 <= validation_size < 1.0 - fraction + 1e-9:
            raise ScLongInputError(
                f"validation_size must be in [0, 1 - train_size], got {validation_size!r} "
                f"with train_size={fraction:g}."
            )
        has_validation = train_size is None or train_size < 1.0 or bool(validation_size)
        if early_stopping and not has_validation:
            raise ScLongInputError("early_stopping needs validation cells: use train_size < 1.")
        if early_stopping and trainer_kwargs.get("max_steps", -1) not in (None, -1):
            raise ScLongInputError(
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
            from lightning.pytorch.callbacks import ProgressBar

            from ..module._progress import StepProgressBar

            callbacks = list(trainer_kwargs.get("callbacks") or [])
            if not any(isinstance(callback, ProgressBar) for callback in callbacks):
                callbacks.append(StepProgressBar())  # per step, with cells/s and time left
            trainer_kwargs["callbacks"] = callbacks
            trainer_kwargs["simple_progress_bar"] = False
        self.module.train()  # queries leave it in eval mode; Lightning warns about eval modules
        with quiet_libraries():  # scl.settings.library_info shows their info lines
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
