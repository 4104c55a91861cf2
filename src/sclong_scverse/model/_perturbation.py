"""scvi-tools model class of the GEARS-style perturbation head on scLong."""

from __future__ import annotations

import logging
from collections.abc import Collection, Sequence
from typing import TYPE_CHECKING, Any

import anndata as ad
import numpy as np
import pandas as pd
import torch
from scipy import sparse
from scvi import REGISTRY_KEYS
from scvi.data import fields

from ..errors import ScLongKeyError
from ..go import GeneGraph, default_human_annotations
from ..module import PerturbationModule, copy_network
from ..nn import ScLongConfig, ScLongNetwork
from ..pp._perturbation import (
    CONTROL,
    condition_genes,
    condition_label,
    parse_condition,
    perturbation_labels,
)
from ..validation import ScLongInputError, to_memory, validate_adata_input
from ._anndata import register_fields
from ._head_base import SCLONGHead, dense, fit_ridge

if TYPE_CHECKING:
    from ._sclong import SCLONG

logger = logging.getLogger(__name__)

#: ``adata.obs`` columns of :meth:`SCLONGPerturbation.predict`'s output (pertpy conventions).
PERTPY_CONTROL = "control"
#: The names of ``adata.obs[split_key]`` (:func:`~sclong_scverse.pp.perturbation_split`) -> the
#: head's split names.
_SPLIT_NAMES = {"train": "train", "val": "validation", "test": "test"}
#: Cells of a condition read for its GEARS loss mask (the genes not zero in its cells).
_MASK_CELLS = 512


def _dense_rows(values, rows: np.ndarray) -> np.ndarray:
    return dense(values[rows]).astype(np.float32)


class SCLONGPerturbation(SCLONGHead):
    """GEARS-style genetic perturbation model on scLong gene features (as scLong used GEARS).

    Each measured gene of a control cell is described by scLong's per-gene decoding of that cell
    (through a trainable projection; the scLong backbone frozen by default) and by its
    ``[control value, perturbation flag]``; the perturbed genes' embeddings are propagated over
    the GO graph (built with :class:`~sclong_scverse.go.GeneGraph` from the embedded human
    annotations), summed and added to every gene; a per-gene decoder predicts the change, added
    to the control values. Trained with GEARS's autofocus + direction loss on (perturbed cell,
    random control cell) pairs, through scvi-tools' ``TrainRunner`` (Lightning: ``accelerator``,
    ``devices``, ``precision``, early stopping on the validation loss, the best epoch's weights
    restored, ``model.history``). ``sclong=None`` gives the scLong-free ablation: the same head
    with learned gene embeddings.

    Reads the values registered by :meth:`setup_anndata` (``adata.layers[layer]`` or
    ``adata.X``), ``adata.obs[condition_key]`` and, with a backbone, the layer the scLong model
    was set up with (``adata.layers["sclong"]`` usually) of the control cells.

    Parameters
    ----------
    adata
        AnnData registered with :meth:`setup_anndata`.
    sclong
        A trained or loaded :class:`~sclong_scverse.model.SCLONG` whose vocabulary holds every
        measured gene (``None``: the scLong-free ablation). Its network is copied.
    hidden_dim
        Width of the head (GEARS: 64).
    freeze_backbone
        Keep scLong's weights fixed (default; the decodings of the control cells are then
        computed once). ``False`` fine-tunes the backbone with the head.
    n_go_layers
        Graph convolutions over the GO graph in the perturbation branch (GEARS: 1).
    gene_graph
        GO graph over the perturbable genes (measured genes and every gene named in the
        conditions); default: built from :func:`~sclong_scverse.go.default_human_annotations`
        (symbols; a previous symbol or alias takes its official symbol's terms) with scLong's
        rule (Jaccard > 0.1, 20 neighbours).
    n_control_cells
        Control cells paired with perturbed cells in training and averaged over in
        :meth:`predict` (a seeded draw among the control cells).
    seed
        Seed of the control-cell draw and of the initial weights.
    direction_lambda, uncertainty_free_gamma
        Loss settings (GEARS: 0.1, 2).
    residual
        Wide & deep (default): the ridge probe on the head's own features (the perturbed
        genes' scLong features, pooled over the control pool as :meth:`gene_features` gives
        them, summed for a double perturbation, to each condition's mean change) is fitted on
        the training conditions when :meth:`train` starts (the penalty chosen on the
        validation conditions), kept fixed and added to every prediction; the GEARS network
        learns the residual (its decoder's last weights start at zero, so training starts
        from the probe) and the epoch is chosen on validation. The scLong-free ablation's wide
        part is the mean change of the training conditions. ``False``: the network alone, as
        GEARS; on the test subset's held-out targets it scored below the probe (Pearson delta
        0.46 vs 0.55, see ``docs/perturbation.md``).

    Examples
    --------
    >>> scl.pp.perturbation_conditions(adata, "perturbation", layer="log1p")
    >>> scl.pp.perturbation_split(adata, "simulation")
    >>> scl.SCLONGPerturbation.setup_anndata(adata, layer="log1p")
    >>> model = scl.SCLONGPerturbation(adata, sclong=pretrained)
    >>> model.train(max_epochs=20)
    >>> predicted = model.predict(["STAT1+ctrl"])  # one row per condition, layers["delta"]
    """

    _module_cls = PerturbationModule

    _examples_attr = "cells_"
    _split_hint = (
        "its cells are split by condition in adata.obs: run scl.pp.perturbation_split(adata, "
        "...) and pass train(split_key=...), or train(train_conditions=...)."
    )
    _text_columns = ("cell", "condition", "split")

    def __init__(
        self,
        adata: ad.AnnData,
        sclong: SCLONG | None = None,
        hidden_dim: int = 64,
        freeze_backbone: bool = True,
        n_go_layers: int = 1,
        gene_graph: GeneGraph | None = None,
        n_control_cells: int = 256,
        seed: int = 0,
        direction_lambda: float = 0.1,
        uncertainty_free_gamma: float = 2.0,
        residual: bool = True,
    ):
        super().__init__(adata)
        genes = [str(g) for g in adata.var_names]
        conditions = self._registered_conditions()
        named = sorted({g for c in conditions for g in condition_genes(c)})
        perturbation_genes = sorted(set(genes) | set(named))
        if gene_graph is None:
            annotations = dict(default_human_annotations(id_type="symbol"))
            absent = [g for g in named if g not in set(genes) and not annotations.get(g)]
            if absent:  # previous symbols and aliases (e.g. MARCH8 -> MARCHF8)
                from ..genes import map_gene_ids

                official = map_gene_ids(absent, to="symbol")
                for gene, symbol in zip(absent, official, strict=True):
                    if isinstance(symbol, str) and annotations.get(symbol):
                        logger.info("GO terms of %s read from its official symbol %s", gene, symbol)
                        annotations[gene] = annotations[symbol]
                absent = [g for g in absent if not annotations.get(g)]
            if absent:
                raise ScLongInputError(
                    f"Condition(s) name gene(s) {absent} that are neither measured (adata."
                    "var_names) nor in the GO annotations, so the model has nothing to learn "
                    "their effect from. Check the spelling (official HGNC symbols), or drop "
                    "those cells."
                )
            graph = GeneGraph.from_annotations(perturbation_genes, annotations)
        else:
            graph = gene_graph.reindex(perturbation_genes)
        spec = {
            "genes": genes,
            "perturbation_genes": perturbation_genes,
            "go_edge_index": graph.edge_index.numpy(),
            "go_edge_weight": graph.edge_weight.numpy(),
            "hidden_dim": int(hidden_dim),
            "n_go_layers": int(n_go_layers),
            "freeze_backbone": bool(freeze_backbone),
            "n_control_cells": int(n_control_cells),
            "seed": int(seed),
            "direction_lambda": float(direction_lambda),
            "uncertainty_free_gamma": float(uncertainty_free_gamma),
            "residual": bool(residual),
            "backbone": None,
        }
        spec["genes"] = genes
        network = None
        if sclong is not None:
            vocabulary = list(sclong.vocabulary.genes)
            where = {g: i for i, g in enumerate(vocabulary)}
            outside = [g for g in genes if g not in where]
            if outside:
                raise ScLongInputError(
                    f"{len(outside)} measured genes are not in the scLong vocabulary (e.g. "
                    f"{outside[:5]}); restrict adata to the model's genes or build the scLong "
                    "model on a vocabulary that holds them."
                )
            args = sclong._setup_args
            layer = args.get("layer")
            if layer is not None and layer not in adata.layers:
                raise ScLongKeyError(
                    f"The scLong model reads adata.layers[{layer!r}], which this AnnData lacks; "
                    f"run scl.pp.normalize(adata, key_added={layer!r}) on the counts first."
                )
            network = copy_network(sclong.module.network).cpu()
            spec["backbone"] = {
                "config": network.config.to_dict(),
                "vocabulary": [str(g) for g in vocabulary],
                "positions": np.asarray([where[g] for g in genes], dtype=np.int64),
                "layer": layer,
                "max_value": float((args.get("normalization") or {}).get("max_value", 10.0)),
                "check_normalization": bool(args.get("check_normalization", True)),
            }
        self._build(spec, network)
        self.history_ = None
        self.init_params_ = {"non_kwargs": {}, "kwargs": {}}

    # ------------------------------------------------------------------ setup
    @classmethod
    def setup_anndata(
        cls,
        adata: ad.AnnData,
        condition_key: str = "condition",
        control: str = CONTROL,
        layer: str | None = None,
        **kwargs,
    ) -> None:
        """Register a perturbation screen.

        Reads ``adata.obs[condition_key]`` (GEARS labels, see
        :func:`~sclong_scverse.pp.perturbation_conditions`) and ``adata.layers[layer]`` (or
        ``adata.X``): log-normalised expression, the values the model predicts. Writes the
        scvi-tools registration (``adata.uns["_scvi_uuid"]``, ``adata.uns["_scvi_manager_uuid"]``,
        ``adata.obs["_scvi_labels"]``).

        Parameters
        ----------
        adata
            AnnData of a perturbation screen with control cells.
        condition_key
            ``adata.obs`` column of GEARS condition labels.
        control
            The control label in that column.
        layer
            Values to model (``None``: ``adata.X``).
        **kwargs
            Passed to :meth:`scvi.data.AnnDataManager.register_fields`.

        Raises
        ------
        KeyError
            ``condition_key`` or ``layer`` not found.
        ScLongInputError
            The control label does not occur (or no cell has it), missing labels, or values
            that are not finite and non-negative.
        """
        setup_method_args = cls._get_setup_method_args(**locals())  # first: the call's arguments
        hint = "; run scl.pp.perturbation_conditions first"
        present = set(perturbation_labels(adata, condition_key, "condition_key", layer, hint))
        if control not in present:
            raise ScLongInputError(
                f"The control label {control!r} does not occur in adata.obs[{condition_key!r}] "
                f"(labels like {sorted(present)[:5]}); no control cells to compare with. Run "
                "scl.pp.perturbation_conditions (control -> 'ctrl') or pass control=..."
            )
        validate_adata_input(adata, layer, check_normalization=False)
        anndata_fields = [
            fields.LayerField(REGISTRY_KEYS.X_KEY, layer, is_count_data=False),
            fields.CategoricalObsField(REGISTRY_KEYS.LABELS_KEY, condition_key),
        ]
        register_fields(cls, adata, setup_method_args, anndata_fields, **kwargs)

    def _registered_conditions(self) -> np.ndarray:
        args = self._setup_args
        labels = self.adata.obs[args["condition_key"]].astype(str).to_numpy()
        return np.where(labels == args["control"], CONTROL, labels)

    # ------------------------------------------------------------------ construction
    def _build(self, spec: dict, network: ScLongNetwork | None = None) -> None:
        self.spec_ = spec
        genes = list(spec["genes"])
        perturbation_genes = list(spec["perturbation_genes"])
        index = {g: i for i, g in enumerate(perturbation_genes)}
        torch.manual_seed(int(spec["seed"]))
        backbone = spec["backbone"]
        self.module = self._module_cls(
            n_genes=len(genes),
            n_perturbation_genes=len(perturbation_genes),
            go_edge_index=torch.as_tensor(np.asarray(spec["go_edge_index"]), dtype=torch.long),
            go_edge_weight=torch.as_tensor(np.asarray(spec["go_edge_weight"])),
            gene_flag_index=torch.as_tensor([index[g] for g in genes]),
            hidden_dim=int(spec["hidden_dim"]),
            backbone=network,
            backbone_positions=(
                None if backbone is None else torch.as_tensor(np.asarray(backbone["positions"]))
            ),
            freeze_backbone=bool(spec["freeze_backbone"]),
            n_go_layers=int(spec["n_go_layers"]),
            uncertainty_free_gamma=float(spec["uncertainty_free_gamma"]),
            direction_lambda=float(spec["direction_lambda"]),
            residual=bool(spec.get("residual", False)),  # models saved before: none
            wide_dim=0 if network is None else int(network.config.dim),
        )
        self._perturbation_index = index
        self.probe_alpha_ = None
        self._pool_context_ready = False
        self._prepare_data()
        kind = "scLong features" if network is not None else "learned gene embeddings (ablation)"
        if spec.get("residual", False):
            kind += ", wide & deep"
        n_edges = np.asarray(spec["go_edge_index"]).reshape(2, -1).shape[1]
        self._model_summary_string = (
            f"SCLONGPerturbation: GEARS-style head on {kind}; {len(genes)} genes, "
            f"{len(perturbation_genes)} perturbable genes, {n_edges} GO edges, "
            f"{len(self._pool)} control cells."
        )

    def _values(self, layer: str | None):
        return self.adata.X if layer is None else self.adata.layers[layer]

    def _prepare_data(self) -> None:
        """Control-cell pool, its values and backbone inputs, control mean, the cells' table."""
        spec = self.spec_
        conditions = self._registered_conditions()
        self._conditions = conditions
        self.cells_ = pd.DataFrame(
            {
                "cell": np.asarray(self.adata.obs_names.astype(str), dtype=object),
                "condition": np.asarray(conditions, dtype=object),
                "split": "unused",
            }
        )
        self.best_epoch_ = None
        self.split_ = None
        control_rows = np.flatnonzero(conditions == CONTROL)
        if not len(control_rows):
            raise ScLongInputError("No control cells in the registered data.")
        names = spec.get("control_cells")
        position = pd.Index(self.adata.obs_names)
        if names is not None and len(names) and pd.Index(list(names)).isin(position).all():
            pool = position.get_indexer(list(names))
        else:
            rng = np.random.default_rng(int(spec["seed"]))
            n = min(int(spec["n_control_cells"]), len(control_rows))
            pool = np.sort(rng.choice(control_rows, size=n, replace=False))
        self._pool = np.asarray(pool)
        spec["control_cells"] = [str(n) for n in self.adata.obs_names[self._pool]]
        values = to_memory(self._values(self._setup_args["layer"]))
        self._x = values
        self._pool_values = torch.as_tensor(_dense_rows(values, self._pool))
        control_sum = np.zeros(self.adata.n_vars)
        for start in range(0, len(control_rows), 4096):
            control_sum += _dense_rows(values, control_rows[start : start + 4096]).sum(axis=0)
        self.control_mean_ = (control_sum / len(control_rows)).astype(np.float32)
        backbone = spec["backbone"]
        self._pool_tokens = None
        if backbone is not None:
            layer = backbone["layer"]
            if layer is not None and layer not in self.adata.layers:
                raise ScLongKeyError(
                    f"The scLong backbone reads adata.layers[{layer!r}]; not found."
                )
            source = self.adata.X if layer is None else self.adata.layers[layer]
            pool_adata = ad.AnnData(
                X=sparse.csr_matrix(_dense_rows(source, self._pool)),
                var=pd.DataFrame(index=self.adata.var_names.copy()),
            )
            validate_adata_input(
                pool_adata,
                None,
                expected_max=backbone["max_value"],
                check_normalization=backbone["check_normalization"],
            )
            config = ScLongConfig.from_dict(backbone["config"])
            tokens = torch.zeros(len(self._pool), config.n_tokens)
            tokens[:, torch.as_tensor(np.asarray(backbone["positions"]))] = torch.as_tensor(
                _dense_rows(source, self._pool)
            )
            self._pool_tokens = tokens

    def _pool_inputs(self) -> torch.Tensor:
        """The backbone inputs of the control pool, on the module's device.

        Frozen backbone: the pool's decodings at the measured genes ``(n_pool, n_genes, d)``,
        computed once; fine-tuned backbone: its tokens ``(n_pool, n_tokens)``; the ablation: an
        empty ``(n_pool, 0)`` tensor.
        """
        device = self._device
        if self._pool_tokens is None:
            return torch.zeros(len(self._pool), 0)
        if not self.module.freeze_backbone:
            return self._pool_tokens
        chunks = []
        with torch.inference_mode():
            for start in range(0, len(self._pool), 32):
                tokens = self._pool_tokens[start : start + 32].to(device)
                chunks.append(self.module.backbone_features(tokens).float())
        return torch.cat(chunks)

    def _set_pool_context(self) -> None:
        """Attach the control pool (values, backbone inputs) and the control mean to the module.

        They are the module's context tensors (non-persistent buffers): they move with it to the
        accelerator and are never saved with the weights.
        """
        if self._pool_context_ready:
            return
        self.module.set_context(
            pool_values=self._pool_values,
            pool_inputs=self._pool_inputs(),
            control_mean=torch.as_tensor(self.control_mean_),
        )
        self._pool_context_ready = True

    def _indicator(self, conditions: Sequence[str]) -> torch.Tensor:
        out = torch.zeros(len(conditions), len(self._perturbation_index))
        for i, condition in enumerate(conditions):
            for gene in condition_genes(condition):
                if gene not in self._perturbation_index:
                    raise ScLongInputError(
                        f"Condition {condition!r} perturbs {gene!r}, which the model does not "
                        "know (not measured, not named in the training conditions, no GO "
                        "node). It cannot predict this perturbation."
                    )
                out[i, self._perturbation_index[gene]] = 1.0
        return out

    def _forward(self, pool_rows: torch.Tensor, indicator: torch.Tensor) -> torch.Tensor:
        self._set_pool_context()
        device = self._device
        return self.module.forward_pool(pool_rows.to(device), indicator.to(device))

    # ------------------------------------------------------------------ training
    def _cell_split(
        self,
        split_key: str | None,
        train_conditions: Sequence[str] | None,
        validation_conditions: Sequence[str] | None,
    ) -> tuple[np.ndarray, dict]:
        """Each cell's part (``"train"``, ``"validation"``, ``"test"``, ``"unused"``)."""
        conditions = self._conditions
        out = np.full(len(conditions), "unused", dtype=object)
        if train_conditions is not None:
            train = {condition_label(parse_condition(c, "+")) for c in train_conditions}
            out[np.isin(conditions, sorted(train | {CONTROL}))] = "train"
            if validation_conditions is not None:
                held = {condition_label(parse_condition(c, "+")) for c in validation_conditions}
                if held & (train | {CONTROL}):
                    raise ScLongInputError(
                        f"Conditions {sorted(held & (train | {CONTROL}))} are both training and "
                        "validation conditions."
                    )
                out[np.isin(conditions, sorted(held))] = "validation"
            return out, {"kind": "train_conditions"}
        if validation_conditions is not None:
            raise ScLongInputError("validation_conditions needs train_conditions.")
        if split_key is not None and split_key in self.adata.obs.columns:
            split = self.adata.obs[split_key].astype(str).to_numpy()
            for name, part in _SPLIT_NAMES.items():
                out[split == name] = part
            return out, {"kind": "split_key", "split_key": split_key}
        out[:] = "train"
        return out, {"kind": "all"}

    def _loss_context(self, names: list[str]) -> dict[str, torch.Tensor]:
        """GEARS's per-condition inputs: the perturbation indicator and the loss's gene mask."""
        conditions = self._conditions
        # GEARS's loss uses, per perturbation, the genes not zero in its cells
        nonzero = np.zeros((len(names), self.adata.n_vars), dtype=bool)
        for i, name in enumerate(names):
            rows = np.flatnonzero(conditions == name)[:_MASK_CELLS]
            nonzero[i] = _dense_rows(self._x, rows).mean(axis=0) > 0
        return {"indicator": self._indicator(names), "nonzero": torch.as_tensor(nonzero)}

    def train(
        self,
        max_epochs: int = 20,
        batch_size: int = 64,
        lr: float = 3e-4,
        weight_decay: float = 5e-4,
        split_key: str | None = "split",
        train_conditions: Sequence[str] | None = None,
        gradient_clip_val: float | None = 1.0,
        max_cells_per_condition: int | None = None,
        accelerator: str = "auto",
        devices: int | list[int] | str = "auto",
        precision: str | int | None = None,
        early_stopping_patience: int | None = 5,
        seed: int = 0,
        validation_conditions: Sequence[str] | None = None,
        **trainer_kwargs: Any,
    ) -> pd.DataFrame:
        """Train the head on (perturbed cell, random control cell) pairs, the scvi-tools way.

        Trains through scvi-tools' ``TrainRunner`` (Lightning), as ``SCVI.train`` does. Each
        training cell (perturbed cells and the control cells themselves) is paired with a
        control cell drawn at random from the model's pool, anew for every batch (seeded); the
        loss is GEARS's (:meth:`~sclong_scverse.module.PerturbationModule.loss`). The validation
        cells are paired with the same draws every epoch, so that their loss is comparable from
        epoch to epoch: it drives early stopping and the weights of the epoch with the lowest
        validation loss are kept (``model.best_epoch_``); the earlier hand-written loop kept the
        last epoch's weights and only reported the validation loss. With ``residual``, the wide
        part (the ridge probe) is fitted first on the training conditions'
        mean changes, its penalty chosen on the validation conditions'
        (``model.probe_alpha_``). Test cells are never read.

        Reads the registered values and conditions and ``adata.obs[split_key]`` (the training
        cells are those marked ``"train"``, controls included; ``"val"`` cells give the
        validation loss); writes nothing into ``adata``. The history goes to ``model.history``
        (``train_loss``, ``validation_loss``: GEARS's loss per epoch), each cell's part to
        ``model.cells_["split"]``.

        Parameters
        ----------
        max_epochs
            Most passes over the training cells.
        batch_size
            Cells per step.
        lr, weight_decay
            Adam settings (GEARS: 1e-3, 5e-4). The default learning rate, 3e-4, keeps the wide
            & deep head at or above its ridge probe on held-out targets (at 1e-3 and 5e-3 the
            network learned one offset for every condition and fell below the probe's Pearson
            delta; ``docs/perturbation.md``).
        split_key
            ``adata.obs`` column of a split (:func:`~sclong_scverse.pp.perturbation_split`);
            ``None`` or absent: every cell trains, without validation (unless
            ``train_conditions``).
        train_conditions
            Conditions to train on (overrides ``split_key``); the control always trains.
        gradient_clip_val
            Gradient-norm clipping (a Lightning trainer setting; ``None``: none).
        max_cells_per_condition
            Train on at most this many cells of each condition (a seeded draw; ``None``: all),
            to bound the time per epoch on large screens.
        accelerator, devices, precision
            Lightning settings (``"auto"``: a GPU when there is one).
        early_stopping_patience
            Stop after this many epochs without a lower validation loss (``None``: never).
        seed
            Seed of the shuffles, the control-cell pairing and the per-condition draw.
        validation_conditions
            With ``train_conditions``: conditions whose cells give the validation loss.
        **trainer_kwargs
            Passed to the Lightning trainer (e.g. ``enable_progress_bar=False``, ``callbacks``).

        Returns
        -------
        ``train_loss``, ``validation_loss`` (GEARS's loss) per epoch (NaN without validation
        cells).

        Raises
        ------
        ScLongInputError
            No perturbed cell to train on.
        """
        from scvi.model._utils import parse_device_args

        conditions = self._conditions
        split, record = self._cell_split(split_key, train_conditions, validation_conditions)
        if self.module.residual:  # on every cell of the conditions, before the draw below
            self._fit_wide(split)
        rng = np.random.default_rng(seed)
        if max_cells_per_condition is not None:
            for condition in np.unique(conditions[split == "train"]):
                rows = np.flatnonzero((split == "train") & (conditions == condition))
                if len(rows) > max_cells_per_condition:
                    dropped = rng.choice(
                        rows, size=len(rows) - max_cells_per_condition, replace=False
                    )
                    split[np.sort(dropped)] = "unused"
        if not (conditions[split == "train"] != CONTROL).any():
            raise ScLongInputError("No perturbed cells to train on (only controls).")
        self.cells_["split"] = split
        self.split_ = {
            **record,
            "max_cells_per_condition": max_cells_per_condition,
            "seed": int(seed),
        }
        names = sorted(set(conditions))
        code = {c: i for i, c in enumerate(names)}
        examples = {
            "row": np.arange(len(conditions), dtype=np.int64),
            "code": np.array([code[c] for c in conditions], dtype=np.int64),
        }
        _, _, device = parse_device_args(accelerator, devices, return_device="torch")
        self.module.to(device)
        self._set_pool_context()
        self.module.set_context(**self._loss_context(names))
        values, n_pool = self._x, len(self._pool)

        def pair(batch: dict[str, torch.Tensor], generator: torch.Generator) -> dict:
            """The cells' values and a random control cell of the pool for each."""
            rows = batch.pop("row").numpy()
            batch["truth"] = torch.from_numpy(_dense_rows(values, rows))
            batch["pool"] = torch.randint(0, n_pool, (len(rows),), generator=generator)
            return batch

        if gradient_clip_val is not None:
            trainer_kwargs.setdefault("gradient_clip_val", float(gradient_clip_val))
        return self._fit(
            examples,
            self._split_rows(),
            max_epochs=max_epochs,
            batch_size=batch_size,
            lr=lr,
            weight_decay=weight_decay,
            early_stopping_patience=early_stopping_patience,
            accelerator=accelerator,
            devices=devices,
            precision=precision,
            seed=seed,
            augment=pair,
            **trainer_kwargs,
        )

    def _wide_inputs(self, train_genes: Collection[str]) -> np.ndarray:
        """Each perturbable gene's input to the wide part ``(n_perturbation_genes, d)``.

        Its scLong feature (:meth:`gene_features`); a gene outside scLong's vocabulary takes the
        mean feature of ``train_genes`` (the genes of the training conditions), so that it
        predicts about the mean training change. The ablation: ``(n, 0)`` (no inputs).
        """
        genes = self.perturbation_genes
        if self.spec_["backbone"] is None:
            return np.zeros((len(genes), 0), dtype=np.float32)
        table = self.gene_features()
        known = [g for g in sorted(train_genes) if g in table.index]
        fallback = table.loc[known].to_numpy().mean(axis=0) if known else table.mean().to_numpy()
        inputs = table.reindex(genes).to_numpy(dtype=np.float32)
        inputs[np.isnan(inputs).any(axis=1)] = fallback
        return inputs

    def _fit_wide(self, split: np.ndarray) -> None:
        """Set the module's wide part to the ridge probe fitted on the training conditions.

        One example per perturbed condition of the training (validation) cells: its input is
        the sum of its genes' :meth:`_wide_inputs`, its target the mean of its cells minus the
        mean of the control pool (so that :meth:`predict`, an average over the pool, starts at
        the probe's change over the control mean: the pool's offset goes to the intercept).
        Fitted with :func:`~sclong_scverse.model._head_base.fit_ridge` (standardised inputs,
        the penalty with the lowest validation MSE); the ablation's wide part is the mean
        training change.

        Parameters
        ----------
        split
            Each cell's part (:meth:`_cell_split`).
        """
        conditions = self._conditions
        names = {
            part: sorted(set(conditions[split == part]) - {CONTROL})
            for part in ("train", "validation")
        }
        examples = names["train"] + names["validation"]
        n_train = len(names["train"])
        if not n_train:
            raise ScLongInputError("No perturbed cells to train on (only controls).")
        rows = {"train": np.arange(n_train), "validation": np.arange(n_train, len(examples))}
        pool_mean = self._pool_values.mean(dim=0).numpy().astype(np.float64)
        targets = np.zeros((len(examples), self.adata.n_vars))
        for i, name in enumerate(examples):
            part = "train" if i < n_train else "validation"
            cells = np.flatnonzero((conditions == name) & (split == part))
            targets[i] = np.asarray(self._x[cells].mean(axis=0), dtype=np.float64).ravel()
        targets -= pool_mean
        indicator = self._indicator(examples).numpy()
        inputs = self._wide_inputs({g for n in names["train"] for g in condition_genes(n)})
        if inputs.shape[1]:
            coef, intercept, self.probe_alpha_ = fit_ridge(indicator @ inputs, targets, rows)
        else:
            coef, intercept = np.zeros((0, targets.shape[1])), targets[rows["train"]].mean(0)
            self.probe_alpha_ = None
        self.module.set_wide(
            torch.as_tensor(inputs), torch.as_tensor(coef), torch.as_tensor(intercept)
        )

    # ------------------------------------------------------------------ queries
    @property
    def perturbation_genes(self) -> list[str]:
        """Genes the model can perturb (measured genes and genes named in conditions)."""
        return list(self.spec_["perturbation_genes"])

    def predict(
        self,
        conditions: Sequence[str] | str | None = None,
        batch_size: int = 64,
    ) -> ad.AnnData:
        """Predicted mean expression of each condition, one row per condition.

        Each condition is applied to every control cell of the model's pool, and the
        predictions are averaged. Reads the model's control cells; writes nothing into the
        registered AnnData.

        Parameters
        ----------
        conditions
            GEARS labels (``"A+ctrl"``, ``"A+B"``; other spellings such as ``"A"``, ``"A_B"``
            are read too); default: every condition of the registered data except the control.
        batch_size
            Control cells per forward pass.

        Returns
        -------
        AnnData ``(n_conditions, n_genes)``: ``X`` the predicted mean expression,
        ``layers["delta"]`` the prediction minus the mean of all control cells;
        ``obs["condition"]`` (GEARS label), ``obs["perturbation"]`` (pertpy: genes joined by
        ``+``, ``"control"`` for the control), ``obs["n_perturbed_genes"]``; ``uns``:
        ``control_mean``, ``reference_key`` (``"control"``), ``target_col``.

        Raises
        ------
        ScLongInputError
            A condition names a gene the model cannot perturb.
        """
        if conditions is None:
            conditions = [c for c in sorted(set(self._conditions)) if c != CONTROL]
        elif isinstance(conditions, str):
            conditions = [conditions]
        labels = [condition_label(parse_condition(c, "+")) for c in conditions]
        indicator = self._indicator(labels)
        self.module.eval()
        out = np.zeros((len(labels), len(self.spec_["genes"])), dtype=np.float32)
        n_pool = len(self._pool)
        with torch.inference_mode():
            for i in range(len(labels)):
                total = torch.zeros(out.shape[1], device=self._device)
                for start in range(0, n_pool, batch_size):
                    rows = torch.arange(start, min(start + batch_size, n_pool))
                    prediction = self._forward(rows, indicator[i].expand(len(rows), -1))
                    total += prediction.float().sum(dim=0)
                out[i] = (total / n_pool).cpu().numpy()
        perturbation = [
            "+".join(condition_genes(c)) if c != CONTROL else PERTPY_CONTROL for c in labels
        ]
        obs = pd.DataFrame(
            {
                "condition": pd.Categorical(labels),
                "perturbation": pd.Categorical(perturbation),
                "n_perturbed_genes": [len(condition_genes(c)) for c in labels],
            },
            index=pd.Index(labels, name=None),
        )
        result = ad.AnnData(X=out, obs=obs, var=pd.DataFrame(index=list(self.spec_["genes"])))
        result.layers["delta"] = out - self.control_mean_[None, :]
        result.uns["control_mean"] = self.control_mean_.copy()
        result.uns["reference_key"] = PERTPY_CONTROL
        result.uns["target_col"] = "perturbation"
        return result

    def get_perturbation_embeddings(self) -> pd.DataFrame:
        """GO-propagated perturbation embeddings ``(n_perturbation_genes, hidden_dim)``."""
        self.module.eval()
        with torch.inference_mode():
            table = self.module.perturbation_embedding().float().cpu().numpy()
        return pd.DataFrame(table, index=self.perturbation_genes)

    def gene_features(self, batch_size: int = 32) -> pd.DataFrame:
        """The scLong feature of every vocabulary gene as the head reads it, over its control cells.

        The frozen backbone's decoding of each gene of the scLong vocabulary (the measured genes
        and the unmeasured targets alike) in each control cell of the model's pool, averaged
        over the pool. For the measured genes these are the vectors the head's feature
        projection reads (per cell). The linear probe of ``docs/perturbation.md`` regresses a
        condition's change on its perturbed gene's row (pass the table to
        :func:`~sclong_scverse.tl.benchmark_perturbation` as ``gene_embeddings``).

        Parameters
        ----------
        batch_size
            Control cells per forward pass.

        Returns
        -------
        DataFrame ``(n_vocabulary_genes, d)`` indexed by gene symbol.

        Raises
        ------
        ValueError
            The scLong-free ablation (no backbone).
        """
        backbone = self.spec_["backbone"]
        if backbone is None:
            raise ScLongInputError("The scLong-free ablation has no scLong features.")
        network = self.module.backbone
        network.eval()
        total = None
        with torch.inference_mode():
            for start in range(0, len(self._pool), batch_size):
                tokens = self._pool_tokens[start : start + batch_size].to(self._device)
                decodings = network(tokens)["decodings"].float().sum(dim=0)
                total = decodings if total is None else total + decodings
        vocabulary = list(backbone["vocabulary"])
        table = (total / len(self._pool))[: len(vocabulary)].cpu().numpy()
        return pd.DataFrame(table, index=vocabulary)

    # ------------------------------------------------------------------ save / load
    def _saved_attributes(self) -> dict:
        from ._saving import text_columns

        return {
            "cells_": text_columns(self.cells_, self._text_columns),
            "split_": self.split_,
            "best_epoch_": self.best_epoch_,
            "probe_alpha_": self.probe_alpha_,
        }

    def _restore_attributes(self, attrs: dict) -> None:
        saved = attrs.get("cells_")
        if saved is not None and list(saved["cell"]) == list(self.cells_["cell"]):
            self.cells_["split"] = np.asarray(saved["split"], dtype=object)
        self.split_ = attrs.get("split_")
        self.best_epoch_ = attrs.get("best_epoch_")
        self.probe_alpha_ = attrs.get("probe_alpha_")

    @classmethod
    def _check_loaded_data(cls, adata: ad.AnnData, spec: dict, attrs: dict) -> None:
        genes = [str(g) for g in spec["genes"]]
        if [str(g) for g in adata.var_names] != genes:
            raise ScLongInputError(
                f"adata's genes differ from the saved model's {len(genes)} genes (order "
                "included); subset and reorder it: adata[:, saved_genes]."
            )

    @classmethod
    def _load_network(cls, spec: dict, state: dict) -> ScLongNetwork | None:
        """The backbone to load the saved weights into (its GO graph comes with them)."""
        if spec["backbone"] is None:
            return None
        return ScLongNetwork(ScLongConfig.from_dict(spec["backbone"]["config"]))
