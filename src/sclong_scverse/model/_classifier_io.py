"""Query mapping and saving of :class:`~sclong_scverse.model.SCLONGClassifier`.

:func:`prepare_query_anndata` puts a query on a reference model's genes; the mixin gives the
classifier its scvi-tools query methods (:meth:`prepare_query_anndata`, :meth:`load_query_data`)
and its safe save/load (the head and adapters with the backbone's checksum).
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import anndata as ad
import numpy as np
import pandas as pd

from .._docs import fill_doc
from ..errors import ScLongKeyError, ScLongTypeError
from ..genes import GeneVocabulary
from ..module._classifier import backbone_sha256 as network_sha256
from ..module._classifier import copy_network
from ..nn import ScLongConfig, ScLongNetwork
from ..validation import ScLongInputError, check_not_view
from ._anndata import (
    MIN_QUERY_COVERAGE,
    _align_to_genes,
    _gene_ids,
    check_query_coverage,
    match_query_ids,
)
from ._saving import ModelIntegrityError
from ._sclong import SCLONG

if TYPE_CHECKING:
    from ._classifier import SCLONGClassifier

logger = logging.getLogger(__name__)

#: Fewest reference genes a query must hold (fraction) for :meth:`prepare_query_anndata`.
MIN_QUERY_OVERLAP = MIN_QUERY_COVERAGE


class BackboneMismatchError(ModelIntegrityError):
    """A fine-tuned model's head and adapters are loaded onto another backbone than theirs."""


class ClassifierIOMixin:
    """Query mapping and saving for :class:`~sclong_scverse.model.SCLONGClassifier`."""

    # ------------------------------------------------------------------ query mapping
    @classmethod
    def prepare_query_anndata(
        cls,
        adata: ad.AnnData,
        reference_model: SCLONGClassifier | SCLONG,
        return_reference_var_names: bool = False,
        min_overlap: float = MIN_QUERY_OVERLAP,
    ) -> ad.AnnData | pd.Index:
        """A query AnnData on the reference model's genes, see :func:`prepare_query_anndata`.

        Parameters
        ----------
        adata, reference_model, return_reference_var_names, min_overlap
            See :func:`prepare_query_anndata`.

        Returns
        -------
        The prepared AnnData (or the reference's gene names).
        """
        return prepare_query_anndata(
            adata, reference_model, return_reference_var_names, min_overlap
        )

    @classmethod
    def load_query_data(
        cls,
        adata: ad.AnnData,
        reference_model: SCLONGClassifier,
        train: str = "auto",
        accelerator: str = "auto",
        device: int | str = "auto",
    ) -> SCLONGClassifier:
        """A copy of a fine-tuned classifier set up on query data, scvi-tools style.

        The query is registered with the reference's registry (new batch categories are
        added; label categories must be the reference's). If the query lacks the labels
        column, it is written into ``adata.obs[labels_key]`` as the unlabelled category (the
        reference must have one). The returned model trains only the head (``"frozen"``,
        ``"partial"``) or the head and the adapters (``"lora"``); the backbone, with any layers
        fine-tuned on the reference, stays fixed. A head trained alone trains on cached pooled
        features and keeps the reference's feature standardisation; the calibration
        (confidence threshold, out-of-distribution score) is the reference's until the query
        model trains, then its own.

        Parameters
        ----------
        adata
            The query, on the reference's genes (:meth:`prepare_query_anndata`).
        reference_model
            The fine-tuned reference classifier (not changed).
        train
            ``"auto"`` (adapters in ``"lora"`` mode, else the head), ``"head"`` or
            ``"adapters"``.
        accelerator, device
            Where the new model runs.

        Returns
        -------
        The query model.

        Raises
        ------
        ValueError
            The query's genes differ from the reference's (run :meth:`prepare_query_anndata`).
        ScLongInputError
            Labels in the query that the reference does not know.
        """
        from scvi.model._utils import parse_device_args

        if not isinstance(reference_model, cls):
            raise ScLongTypeError(f"reference_model must be a trained {cls.__name__}.")
        if train not in ("auto", "head", "adapters"):
            raise ScLongInputError(f"train must be 'auto', 'head' or 'adapters', not {train!r}.")
        check_not_view(adata)
        reference_genes = reference_model.adata.var_names
        if not adata.var_names.equals(reference_genes):
            raise ScLongInputError(
                "The query's genes differ from the reference model's (names or order); run "
                "adata = SCLONGClassifier.prepare_query_anndata(adata, reference_model) first."
            )
        registry = reference_model.adata_manager.registry
        args = dict(registry["setup_args"])
        labels_key, unlabeled = args["labels_key"], args.get("unlabeled_category")
        if labels_key not in adata.obs:
            if unlabeled is None:
                raise ScLongInputError(
                    f"The query has no adata.obs[{labels_key!r}] and the reference has no "
                    "unlabeled_category to fill it with; add the column (labels of the "
                    "reference's classes) or annotate with predict()/scl.tl.annotate instead."
                )
            adata.obs[labels_key] = pd.Categorical([unlabeled] * adata.n_obs)
        known = set(reference_model.classes_) | ({unlabeled} if unlabeled is not None else set())
        new = sorted(set(adata.obs[labels_key].astype(str)) - known)
        if new:
            raise ScLongInputError(
                f"The query's adata.obs[{labels_key!r}] has labels the reference does not know "
                f"({new[:10]}); the head predicts only {list(reference_model.classes_)}. Map them "
                f"to the reference's classes{' or to ' + repr(unlabeled) if unlabeled else ''}."
            )
        cls.setup_anndata(adata, source_registry=registry, extend_categories=True, **args)
        network = copy_network(reference_model.module.network)
        model = cls(
            adata,
            network,
            vocabulary=reference_model.vocabulary,
            backbone_sha256=reference_model.backbone_sha256_,
            **reference_model.init_params_["non_kwargs"],
        )
        model.module.load_state_dict(reference_model.module.state_dict())
        if getattr(reference_model, "calibration_", None) is not None:
            model.calibration_ = dict(reference_model.calibration_)  # until it trains
        scope = train if train != "auto" else ("adapters" if model.mode == "lora" else "head")
        model.module.set_trainable(scope)
        model.train_scope_ = scope
        _, _, torch_device = parse_device_args(
            accelerator=accelerator, devices=device, return_device="torch"
        )
        model.to_device(torch_device)
        model.module.eval()
        return model

    # ------------------------------------------------------------------ save / load
    @fill_doc
    def save(
        self,
        dir_path: str | os.PathLike,
        prefix: str | None = None,
        overwrite: bool = False,
        save_anndata: bool = False,
        save_backbone: bool = False,
        **anndata_write_kwargs,
    ) -> None:
        """Save the fine-tuned parts and the backbone's checksum (or the whole model).

        Writes, in ``dir_path``: ``model.pt`` (plain data read with
        ``torch.load(weights_only=True)``: the head, the adapters or unfrozen layers, the
        setup registry, classes, training history, and the backbone's configuration,
        vocabulary and sha256; with ``save_backbone`` the backbone's weights too),
        ``adata.h5ad`` when ``save_anndata``, and ``manifest.json`` (sha256 of each file).
        Without the backbone, a fine-tuned 1B model takes megabytes instead of 4 GB;
        :meth:`load` then needs the same backbone and refuses another one.

        Parameters
        ----------
        {save_folder}
        save_anndata
            Also write the registered AnnData.
        save_backbone
            Store the full backbone (a self-contained folder).
        **anndata_write_kwargs
            Passed to :meth:`anndata.AnnData.write_h5ad`.
        """
        from ._saving import save_model_folder

        state = self.module.state_dict()
        if not save_backbone:
            keys = set(self.module.fine_tuned_state_keys())
            state = {k: v for k, v in state.items() if k in keys}
        config = self.module.config.to_dict()
        save_model_folder(
            self,
            dir_path,
            prefix,
            overwrite,
            save_anndata,
            anndata_write_kwargs,
            state=state,
            gene_ids=self._saved_gene_ids(),
            content={
                "backbone": {
                    "sha256": self.backbone_sha256_,
                    "included": bool(save_backbone),
                    "config": config,
                    "vocabulary": list(self.vocabulary.genes),
                }
            },
            manifest={
                "mode": self.mode,
                "backbone_sha256": self.backbone_sha256_,
                "backbone_included": bool(save_backbone),
                "config": config,
            },
        )

    @classmethod
    def load(
        cls,
        dir_path: str | os.PathLike,
        adata: ad.AnnData | None = None,
        backbone: SCLONG | ScLongNetwork | None = None,
        accelerator: str = "auto",
        device: int | str = "auto",
        prefix: str | None = None,
        verify: bool = True,
    ) -> SCLONGClassifier:
        """Load a saved classifier onto its backbone, safely.

        ``model.pt`` is read with ``torch.load(weights_only=True)``, checked against
        ``manifest.json`` (sha256) and for finite weights. Without a stored backbone, the given
        ``backbone``'s checksum must equal the one saved (computed the same way over its
        weights, :func:`~sclong_scverse.module.backbone_sha256`), else loading is refused.
        ``adata`` is registered (the scvi-tools fields of :meth:`setup_anndata`); its genes
        may be in another order or partly missing (aligned into a new AnnData, with a report).

        Parameters
        ----------
        dir_path
            Folder written by :meth:`save`.
        adata
            Data to attach (default: the AnnData saved with the model); needs the
            ``labels_key`` column (values may be the unlabelled category).
        backbone
            The scLong model (or network) the classifier was fine-tuned on; required unless
            the folder holds the backbone (``save(save_backbone=True)``). It is copied, never
            changed.
        accelerator, device
            Where the model runs.
        prefix
            File name prefix given to :meth:`save`.
        verify
            Check the files against ``manifest.json``.

        Returns
        -------
        The model, in eval mode.

        Raises
        ------
        BackboneMismatchError
            ``backbone`` is not the one the classifier was fine-tuned on.
        ModelIntegrityError
            A checksum mismatch, non-finite weights or weights that do not fit.
        UnsafeFileError
            ``model.pt`` refers to code or objects outside the allow-list.
        """
        from scvi.model._utils import parse_device_args

        from ._saving import read_saved_data, read_saved_model

        _, _, torch_device = parse_device_args(
            accelerator=accelerator, devices=device, return_device="torch"
        )
        folder = Path(dir_path)
        saved = read_saved_model(folder, prefix, verify=verify, cls=cls)
        attr_dict, state = saved["attr_dict"], saved["model_state_dict"]
        info = saved.get("backbone")
        if not isinstance(info, dict) or "sha256" not in info:
            raise ModelIntegrityError(f"{folder} is not a saved SCLONGClassifier.")
        registry = attr_dict.pop("registry_")
        saved_class = registry.get("model_name", cls.__name__)
        if saved_class != cls.__name__:
            raise ScLongInputError(f"{folder} holds a {saved_class} model, not a {cls.__name__}.")
        config = ScLongConfig.from_dict(info["config"])
        vocabulary = GeneVocabulary(list(info["vocabulary"]))
        if info["included"]:
            if backbone is not None:
                raise ScLongInputError(
                    f"{folder} holds its backbone (saved with save_backbone=True); load it "
                    "without backbone=."
                )
            network = ScLongNetwork(config)
            network.set_gene_graph(
                state["network.gene_embedding.edge_index"],
                state["network.gene_embedding.edge_weight"],
            )
        else:
            if backbone is None:
                raise ScLongInputError(
                    f"{folder} holds the fine-tuned head and adapters without the backbone "
                    f"(sha256 {info['sha256'][:16]}...); pass the scLong model it was "
                    f"fine-tuned on: {cls.__name__}.load({str(folder)!r}, adata, "
                    "backbone=SCLONG.load(...))."
                )
            source = backbone.module.network if isinstance(backbone, SCLONG) else backbone
            if not isinstance(source, ScLongNetwork):
                raise ScLongTypeError("backbone must be an SCLONG model or a ScLongNetwork.")
            actual = network_sha256(source)
            if actual != info["sha256"]:
                raise BackboneMismatchError(
                    f"Refusing to load {folder} onto this backbone: the classifier was "
                    f"fine-tuned on a backbone with sha256 {info['sha256'][:16]}..., this one "
                    f"has {actual[:16]}... (other weights, genes or configuration). Its head "
                    "and adapters would give meaningless predictions. Pass the scLong model "
                    "it was fine-tuned on."
                )
            network = copy_network(source)
        if adata is None:
            adata = read_saved_data(cls, folder, prefix, verify, hint=", backbone=...")
        else:
            var_names = pd.Index(np.asarray(saved["var_names"]).astype(str))
            if not adata.var_names.equals(var_names):
                labels_key = registry["setup_args"]["labels_key"]
                layer = registry["setup_args"].get("layer")
                gene_id_key = registry["setup_args"].get("gene_id_key")
                ids = _gene_ids(adata, gene_id_key)
                model_ids = (
                    pd.Index(np.asarray(saved["gene_ids"]).astype(str))
                    if gene_id_key is not None and saved.get("gene_ids") is not None
                    else var_names
                )
                obs = adata.obs
                adata = _align_to_genes(adata, layer, ids, model_ids, var_names)
                adata.obs = obs.copy()
                if gene_id_key is not None:
                    adata.var[gene_id_key] = model_ids.to_numpy()
                if labels_key not in adata.obs:
                    raise ScLongInputError(f"adata.obs has no {labels_key!r} column (labels_key).")
        cls.setup_anndata(adata, source_registry=registry, **registry["setup_args"])
        non_kwargs = dict(attr_dict.pop("init_params_")["non_kwargs"])
        model = cls(
            adata,
            network,
            vocabulary=vocabulary,
            backbone_sha256=info["sha256"],
            **non_kwargs,
        )
        try:
            if info["included"]:
                model.module.load_state_dict(state)
            else:
                result = model.module.load_state_dict(state, strict=False)
                expected_missing = set(model.module.state_dict()) - set(
                    model.module.fine_tuned_state_keys()
                )
                if result.unexpected_keys or set(result.missing_keys) - expected_missing:
                    raise RuntimeError(
                        f"unexpected {result.unexpected_keys[:3]}, missing "
                        f"{sorted(set(result.missing_keys) - expected_missing)[:3]}"
                    )
        except RuntimeError as error:
            raise ModelIntegrityError(
                f"The weights in {folder} do not fit the configuration saved with them "
                f"({str(error).splitlines()[0]} ...); the file is corrupted or was edited."
            ) from None
        for name, value in attr_dict.items():
            setattr(model, name, value)
        model.module.set_trainable(getattr(model, "train_scope_", "mode"))
        model.to_device(torch_device)
        model.module.eval()
        return model


def prepare_query_anndata(
    adata: ad.AnnData,
    reference_model: SCLONGClassifier | SCLONG,
    return_reference_var_names: bool = False,
    min_overlap: float = MIN_QUERY_OVERLAP,
) -> ad.AnnData | pd.Index:
    """Put a query's values on a reference model's genes, scvi-tools style.

    The query's genes are matched to the genes the reference model was set up with (by
    ``var_names``, or by the ``gene_id_key`` column when the model uses one), reordered, and
    missing genes are filled with 0; the numbers of missing and unused genes are reported (a
    warning and ``uns["sclong_query"]``). Unlike scvi-tools, ``adata`` is not modified: a new
    AnnData is returned (values in ``X`` and in the model's layer, ``obs`` copied). Reads the
    values of the model's layer, validated against the model's normalisation.

    Parameters
    ----------
    adata
        The query.
    reference_model
        A :class:`SCLONGClassifier` or :class:`~sclong_scverse.model.SCLONG`.
    return_reference_var_names
        Only return the reference's gene names.
    min_overlap
        Fewest reference genes (fraction) that must be in the query (0.5): with fewer, the
        query is refused, since most of what the model reads would be missing.

    Returns
    -------
    The prepared AnnData, with ``uns["sclong_query"]`` = ``{"n_reference_genes", "n_found",
    "n_missing", "n_unused", "missing_examples"}``; or the reference's gene names.

    Raises
    ------
    ScLongInputError
        Fewer than ``min_overlap`` of the reference's genes are in the query.
    """
    if return_reference_var_names:
        return pd.Index(reference_model._registered_rna.var_names.copy())
    check_not_view(adata)
    gene_id_key = reference_model._gene_id_key
    args = reference_model._setup_args
    layer = reference_model._layer
    model_ids = reference_model._model_gene_ids()
    ids = match_query_ids(_gene_ids(adata, gene_id_key), model_ids)  # id types, case, aliases
    check_query_coverage(model_ids, ids, min_overlap)
    found = model_ids.isin(ids)
    n_found = int(found.sum())
    if layer is not None and layer not in adata.layers:
        raise ScLongKeyError(
            f"Layer {layer!r} (the reference's) not in adata.layers ({list(adata.layers)}); run "
            f"scl.pp.normalize(adata, key_added={layer!r}) on the query's raw counts first."
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # reported below, once
        prepared = _align_to_genes(
            adata,
            layer,
            ids,
            model_ids,
            reference_model._registered_rna.var_names,
            expected_max=(args.get("normalization") or {}).get("max_value"),
            check_normalization=bool(args.get("check_normalization", True)),
        )
    if gene_id_key is not None:
        prepared.var[gene_id_key] = model_ids.to_numpy()
    prepared.obsm.update({k: v for k, v in adata.obsm.items()})
    n_unused = int((~ids.isin(model_ids)).sum())
    missing = list(model_ids[~found][:10])
    prepared.uns["sclong_query"] = {
        "n_reference_genes": len(model_ids),
        "n_found": n_found,
        "n_missing": len(model_ids) - n_found,
        "n_unused": n_unused,
        "missing_examples": missing,
    }
    if n_found < len(model_ids):
        warnings.warn(
            f"{len(model_ids) - n_found} of the reference's {len(model_ids)} genes are absent "
            f"from the query and are filled with 0 (e.g. {missing[:5]}); {n_unused} query genes "
            "are not used.",
            UserWarning,
            stacklevel=2,
        )
    logger.info(
        "query prepared: %d/%d reference genes found, %d query genes unused",
        n_found,
        len(model_ids),
        n_unused,
    )
    return prepared
