"""An scLong model from the official release files (checkpoint, hyper-parameters, genes)."""

from __future__ import annotations

import logging
import os
from typing import Literal, Self

import anndata as ad
import torch

from ..errors import ScLongInputError
from ..genes import GeneVocabulary
from ..io._lean import weights_dtype
from ._anndata import precision_name

logger = logging.getLogger(__name__)


class OfficialMixin:
    """:meth:`from_official`: the official scLong weights as a model on the user's data.

    Also what a model whose weights are held in bfloat16 (``dtype=torch.bfloat16`` on
    :meth:`from_official`, :meth:`load`, :meth:`from_pretrained`) may do: queries run in
    bfloat16 autocast where the hardware has bfloat16 instructions and in float32 with the
    weights widened block by block elsewhere (:meth:`_query_precision`); :meth:`train` and
    :meth:`pretrain` are refused, naming the fix (load the weights in float32).
    """

    @property
    def weights_dtype(self) -> torch.dtype:
        """The dtype the network's weights are held in: ``torch.float32`` or ``torch.bfloat16``."""
        return weights_dtype(self.module)

    def _query_precision(self, precision: str | int | None) -> str | int | None:
        """The precision of a query: a bfloat16-held model defaults to ``"auto"``.

        ``"auto"``: bfloat16 autocast where the device has bfloat16 matrix instructions,
        float32 with the weights widened block by block elsewhere (see
        :func:`~sclong_scverse.model._anndata.inference_autocast`). ``"32"`` and ``"bf16"``
        force one of the two; float16 is refused.
        """
        if self.weights_dtype != torch.bfloat16:
            return precision
        name = precision_name(precision)
        if name == "16":
            raise ScLongInputError(
                f"precision={precision!r}: this model's weights are held in bfloat16 (loaded "
                "with dtype=torch.bfloat16); float16 is not supported on them. Use "
                "precision='bf16', '32' or 'auto' (the default)."
            )
        return name or "auto"

    def _refuse_low_precision_training(self, what: str) -> None:
        if self.weights_dtype == torch.bfloat16:
            self.module.eval()
            raise RuntimeError(
                f"{what}: this model's weights are held in bfloat16 (loaded with "
                "dtype=torch.bfloat16), which is for inference only: optimiser steps on "
                "bfloat16 weights lose most updates to rounding. Load the weights in float32 "
                "(the default: no dtype argument) to train or fine-tune; for mixed-precision "
                "training pass precision='bf16-mixed' to train() / pretrain() instead."
            )

    def train(self, *args, **kwargs):
        """Refuse bfloat16-held weights, then train (:meth:`SCLONG.train`)."""
        self._refuse_low_precision_training("train()")
        return super().train(*args, **kwargs)

    def pretrain(self, *args, **kwargs):
        """Refuse bfloat16-held weights, then pretrain (:meth:`SCLONG.pretrain`)."""
        self._refuse_low_precision_training("pretrain()")
        return super().pretrain(*args, **kwargs)

    @classmethod
    def from_official(
        cls,
        adata: ad.AnnData,
        checkpoint: str | os.PathLike,
        hparams: str | os.PathLike,
        genes: str | os.PathLike,
        attention_mode: Literal["faithful", "per_cell"] = "faithful",
        expected_sha256: str | dict[str, str] | None = None,
        dtype: torch.dtype | str | None = None,
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
            files whose checksum differs are refused. Without one for the checkpoint it is
            loaded unverified, with a :class:`UserWarning` giving its sha256 to pin here. The
            files are always read without running code from them, cross-checked, and their
            weights checked to be finite (:func:`sclong_scverse.io.load_official`); their
            sha256 are kept in ``model.official_source_`` and recorded as ``"source"`` in the
            ``manifest.json`` of the model once saved (:meth:`save`), whose files every later
            load verifies.
        dtype
            ``None`` / ``torch.float32`` (default) or ``torch.bfloat16``: hold the weights in
            bfloat16, half the memory (the 1B model: about 2 GB instead of 4), read without a
            float32 copy of the model (the checkpoint is memory-mapped and converted tensor by
            tensor). For inference: queries run in bfloat16 autocast where the hardware has
            bfloat16 instructions (cell embeddings within cosine 0.99 of float32) and in
            float32 with the weights widened block by block elsewhere (``precision="auto"``);
            training is refused. See ``docs/official_1b.md``.
        **kwargs
            Passed to :class:`SCLONG` (e.g. ``mask_fraction``).

        Returns
        -------
        The model, its network in eval mode with the official weights (and their stored
        random features and GO graph).

        Raises
        ------
        OfficialFormatError
            A file that is not what it should be, differs from ``expected_sha256``, holds NaN
            or infinite weights, or disagrees with another (a :class:`ValueError`).

        Warns
        -----
        UserWarning
            No ``expected_sha256`` for the checkpoint: the warning names the file and the
            sha256 it has, to pin with ``expected_sha256=``.
        """
        from ..io import load_official

        release = load_official(
            checkpoint,
            hparams,
            genes,
            attention_mode=attention_mode,
            expected_sha256=expected_sha256,
            dtype=dtype,
        )
        vocabulary = GeneVocabulary(release.genes)
        model = cls(
            adata,
            config=release.network.config,
            vocabulary=vocabulary,
            network=release.network,
            **kwargs,
        )
        model.official_source_ = official_source(
            {"checkpoint": checkpoint, "hparams": hparams, "genes": genes}, release
        )
        logger.info(model.alignment.summary())
        return model


def official_source(paths: dict[str, str | os.PathLike], release) -> dict[str, dict]:
    """What a model made from official files records of them: name, sha256, whether verified.

    Parameters
    ----------
    paths
        ``{"checkpoint": ..., "hparams": ..., "genes": ...}`` as given to ``from_official``.
    release
        The :class:`~sclong_scverse.io.official.OfficialRelease` read from them.

    Returns
    -------
    ``{name: {"file": file name, "sha256": hex, "verified": bool}}`` for each file read.
    """
    return {
        name: {
            "file": os.path.basename(os.fspath(paths[name])),
            "sha256": digest,
            "verified": name in release.verified,
        }
        for name, digest in release.sha256.items()
    }
