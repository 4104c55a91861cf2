"""An scLong model from the official release files (checkpoint, hyper-parameters, genes)."""

from __future__ import annotations

import logging
import os
from typing import Literal, Self

import anndata as ad

from ..genes import GeneVocabulary

logger = logging.getLogger(__name__)


class OfficialMixin:
    """:meth:`from_official`: the official scLong weights as a model on the user's data."""

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
    ) -> Self:
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
