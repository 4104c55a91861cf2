"""Saving and loading an scLong model: safe files with a manifest, hub releases."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Self

import anndata as ad
import numpy as np
import pandas as pd
import torch
from mudata import MuData

from .._docs import fill_doc
from ..errors import ModelIntegrityError
from ..io._lean import convert_state, held_dtype, load_mapped, resolve_dtype
from ..validation import SCLONG_MAX_VALUE, ScLongInputError
from ._anndata import (
    MIN_QUERY_COVERAGE,
    _align_to_genes,
    check_query_coverage,
    match_query_ids,
)


def _read_saved_mapped(folder: Path, prefix: str | None, verify: bool, cls: type | None = None):
    """``model.pt`` as :func:`~._saving.read_saved_model` reads it, but memory-mapped.

    The checksum is verified (streamed) and the content checked the same way; the weights are
    left in the mapping, to be converted and checked one by one (:func:`_initialize_lean`).
    Returns the content and the page-release function of :func:`~..io._lean.load_mapped`.
    """
    from ._saving import from_plain, open_saved_model

    _, content, release = open_saved_model(folder, prefix, verify, load_mapped, cls)
    return from_plain(content), release


def _initialize_lean(cls, adata, attr_dict: dict, state: dict, release, folder: Path):
    """The model of a saved folder with its weights held in bfloat16, built without weights.

    The network is built on the meta device (no memory, no initialisation); each saved tensor
    is copied in its held dtype (:func:`~..io._lean.held_dtype`), checked to be finite, its
    mapped pages released, and assigned to the network (``load_state_dict(assign=True)``).
    """
    from ..nn import ScLongConfig, ScLongNetwork

    init = attr_dict.pop("init_params_")
    non_kwargs = dict(init["non_kwargs"])
    kwargs = {k: v for group in init.get("kwargs", {}).values() for k, v in group.items()}
    config = ScLongConfig.from_dict(non_kwargs["config"])
    with torch.device("meta"):
        network = ScLongNetwork(config)
    model = cls(adata, **non_kwargs, **kwargs, network=network)
    for attribute, value in attr_dict.items():
        setattr(model, attribute, value)
    dtypes = {key: held_dtype(key, value, torch.bfloat16) for key, value in state.items()}
    converted, bad = convert_state(state, dtypes, release, copy=release.mapped)
    if bad:
        raise ModelIntegrityError(
            f"{folder} holds NaN or infinite weights in {bad[:5]}"
            f"{' ...' if len(bad) > 5 else ''} ({len(bad)} tensors): the model diverged during "
            "training or the file is corrupted. It would give NaN outputs; retrain or restore "
            "the file."
        )
    model.module.load_state_dict(converted, assign=True)
    return model


def _check_saved_network(path: Path, attr_dict: dict, state: dict) -> None:
    """Refuse a saved SCLONG whose configuration is missing, invalid or not its weights'.

    Checked before any network is built (:func:`~._saved_schema.check_network_shapes`: the
    configuration's sizes are bounded and its network, built on the meta device, must have the
    saved weights' shapes), so a damaged file never reaches the allocator.
    """
    from ._saved_schema import check_network_shapes

    init = attr_dict.get("init_params_")
    config = (init or {}).get("non_kwargs", {}).get("config") if isinstance(init, dict) else None
    if not isinstance(config, dict):
        raise ModelIntegrityError(
            f"{path} is not a saved SCLONG: it records no network configuration "
            "(init_params_['non_kwargs']['config']); the file is corrupted or was edited."
        )
    check_network_shapes(config, state, path, prefix="network.")


class SaveLoadMixin:
    """Saving and loading of :class:`~sclong_scverse.SCLONG`, locally and as hub releases.

    :meth:`save` / :meth:`load` write and read ``model.pt`` (tensors and plain values, loaded
    with ``weights_only=True``) with a ``manifest.json`` of checksums; :meth:`from_pretrained`
    and :meth:`save_pretrained` resolve and write releases by name or hub repository.
    """

    @fill_doc
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
        of each file, package/torch/scvi-tools versions, the network configuration and, for a
        model made by :meth:`from_official`, ``"source"``: the official files' names and sha256
        and whether they were verified). Each file
        is written under a temporary name and renamed when complete. Reads the registered
        AnnData only when ``save_anndata``.

        Parameters
        ----------
        {save_folder}
        save_anndata
            Also write the registered AnnData (or MuData).
        **anndata_write_kwargs
            Passed to :meth:`anndata.AnnData.write_h5ad`.

        Raises
        ------
        ScLongInputError
            ``dir_path`` is a file, or holds a saved model and ``overwrite`` is ``False`` (a
            :class:`ValueError`).
        """
        from ._saving import save_model_folder

        manifest = {"config": self.module.config.to_dict()}
        source = getattr(self, "official_source_", None)
        if source:  # made from official files (from_official): their names and sha256
            manifest["source"] = source
        save_model_folder(
            self,
            dir_path,
            prefix,
            overwrite,
            save_anndata,
            anndata_write_kwargs,
            state=self.module.state_dict(),
            gene_ids=self._saved_gene_ids(),
            manifest=manifest,
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
        dtype: torch.dtype | str | None = None,
        min_coverage: float = MIN_QUERY_COVERAGE,
    ) -> Self:
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
        dtype
            ``None`` (default): float32 (a model saved while held in bfloat16 is widened);
            ``torch.bfloat16``: hold the weights in bfloat16, half the memory, for inference
            (queries run in bfloat16 where the hardware has bfloat16 instructions, else in
            float32 with the weights widened block by block; training is refused).
            ``model.pt`` is then memory-mapped and converted tensor by tensor into a network
            built without weights (no float32 copy of the model).
        min_coverage
            Fewest of the saved genes (fraction, default 0.5) that ``adata`` must hold when its
            genes differ; below it ``adata`` is refused (the rule of every query).

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
        ScLongInputError
            ``adata`` holds fewer than ``min_coverage`` of the saved genes.
        """
        from scvi.model._utils import parse_device_args
        from scvi.model.base._save_load import _initialize_model, _validate_var_names

        from ._saving import read_saved_data, read_saved_model, saved_folder_path

        _, _, torch_device = parse_device_args(
            accelerator=accelerator,
            devices=device,
            return_device="torch",
            validate_single_device=True,
        )
        folder = saved_folder_path(dir_path, prefix)
        lean = dtype is not None and resolve_dtype(dtype) != torch.float32
        if lean:
            saved, release = _read_saved_mapped(folder, prefix, verify, cls)
        else:
            saved = read_saved_model(folder, prefix, verify=verify, cls=cls)
        attr_dict, state = saved["attr_dict"], saved["model_state_dict"]
        var_names = saved.get("var_names")
        state.pop("pyro_param_store", None)
        registry = attr_dict.pop("registry_", None)
        saved_class = (registry or {}).get("model_name", cls.__name__)
        if saved_class != cls.__name__:
            raise ModelIntegrityError(
                f"{folder} holds a {saved_class} model, not a {cls.__name__}; load it with "
                f"{saved_class}.load."
            )
        _check_saved_network(folder / f"{prefix or ''}model.pt", attr_dict, state)
        setup_method = registry.get("setup_method_name", "setup_anndata")
        if adata is None:
            mudata = setup_method == "setup_mudata"
            adata = read_saved_data(cls, folder, prefix, verify, mudata=mudata)
        elif not isinstance(adata, MuData):
            layer = registry["setup_args"].get("layer")
            model_ids = pd.Index(np.asarray(var_names).astype(str))
            ids = pd.Index(adata.var_names.astype(str))
            if not ids.equals(model_ids):
                ids = match_query_ids(ids, model_ids)  # other id types, cases, aliases
                check_query_coverage(model_ids, ids, min_coverage)
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
        try:
            if lean:
                model = _initialize_lean(cls, adata, attr_dict, state, release, folder)
            else:
                model = _initialize_model(cls, adata, registry, attr_dict, None)
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
        dtype: torch.dtype | str | None = None,
        **load_kwargs,
    ) -> Self:
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
        dtype
            ``torch.bfloat16``: hold the weights in bfloat16 for inference (see :meth:`load`).
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
        return cls.load(folder, adata=adata, dtype=dtype, **load_kwargs)

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
        training data and ``metrics``. As :meth:`save` keeps a saved model, an existing
        ``README.md`` (e.g. the user's own notes) is kept unless ``overwrite=True``: nothing is
        written then. Upload the folder with
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
        overwrite
            Replace the files of a model saved there and an existing ``README.md``.
        save_anndata
            As in :meth:`save`.

        Returns
        -------
        The sha256 of ``manifest.json``: pin it in a
        :class:`~sclong_scverse.model.PretrainedRelease` so the release cannot change unnoticed.

        Raises
        ------
        ScLongInputError
            ``dir_path`` already holds a ``README.md`` or a saved model and ``overwrite`` is
            ``False`` (a :class:`ValueError`, as :meth:`save` raises).
        """
        from ._pretrained import manifest_checksum, model_card

        readme = Path(dir_path) / "README.md"
        if (readme.exists() or readme.is_symlink()) and not overwrite:
            raise ScLongInputError(
                f"{readme} exists already; pass overwrite=True to replace it with the model "
                "card, or choose another folder (nothing was written)."
            )
        card = model_card(self, name=name, training_data=training_data, metrics=metrics)
        self.save(dir_path, overwrite=overwrite, save_anndata=save_anndata)
        temporary = readme.with_name(f".{readme.name}.partial")
        try:  # as save()'s files: written under a temporary name, renamed when complete
            temporary.write_text(card)
            os.replace(temporary, readme)
        finally:
            temporary.unlink(missing_ok=True)
        return manifest_checksum(dir_path)
