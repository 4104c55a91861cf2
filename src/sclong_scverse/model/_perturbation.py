"""scvi-tools model class of the GEARS-style perturbation head on scLong."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

import anndata as ad
import numpy as np
import pandas as pd
import torch
from scipy import sparse
from scvi import REGISTRY_KEYS
from scvi.data import AnnDataManager, fields
from scvi.model.base import BaseModelClass

from ..go import GeneGraph, default_human_annotations
from ..module import PerturbationModule
from ..nn import ScLongConfig, ScLongNetwork
from ..pp._checks import ScLongInputError, check_not_view, to_memory, validate_adata_input
from ..pp._perturbation import CONTROL, condition_genes, condition_label, parse_condition

if TYPE_CHECKING:
    from ._sclong import SCLONG

logger = logging.getLogger(__name__)

#: ``adata.obs`` columns of :meth:`SCLONGPerturbation.predict`'s output (pertpy conventions).
PERTPY_CONTROL = "control"


def _dense_rows(values, rows: np.ndarray) -> np.ndarray:
    block = values[rows]
    block = block.toarray() if sparse.issparse(block) else np.asarray(block)
    return block.astype(np.float32)


def _copy_network(network: ScLongNetwork) -> ScLongNetwork:
    """A CPU copy of a scLong network (its state, GO graph and random features included)."""
    state = {k: v.detach().cpu().clone() for k, v in network.state_dict().items()}
    return _network_from_state(network.config.to_dict(), state)


def _network_from_state(config: dict, state: dict) -> ScLongNetwork:
    """A scLong network with the weights of ``state`` (keys of the network's own state)."""
    index = next(v for k, v in state.items() if k.endswith("gene_embedding.edge_index"))
    weight = next(v for k, v in state.items() if k.endswith("gene_embedding.edge_weight"))
    network = ScLongNetwork(ScLongConfig.from_dict(config), index, weight)
    network.load_state_dict(state)
    return network


class SCLONGPerturbation(BaseModelClass):
    """GEARS-style genetic perturbation model on scLong gene features (as scLong used GEARS).

    Each measured gene of a control cell is described by scLong's per-gene decoding of that cell
    (through a trainable projection; the scLong backbone frozen by default) and by its
    ``[control value, perturbation flag]``; the perturbed genes' embeddings are propagated over
    the GO graph (built with :class:`~sclong_scverse.go.GeneGraph` from the embedded human
    annotations), summed and added to every gene; a per-gene decoder predicts the change, added
    to the control values. Trained with GEARS's autofocus + direction loss on (perturbed cell,
    random control cell) pairs. ``sclong=None`` gives the scLong-free ablation: the same head
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

    Examples
    --------
    >>> scl.pp.perturbation_conditions(adata, "perturbation", layer="log1p")
    >>> scl.pp.perturbation_split(adata, "simulation")
    >>> scl.SCLONGPerturbation.setup_anndata(adata, layer="log1p")
    >>> model = scl.SCLONGPerturbation(adata, sclong=pretrained)
    >>> model.train(max_epochs=20)
    >>> predicted = model.predict(["STAT1+ctrl"])  # one row per condition, layers["delta"]
    """

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
                raise KeyError(
                    f"The scLong model reads adata.layers[{layer!r}], which this AnnData lacks; "
                    f"run scl.pp.normalize(adata, key_added={layer!r}) on the counts first."
                )
            network = _copy_network(sclong.module.network)
            spec["backbone"] = {
                "config": network.config.to_dict(),
                "vocabulary": [str(g) for g in vocabulary],
                "positions": np.asarray([where[g] for g in genes], dtype=np.int64),
                "layer": layer,
                "max_value": float((args.get("normalization") or {}).get("max_value", 10.0)),
                "check_normalization": bool(args.get("check_normalization", True)),
            }
        self._build(spec, network)
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
        check_not_view(adata)
        if condition_key not in adata.obs.columns:
            raise KeyError(
                f"condition_key={condition_key!r} is not a column of adata.obs (columns: "
                f"{list(adata.obs.columns)}); run scl.pp.perturbation_conditions first."
            )
        if layer is not None and layer not in adata.layers:
            raise KeyError(f"Layer {layer!r} not in adata.layers ({list(adata.layers)}).")
        labels = adata.obs[condition_key]
        if labels.isna().any():
            raise ScLongInputError(
                f"adata.obs[{condition_key!r}] has {int(labels.isna().sum())} cells without a "
                "condition; drop them first."
            )
        present = set(labels.astype(str))
        if control not in present:
            raise ScLongInputError(
                f"The control label {control!r} does not occur in adata.obs[{condition_key!r}] "
                f"(labels like {sorted(present)[:5]}); no control cells to compare with. Run "
                "scl.pp.perturbation_conditions (control -> 'ctrl') or pass control=..."
            )
        validate_adata_input(adata, layer, check_normalization=False)
        setup_method_args = cls._get_setup_method_args(
            cls=cls, adata=adata, condition_key=condition_key, control=control, layer=layer
        )
        anndata_fields = [
            fields.LayerField(REGISTRY_KEYS.X_KEY, layer, is_count_data=False),
            fields.CategoricalObsField(REGISTRY_KEYS.LABELS_KEY, condition_key),
        ]
        manager = AnnDataManager(fields=anndata_fields, setup_method_args=setup_method_args)
        manager.register_fields(adata, **kwargs)
        cls.register_manager(manager)

    @property
    def _setup_args(self) -> dict:
        return self.adata_manager._get_setup_method_args()["setup_args"]

    def _registered_conditions(self) -> np.ndarray:
        args = self._setup_args
        labels = self.adata.obs[args["condition_key"]].astype(str).to_numpy()
        return np.where(labels == args["control"], CONTROL, labels)

    # ------------------------------------------------------------------ construction
    def _build(self, spec: dict, network: ScLongNetwork | None) -> None:
        self.spec_ = spec
        genes = list(spec["genes"])
        perturbation_genes = list(spec["perturbation_genes"])
        index = {g: i for i, g in enumerate(perturbation_genes)}
        torch.manual_seed(int(spec["seed"]))
        backbone = spec["backbone"]
        self.module = PerturbationModule(
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
        )
        self._perturbation_index = index
        self._features: torch.Tensor | None = None
        self._prepare_data()
        kind = "scLong features" if network is not None else "learned gene embeddings (ablation)"
        n_edges = np.asarray(spec["go_edge_index"]).reshape(2, -1).shape[1]
        self._model_summary_string = (
            f"SCLONGPerturbation: GEARS-style head on {kind}; {len(genes)} genes, "
            f"{len(perturbation_genes)} perturbable genes, {n_edges} GO edges, "
            f"{len(self._pool)} control cells."
        )

    def _values(self, layer: str | None):
        return self.adata.X if layer is None else self.adata.layers[layer]

    def _prepare_data(self) -> None:
        """Control-cell pool, its values, control mean and the per-condition gene masks."""
        spec = self.spec_
        conditions = self._registered_conditions()
        self._conditions = conditions
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
                raise KeyError(f"The scLong backbone reads adata.layers[{layer!r}]; not found.")
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

    def _pool_features(self, rows: torch.Tensor | None = None) -> torch.Tensor | None:
        """Frozen backbone: decodings of the pool's control cells, computed once."""
        if self._pool_tokens is None or not self.module.freeze_backbone:
            return None
        if self._features is None:
            chunks = []
            with torch.inference_mode():
                for start in range(0, len(self._pool), 32):
                    tokens = self._pool_tokens[start : start + 32].to(self._device)
                    chunks.append(self.module.backbone_features(tokens).float())
            self._features = torch.cat(chunks)
        return self._features if rows is None else self._features[rows]

    @property
    def _device(self) -> torch.device:
        return next(self.module.parameters()).device

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
        device = self._device
        control = self._pool_values[pool_rows].to(device)
        features = self._pool_features(pool_rows)
        tokens = None
        if features is None and self._pool_tokens is not None:
            tokens = self._pool_tokens[pool_rows].to(device)
        elif features is not None:
            features = features.to(device)
        return self.module(control, indicator.to(device), features=features, tokens=tokens)

    # ------------------------------------------------------------------ training
    def train(
        self,
        max_epochs: int = 20,
        batch_size: int = 64,
        lr: float = 1e-3,
        weight_decay: float = 5e-4,
        split_key: str | None = "split",
        train_conditions: Sequence[str] | None = None,
        gradient_clip_val: float = 1.0,
        max_cells_per_condition: int | None = None,
        accelerator: str = "cpu",
        seed: int = 0,
    ) -> pd.DataFrame:
        """Train the head on (perturbed cell, random control cell) pairs.

        Reads the registered values and conditions and ``adata.obs[split_key]`` (the training
        cells are those marked ``"train"``, controls included; ``"val"`` cells give the
        validation loss); writes nothing into ``adata`` (losses go to ``model.history``).

        Parameters
        ----------
        max_epochs
            Passes over the training cells.
        batch_size
            Cells per step.
        lr, weight_decay
            Adam settings (GEARS: 1e-3, 5e-4).
        split_key
            ``adata.obs`` column of a split (:func:`~sclong_scverse.pp.perturbation_split`);
            ``None`` or absent: every cell trains (unless ``train_conditions``).
        train_conditions
            Conditions to train on (overrides ``split_key``); the control always trains.
        gradient_clip_val
            Gradient-norm clipping.
        max_cells_per_condition
            Train on at most this many cells of each condition (a seeded draw; ``None``: all),
            to bound the time per epoch on large screens.
        accelerator
            ``"cpu"``, ``"gpu"``/``"cuda"`` or ``"auto"``.
        seed
            Seed of the shuffles and the control-cell pairing.

        Returns
        -------
        The training history (``train_loss``, ``validation_loss`` per epoch).
        """
        use_gpu = accelerator in ("gpu", "cuda")
        use_gpu = use_gpu or (accelerator == "auto" and torch.cuda.is_available())
        device = torch.device("cuda" if use_gpu else "cpu")
        self.module.to(device)
        self._features = None
        conditions = self._conditions
        if train_conditions is not None:
            keep = set(train_conditions) | {CONTROL}
            train_rows = np.flatnonzero(np.isin(conditions, list(keep)))
            val_rows = np.array([], dtype=np.int64)
        elif split_key is not None and split_key in self.adata.obs.columns:
            split = self.adata.obs[split_key].astype(str).to_numpy()
            train_rows = np.flatnonzero(split == "train")
            val_rows = np.flatnonzero(split == "val")
        else:
            train_rows = np.arange(self.adata.n_obs)
            val_rows = np.array([], dtype=np.int64)
        rng = np.random.default_rng(seed)
        if max_cells_per_condition is not None:
            kept = []
            for condition in np.unique(conditions[train_rows]):
                rows = train_rows[conditions[train_rows] == condition]
                if len(rows) > max_cells_per_condition:
                    rows = rng.choice(rows, size=max_cells_per_condition, replace=False)
                kept.append(rows)
            train_rows = np.sort(np.concatenate(kept))
        if not (conditions[train_rows] != CONTROL).any():
            raise ScLongInputError("No perturbed cells to train on (only controls).")
        names = sorted(set(conditions))
        code = {c: i for i, c in enumerate(names)}
        indicator = self._indicator(names)
        cell_codes = np.array([code[c] for c in conditions])
        # GEARS's loss uses, per perturbation, the genes not zero in its cells
        nonzero = np.zeros((len(names), self.adata.n_vars), dtype=bool)
        for c, i in code.items():
            rows = np.flatnonzero(conditions == c)[:512]
            nonzero[i] = _dense_rows(self._x, rows).mean(axis=0) > 0
        nonzero = torch.as_tensor(nonzero)
        control_mean = torch.as_tensor(self.control_mean_).to(device)
        optimizer = torch.optim.Adam(
            [p for p in self.module.parameters() if p.requires_grad],
            lr=lr,
            weight_decay=weight_decay,
        )
        history: dict[str, list[float]] = {"train_loss": [], "validation_loss": []}

        def step(rows: np.ndarray, train: bool) -> float:
            pair = torch.as_tensor(rng.integers(0, len(self._pool), size=len(rows)))
            codes = torch.as_tensor(cell_codes[rows])
            truth = torch.as_tensor(_dense_rows(self._x, rows)).to(device)
            prediction = self._forward(pair, indicator[codes])
            loss = self.module.loss(prediction, truth, control_mean, nonzero[codes].to(device))
            if train:
                optimizer.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(self.module.parameters(), gradient_clip_val)
                optimizer.step()
            return float(loss.detach()) * len(rows)

        for _ in range(int(max_epochs)):
            self.module.train()
            order = rng.permutation(train_rows)
            total = sum(
                step(order[s : s + batch_size], True) for s in range(0, len(order), batch_size)
            )
            history["train_loss"].append(total / len(order))
            self.module.eval()
            if len(val_rows):
                with torch.no_grad():
                    total = sum(
                        step(val_rows[s : s + batch_size], False)
                        for s in range(0, len(val_rows), batch_size)
                    )
                history["validation_loss"].append(total / len(val_rows))
            else:
                history["validation_loss"].append(float("nan"))
        self.module.eval()
        self.is_trained_ = True
        self.history_ = pd.DataFrame(history)
        return self.history_

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

    # ------------------------------------------------------------------ save / load
    def save(
        self,
        dir_path: str | os.PathLike,
        prefix: str | None = None,
        overwrite: bool = False,
    ) -> None:
        """Save as plain data (``model.pt``, loads with ``weights_only=True``) + manifest.

        Writes ``model.pt`` (weights, the backbone's included, gene lists, the GO graph, the
        setup registry, the control cells' names, the history) and ``manifest.json`` (sha256,
        versions) in ``dir_path``; reads nothing from ``adata``.

        Parameters
        ----------
        dir_path
            Folder to write (created).
        prefix
            Prefix of the file names.
        overwrite
            Replace a model saved there.
        """
        from ._saving import save_head

        spec = dict(self.spec_)
        extra = {"backbone": spec["backbone"] is not None}
        save_head(self, dir_path, prefix, overwrite, spec=spec, extra=extra)

    @classmethod
    def load(
        cls,
        dir_path: str | os.PathLike,
        adata: ad.AnnData,
        prefix: str | None = None,
        verify: bool = True,
    ) -> SCLONGPerturbation:
        """Load a saved model safely and attach ``adata`` (the screen, with control cells).

        ``model.pt`` is read with ``torch.load(weights_only=True)`` after checking
        ``manifest.json`` (sha256). Registers ``adata`` as :meth:`setup_anndata` does (same
        condition key, control label and layer); the control cells saved with the model are
        used when ``adata`` holds them.

        Parameters
        ----------
        dir_path
            Folder written by :meth:`save`.
        adata
            The screen (the saved genes, in the same order).
        prefix
            File name prefix given to :meth:`save`.
        verify
            Check the manifest first.

        Returns
        -------
        The model, in eval mode.
        """
        from ._saving import load_head

        def check(spec: dict, _attrs: dict) -> None:
            genes = [str(g) for g in spec["genes"]]
            if [str(g) for g in adata.var_names] != genes:
                raise ScLongInputError(
                    f"adata's genes differ from the saved model's {len(genes)} genes (order "
                    "included); subset and reorder it: adata[:, saved_genes]."
                )

        def network(spec: dict, state: dict):
            if spec["backbone"] is None:
                return None
            prefix_length = len("backbone.")
            backbone_state = {
                k[prefix_length:]: v for k, v in state.items() if k.startswith("backbone.")
            }
            return _network_from_state(spec["backbone"]["config"], backbone_state)

        model, _ = load_head(cls, dir_path, adata, prefix, verify, check=check, network=network)
        return model
