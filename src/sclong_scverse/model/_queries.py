"""Queries of an scLong model: cell and gene embeddings, predictions, masked-value error."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import anndata as ad
import numpy as np
import pandas as pd
import torch
from mudata import MuData
from scipy import sparse
from scvi import REGISTRY_KEYS, settings
from tqdm.auto import tqdm

from .._docs import fill_doc
from ..errors import ScLongTypeError
from ..module._module import DEFAULT_POOLING, POOLINGS, pool_decoded
from ..validation import (
    SCLONG_MAX_VALUE,
    ScLongInputError,
    check_not_view,
    check_whole,
    to_memory,
    validate_adata_input,
)
from ._anndata import (
    MIN_QUERY_COVERAGE,
    Pooling,
    QueryPrecision,
    _align_to_genes,
    _gene_ids,
    _rna,
    _values,
    check_query_coverage,
    inference_autocast,
    match_query_ids,
)

#: calls reading at least this many cell x gene values show a progress bar by default
_PROGRESS_MIN_VALUES = 10_000_000


class QueryMixin:
    """Queries of :class:`~sclong_scverse.SCLONG`: data reading, embeddings, predictions.

    Streams the registered data (or a query AnnData aligned to the model's genes) through
    ``self.module`` batch by batch; reads values only and writes nothing into AnnData.
    """

    def _query(
        self,
        adata: ad.AnnData | MuData | None,
        indices: Sequence[int] | None = None,
        min_coverage: float = MIN_QUERY_COVERAGE,
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
            rna = self._registered_rna
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
                raise ScLongInputError(
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
            raise ScLongTypeError(f"expected an AnnData, got {type(adata).__name__}.")
        if self._modality is not None:
            raise ScLongInputError(
                f"This model was set up on a MuData; pass a MuData with the {self._modality!r} "
                "modality, not an AnnData."
            )
        check_not_view(adata)
        if adata.n_obs == 0:
            raise ScLongInputError("adata has no cells; nothing to read.")
        ids = _gene_ids(adata, self._gene_id_key)
        registered = self._registered_rna
        model_ids = self._model_gene_ids()
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
            ids = match_query_ids(ids, model_ids)  # other id types, cases, versions, aliases
            check_query_coverage(model_ids, ids, min_coverage)
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

    def _loader(
        self,
        adata,
        indices,
        batch_size,
        progress_bar=False,
        desc="cells",
        min_coverage: float = MIN_QUERY_COVERAGE,
    ):
        """Yield the mini-batches of :meth:`_query`'s data, then drop a query's registration.

        ``progress_bar``: ``True``/``False``, or ``None`` to show one (cells done, cells/s, time
        left) when the call reads at least ``_PROGRESS_MIN_VALUES`` cell x gene values.
        """
        batch_size = check_whole("batch_size", batch_size, allow_none=True)
        if indices is not None:
            indices = np.asarray(indices)
            if indices.dtype == bool:
                indices = np.flatnonzero(indices)
        data = self._query(adata, indices, min_coverage=min_coverage)
        n_cells = len(indices) if indices is not None else data.n_obs
        if progress_bar is None:
            progress_bar = n_cells * self.module.config.n_genes >= _PROGRESS_MIN_VALUES
        bar = tqdm(total=n_cells, desc=desc, unit="cell", disable=not progress_bar)
        try:
            loader = self._make_data_loader(
                adata=data,
                indices=indices,
                batch_size=settings.batch_size if batch_size is None else batch_size,
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
        min_coverage: float = MIN_QUERY_COVERAGE,
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
        # bfloat16-held weights: bfloat16 autocast or float32 widened block by block ("auto")
        autocast = inference_autocast(
            self._query_precision(precision), torch.device(self.device), self.module.network
        )
        with torch.inference_mode(), autocast:
            loader = self._loader(
                adata,
                indices,
                16 if batch_size is None else batch_size,
                progress_bar,
                desc,
                min_coverage=min_coverage,
            )
            for tensors in loader:
                inputs = self.module._get_inference_input(tensors)
                yield self.module.inference(
                    **inputs,
                    mask=mask,
                    generator=generator,
                    mask_fraction=mask_fraction,
                    replace_fraction=replace_fraction,
                )

    @fill_doc
    def get_latent_representation(
        self,
        adata: ad.AnnData | None = None,
        indices: Sequence[int] | None = None,
        batch_size: int | None = None,
        pooling: Pooling = DEFAULT_POOLING,
        progress_bar: bool | None = None,
        precision: QueryPrecision | None = None,
        min_coverage: float = MIN_QUERY_COVERAGE,
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
            One of :data:`~sclong_scverse.module._module.POOLINGS`. Default
            ``"feature_sum"`` (:data:`~sclong_scverse.module._module.DEFAULT_POOLING`): the
            original scLong's zero-shot embedding, one value per gene of the model (its
            decoding summed over the features plus its predicted value), the only pooling
            within 0.02 of the best on both integration bio conservation and a cross-batch
            linear probe (``docs/pooling.md``). ``"max"``, ``"mean"``, ``"sum"``: over the
            genes, ``dim`` values; ``"max+mean"``: both, each scaled to unit norm, ``2 dim``.
            Without the low-expression branch only each cell's decoded (top) genes count.
        {query_progress_precision}
        min_coverage
            Fewest of the model's genes (fraction, default 0.5) that a query ``adata`` must
            hold; below it the query is refused (``model._anndata.check_query_coverage``).

        Returns
        -------
        ``(n_cells, width)`` float32 array (``width``: :func:`~sclong_scverse.module.pooled_dim`
        of ``pooling``). Computed batch by batch: memory does not grow with the number of cells
        beyond the result.

        Raises
        ------
        ScLongInputError
            A query with fewer than ``min_coverage`` of the model's genes, or values the model
            cannot read.
        """
        if pooling not in POOLINGS:
            raise ScLongInputError(f"pooling must be one of {POOLINGS}, not {pooling!r}.")
        n_genes = self.module.config.n_genes
        pooled = []
        batches = self._batches(
            adata,
            indices,
            batch_size,
            progress_bar=progress_bar,
            desc="embed",
            precision=precision,
            min_coverage=min_coverage,
        )
        for outputs in batches:
            pooled.append(self._pooled(outputs, pooling, n_genes))
        return torch.cat(pooled).cpu().numpy()

    def _pooled(self, outputs: dict, pooling: str, n_genes: int) -> torch.Tensor:
        """A batch's cell embeddings: decodings pooled over the vocabulary's genes.

        ``"feature_sum"`` adds each gene's predicted value to its summed decoding (the
        original's recipe; the decodings alone sum to about 0 over their layer-normalised
        features).
        """
        decodings = outputs["decodings"][:, :n_genes].float()
        decoded = None
        if not self.module.config.low_expression_branch:
            decoded = outputs["predicted"][:, :n_genes]
        prediction = outputs["prediction"][:, :n_genes].float()
        return pool_decoded(decodings, decoded, pooling, prediction=prediction)

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
        pooling: Pooling = DEFAULT_POOLING,
        progress_bar: bool | None = False,
    ) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`get_latent_representation` and :meth:`predict` from one forward pass."""
        n_genes = self.module.config.n_genes
        pooled, predictions = [], []
        for outputs in self._batches(adata, None, batch_size, progress_bar=progress_bar):
            pooled.append(self._pooled(outputs, pooling, n_genes))
            predictions.append(self._predicted_values(outputs))
        return torch.cat(pooled).cpu().numpy(), torch.cat(predictions).numpy()

    @fill_doc
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
        {query_progress_precision}

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
            raise ScLongInputError(f"kind must be 'static' or 'contextual', not {kind!r}.")
        return self._per_var(table.numpy())

    def _per_var(self, token_table: np.ndarray) -> pd.DataFrame:
        positions = self.alignment.var_positions
        out = np.full((len(positions), token_table.shape[1]), np.nan, dtype=np.float32)
        kept = positions >= 0
        out[kept] = token_table[positions[kept]]
        names = self._registered_rna.var_names
        return pd.DataFrame(out, index=names.copy())

    @fill_doc
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
        {query_progress_precision}

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

    @fill_doc
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
        {query_progress_precision}

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
