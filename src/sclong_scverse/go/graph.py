"""The scLong gene-gene graph: Jaccard similarity of GO term sets, strongest incoming edges kept."""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from .readers import Annotations, read_annotations

PathLike = str | os.PathLike

_FORMAT = "sclong_scverse.GeneGraph"
#: entries of one dense (targets x annotated genes) float32 block of the Jaccard computation
_BLOCK_ENTRIES = 1 << 23


def _gene_list(genes: Any) -> tuple[list[str], str | None]:
    """Return (gene ids, pad token or None) of a list or a GeneVocabulary."""
    if hasattr(genes, "pad_token") and hasattr(genes, "n_tokens"):  # a GeneVocabulary
        return list(genes.genes), genes.pad_token
    if isinstance(genes, str) or not isinstance(genes, Sequence | np.ndarray | pd.Index):
        raise TypeError(
            f"genes must be a list of gene ids or a GeneVocabulary, not {type(genes).__name__}."
        )
    values = list(genes)
    bad = [g for g in values if not isinstance(g, str)]
    if bad:
        raise TypeError(
            f"genes must be strings; found {bad[0]!r} ({type(bad[0]).__name__}). "
            "Convert them with str() first."
        )
    if len(set(values)) != len(values):
        seen: set[str] = set()
        dup = [g for g in values if g in seen or seen.add(g)]
        raise ValueError(
            f"genes must be unique; {len(set(dup))} repeat (e.g. {dup[:5]}). Drop the repeats."
        )
    return values, None


class GeneGraph:
    """A weighted directed gene graph over an ordered gene list (scLong's GO graph).

    Node ``i`` is ``genes[i]``. A graph made for a :class:`~sclong_scverse.genes.GeneVocabulary`
    has one more node, the vocabulary's pad token (node ``len(genes)``, always isolated), like
    the official graph whose nodes are the model's ``n_genes + 1`` tokens.

    Parameters
    ----------
    genes
        Node gene ids in order (or a GeneVocabulary: its genes, plus the pad node).
    edge_index
        ``(2, n_edges)`` integer array: row 0 = source node, row 1 = target node.
    edge_weight
        ``(n_edges,)`` weights; ``None`` = all 1.
    n_nodes
        Number of nodes, at least ``len(genes)``; extra trailing nodes are isolated padding.
        Default ``len(genes)`` (+ 1 for a GeneVocabulary).
    annotated
        Boolean per gene: had annotations when the graph was built (default: has an edge).
    params
        Construction parameters, recorded in :meth:`summary` and :meth:`save`.
    """

    def __init__(
        self,
        genes: Sequence[str] | Any,
        edge_index: Any,
        edge_weight: Any = None,
        n_nodes: int | None = None,
        annotated: Any = None,
        params: Mapping[str, Any] | None = None,
    ) -> None:
        gene_list, pad = _gene_list(genes)
        if n_nodes is None:
            n_nodes = len(gene_list) + (1 if pad is not None else 0)
        n_nodes = int(n_nodes)
        if n_nodes < len(gene_list):
            raise ValueError(f"n_nodes={n_nodes} is smaller than the {len(gene_list)} genes.")
        index = torch.as_tensor(np.asarray(edge_index), dtype=torch.long)
        if index.ndim != 2 or index.shape[0] != 2:
            raise ValueError(f"edge_index must have shape (2, n_edges), got {tuple(index.shape)}.")
        if index.numel() and (int(index.min()) < 0 or int(index.max()) >= n_nodes):
            raise ValueError(
                f"edge_index has node positions outside 0..{n_nodes - 1} "
                f"(min {int(index.min())}, max {int(index.max())})."
            )
        if edge_weight is None:
            weight = torch.ones(index.shape[1], dtype=torch.float32)
        else:
            weight = torch.as_tensor(np.asarray(edge_weight), dtype=torch.float32).reshape(-1)
        if weight.shape[0] != index.shape[1]:
            raise ValueError(
                f"edge_weight has {weight.shape[0]} values for {index.shape[1]} edges."
            )
        self._genes = gene_list
        self._pad_token = pad
        self._n_nodes = n_nodes
        self._edge_index = index.contiguous()
        self._edge_weight = weight.contiguous()
        if annotated is None:
            annotated = np.zeros(len(gene_list), dtype=bool)
            nodes = index.reshape(-1).numpy()
            annotated[nodes[nodes < len(gene_list)]] = True
        annotated = np.asarray(annotated, dtype=bool)
        if annotated.shape != (len(gene_list),):
            raise ValueError(f"annotated must have one flag per gene ({len(gene_list)}).")
        self._annotated = annotated
        self.params: dict[str, Any] = dict(params or {})

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_annotations(
        cls,
        genes: Sequence[str] | Any,
        annotations: Mapping[str, Any] | pd.DataFrame | PathLike,
        jaccard_threshold: float = 0.1,
        max_neighbors: int = 20,
        n_nodes: int | None = None,
    ) -> GeneGraph:
        """Build the GO graph of scLong from gene annotations.

        Weight of the edge ``source -> target`` = Jaccard index of the two genes' term sets
        (``|A & B| / |A | B|``, float64, stored as float32). Every ordered pair with Jaccard
        ``> jaccard_threshold`` is a candidate, self pairs included (weight 1); each target
        keeps its ``max_neighbors + 1`` highest-weight incoming edges (the official 21, self
        included); ties at the last place go to the source earlier in ``genes`` (the original
        breaks them by the order of its annotation dict, which follows the vocabulary). Genes
        without annotations (or with an empty set) are isolated nodes; annotation genes that are
        not in ``genes`` are ignored.

        The computation is a sparse gene x term incidence product in blocks of targets (no
        Python loop over pairs): the full human graph (~20k annotated genes) takes seconds.

        Parameters
        ----------
        genes
            Gene ids in node order, or a GeneVocabulary (then the graph has its pad token as an
            extra isolated last node: ``n_nodes = len(genes) + 1``, as the official graph).
        annotations
            ``{gene: set of GO ids}`` (e.g. :func:`default_human_annotations`, or the official
            ``.pkl``), a long DataFrame, or a file path (``.pkl``, ``.gaf``, ``gene2go``, ``.gmt``;
            see :func:`read_annotations`). Gene ids must be of the same type as ``genes``.
        jaccard_threshold
            Keep pairs with Jaccard strictly above this (official 0.1).
        max_neighbors
            Incoming edges kept per target besides the self loop (official 20 -> 21 edges).
        n_nodes
            Number of nodes (>= ``len(genes)``); extra trailing nodes are isolated.

        Returns
        -------
        The graph; edges sorted by target, then source.
        """
        gene_list, pad = _gene_list(genes)
        if not gene_list:
            raise ValueError("genes is empty; a graph needs at least one gene.")
        if not 0 <= float(jaccard_threshold) < 1:
            raise ValueError(f"jaccard_threshold must be in [0, 1), got {jaccard_threshold}.")
        if int(max_neighbors) < 0:
            raise ValueError(f"max_neighbors must be >= 0, got {max_neighbors}.")
        ann: Annotations = (
            read_annotations(annotations)
            if not isinstance(annotations, Mapping)
            else read_annotations(dict(annotations))
        )
        positions = [i for i, g in enumerate(gene_list) if ann.get(g)]
        if not positions:
            example = next(iter(ann), None)
            raise ValueError(
                f"none of the {len(gene_list)} genes has annotations (the annotations cover "
                f"{len(ann)} genes, e.g. {example!r}; genes start with {gene_list[:3]}). Use "
                "annotations keyed by the same id type as the genes, e.g. "
                "default_human_annotations(id_type='ensembl') for Ensembl ids."
            )
        if len(positions) < 0.1 * len(gene_list):
            warnings.warn(
                f"only {len(positions)} of {len(gene_list)} genes have GO annotations; check "
                "that the annotations use the same id type as the genes.",
                UserWarning,
                stacklevel=2,
            )
        source, target, weight = _jaccard_top_k(
            [ann[gene_list[i]] for i in positions],
            float(jaccard_threshold),
            int(max_neighbors) + 1,
        )
        pos = np.asarray(positions, dtype=np.int64)
        annotated = np.zeros(len(gene_list), dtype=bool)
        annotated[pos] = True
        graph_genes: Any = genes if pad is not None else gene_list
        return cls(
            graph_genes,
            np.stack([pos[source], pos[target]]),
            weight,
            n_nodes=n_nodes,
            annotated=annotated,
            params={
                "jaccard_threshold": float(jaccard_threshold),
                "max_neighbors": int(max_neighbors),
                "n_annotation_genes": len(ann),
            },
        )

    # ------------------------------------------------------------------ properties
    @property
    def genes(self) -> list[str]:
        """Gene ids of the gene nodes, in node order (pad / padding nodes excluded)."""
        return list(self._genes)

    @property
    def pad_token(self) -> str | None:
        """Pad token name when the graph was made for a GeneVocabulary, else ``None``."""
        return self._pad_token

    @property
    def n_nodes(self) -> int:
        """Number of nodes (genes + padding nodes)."""
        return self._n_nodes

    @property
    def n_edges(self) -> int:
        """Number of directed edges (self loops included)."""
        return int(self._edge_index.shape[1])

    @property
    def edge_index(self) -> torch.Tensor:
        """Edges, ``torch.long`` ``(2, n_edges)``; row 0 = source, row 1 = target (PyG)."""
        return self._edge_index

    @property
    def edge_weight(self) -> torch.Tensor:
        """``torch.float32`` ``(n_edges,)`` edge weights (Jaccard indices)."""
        return self._edge_weight

    @property
    def annotated(self) -> np.ndarray:
        """Whether each gene had GO annotations when the graph was built (bool array)."""
        return self._annotated.copy()

    @property
    def n_annotated(self) -> int:
        """Number of genes with annotations."""
        return int(self._annotated.sum())

    def in_degree(self) -> np.ndarray:
        """Number of incoming edges of each node (self loop included).

        Returns
        -------
        ``int64`` array ``(n_nodes,)``.
        """
        return np.bincount(self._edge_index[1].numpy(), minlength=self._n_nodes)

    # ------------------------------------------------------------------ matrices
    def adjacency(self) -> sp.csr_array:
        """Weighted adjacency, rows = targets: ``A[t, s]`` = weight of the edge ``s -> t``.

        Returns
        -------
        ``scipy.sparse.csr_array`` ``(n_nodes, n_nodes)``; ``A @ X`` sums each node's incoming
        messages.
        """
        src, dst = self._edge_index.numpy()
        return sp.csr_array(
            (self._edge_weight.numpy(), (dst, src)), shape=(self._n_nodes, self._n_nodes)
        )

    def normalized_adjacency(
        self, kind: Literal["scipy", "torch"] = "scipy"
    ) -> sp.csr_array | torch.Tensor:
        """GCN-normalised adjacency as used by scLong's ``SGConv(K=1, add_self_loops=False)``.

        ``M[t, s] = w(s -> t) / sqrt(d(s) d(t))`` with ``d`` = weighted in-degree (sum of
        incoming weights); no self loops are added (the graph has its own, weight 1); nodes
        without edges have zero rows. ``M @ X`` equals PyG's propagation with
        ``gcn_norm(edge_index, edge_weight, add_self_loops=False)``.

        Parameters
        ----------
        kind
            ``'scipy'`` (``csr_array``) or ``'torch'`` (sparse CSR tensor, float32).

        Returns
        -------
        The ``(n_nodes, n_nodes)`` matrix.
        """
        src, dst = self._edge_index.numpy()
        weight = self._edge_weight.numpy().astype(np.float32)
        degree = np.bincount(dst, weights=weight, minlength=self._n_nodes).astype(np.float32)
        with np.errstate(divide="ignore"):
            inv_sqrt = np.where(degree > 0, degree**-0.5, 0.0).astype(np.float32)
        values = inv_sqrt[src] * weight * inv_sqrt[dst]
        matrix = sp.csr_array((values, (dst, src)), shape=(self._n_nodes, self._n_nodes))
        if kind == "scipy":
            return matrix
        if kind == "torch":
            with warnings.catch_warnings():  # "sparse CSR support is in beta"
                warnings.simplefilter("ignore", UserWarning)
                return torch.sparse_csr_tensor(
                    torch.from_numpy(matrix.indptr.astype(np.int64)),
                    torch.from_numpy(matrix.indices.astype(np.int64)),
                    torch.from_numpy(matrix.data.astype(np.float32)),
                    size=matrix.shape,
                )
        raise ValueError(f"kind must be 'scipy' or 'torch', not {kind!r}.")

    # ------------------------------------------------------------------ re-ordering
    def reindex(self, genes: Sequence[str] | Any, n_nodes: int | None = None) -> GeneGraph:
        """The same graph over another gene order (e.g. a model's vocabulary).

        Edges whose two genes are both in ``genes`` are kept with their weights; genes not in
        this graph become isolated nodes. Per-target edge selection is not redone: a target
        may keep fewer than ``max_neighbors + 1`` edges if some sources are missing (rebuild
        with :meth:`from_annotations` for the exact graph over the new genes).

        Parameters
        ----------
        genes
            New node order: gene ids, or a GeneVocabulary (adds its pad node).
        n_nodes
            Number of nodes of the result (default ``len(genes)``, + 1 for a GeneVocabulary).

        Returns
        -------
        The re-indexed graph; edges sorted by target, then source.
        """
        new_list, _pad = _gene_list(genes)
        new_pos = {g: i for i, g in enumerate(new_list)}
        mapping = np.full(self._n_nodes, -1, dtype=np.int64)
        for i, g in enumerate(self._genes):
            mapping[i] = new_pos.get(g, -1)
        src, dst = mapping[self._edge_index.numpy()]
        keep = (src >= 0) & (dst >= 0)
        src, dst, weight = src[keep], dst[keep], self._edge_weight.numpy()[keep]
        order = np.lexsort((src, dst))
        annotated = np.zeros(len(new_list), dtype=bool)
        old = mapping[: len(self._genes)]
        annotated[old[(old >= 0) & self._annotated]] = True
        return GeneGraph(
            genes,
            np.stack([src[order], dst[order]]),
            weight[order],
            n_nodes=n_nodes,
            annotated=annotated,
            params={**self.params, "reindexed_from": len(self._genes)},
        )

    def subgraph(self, genes: Sequence[str]) -> GeneGraph:
        """The graph restricted to some of its genes, in this graph's order.

        Parameters
        ----------
        genes
            Genes to keep (ids not in the graph are ignored).

        Returns
        -------
        The induced subgraph (no padding nodes).
        """
        wanted = set(_gene_list(genes)[0])
        return self.reindex([g for g in self._genes if g in wanted])

    # ------------------------------------------------------------------ persistence
    def save(self, path: PathLike) -> None:
        """Write the graph to a compressed ``.npz`` file (no pickle).

        Parameters
        ----------
        path
            Output file.
        """
        meta = {
            "format": _FORMAT,
            "version": 1,
            "n_nodes": self._n_nodes,
            "pad_token": self._pad_token,
            "params": self.params,
        }
        with Path(path).open("wb") as handle:
            np.savez_compressed(
                handle,
                genes=np.asarray(self._genes, dtype=str),
                edge_index=self._edge_index.numpy(),
                edge_weight=self._edge_weight.numpy(),
                annotated=self._annotated,
                meta=np.asarray(json.dumps(meta)),
            )

    @classmethod
    def load(cls, path: PathLike) -> GeneGraph:
        """Read a graph written by :meth:`save`.

        Parameters
        ----------
        path
            The ``.npz`` file.

        Returns
        -------
        The graph.
        """
        with np.load(path, allow_pickle=False) as data:
            missing = {"genes", "edge_index", "edge_weight", "meta"} - set(data.files)
            if missing:
                raise ValueError(f"{path} is not a saved GeneGraph (lacks {sorted(missing)}).")
            meta = json.loads(str(data["meta"]))
            if meta.get("format") != _FORMAT:
                raise ValueError(
                    f"{path} is not a saved GeneGraph (format {meta.get('format')!r})."
                )
            genes = [str(g) for g in data["genes"]]
            graph = cls(
                genes,
                data["edge_index"],
                data["edge_weight"],
                n_nodes=meta["n_nodes"],
                annotated=data["annotated"] if "annotated" in data.files else None,
                params=meta.get("params"),
            )
        graph._pad_token = meta.get("pad_token")
        return graph

    # ------------------------------------------------------------------ reporting
    def summary(self) -> str:
        """Return a readable description: genes, annotated genes, edges, degree quantiles.

        Returns
        -------
        A multi-line string.
        """
        degree = self.in_degree()[: len(self._genes)]
        src, dst = self._edge_index.numpy()
        n_self = int((src == dst).sum())
        weight = self._edge_weight.numpy()
        q = (0, 0.25, 0.5, 0.75, 1)
        deg_annot = degree[self._annotated] if self.n_annotated else np.zeros(1)
        off = weight[src != dst] if self.n_edges > n_self else np.zeros(1)
        pad = f" + pad {self._pad_token!r}" if self._pad_token is not None else ""
        extra = self._n_nodes - len(self._genes)
        lines = [
            f"GeneGraph: {len(self._genes):,} genes{pad} ({self._n_nodes:,} nodes"
            + (f", {extra} padding" if extra else "")
            + ")",
            f"  annotated genes: {self.n_annotated:,} "
            f"({self.n_annotated / max(len(self._genes), 1):.1%}); isolated nodes: "
            f"{int((self.in_degree() == 0).sum()):,}",
            f"  edges: {self.n_edges:,} ({n_self:,} self loops, "
            f"{self.n_edges - n_self:,} between genes)",
            "  in-degree of annotated genes (min/25%/50%/75%/max): "
            + "/".join(f"{np.quantile(deg_annot, x):g}" for x in q),
            "  weight of non-self edges (min/25%/50%/75%/max): "
            + "/".join(f"{np.quantile(off, x):.3f}" for x in q),
        ]
        if self.params:
            lines.append("  params: " + ", ".join(f"{k}={v}" for k, v in self.params.items()))
        return "\n".join(lines)

    def __repr__(self) -> str:
        return (
            f"GeneGraph({len(self._genes)} genes, {self._n_nodes} nodes, "
            f"{self.n_annotated} annotated, {self.n_edges} edges)"
        )

    def equals(self, other: GeneGraph, atol: float = 0.0) -> bool:
        """Whether two graphs have the same nodes, edges and weights (edge order ignored).

        Parameters
        ----------
        other
            Another graph.
        atol
            Absolute tolerance on the weights.

        Returns
        -------
        ``True`` when equal.
        """
        if self._genes != other._genes or self._n_nodes != other._n_nodes:
            return False
        if self.n_edges != other.n_edges:
            return False

        def canonical(g: GeneGraph) -> tuple[np.ndarray, np.ndarray]:
            src, dst = g._edge_index.numpy()
            order = np.lexsort((src, dst))
            return np.stack([src[order], dst[order]]), g._edge_weight.numpy()[order]

        (ia, wa), (ib, wb) = canonical(self), canonical(other)
        return bool(np.array_equal(ia, ib) and np.allclose(wa, wb, rtol=0, atol=atol))


def _jaccard_top_k(
    term_sets: Sequence[set[str]], threshold: float, k: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Jaccard graph over annotated genes; keep each target's ``k`` strongest incoming edges.

    Returns (source, target, weight) as positions into ``term_sets``, sorted by target then
    source. Ties at the k-th place go to the lower source position. Intersections come from a
    sparse (genes x terms) @ dense (terms x block) product, one block of targets at a time;
    Jaccard indices are computed in float64 (as the original) for the candidate pairs only.
    """
    m = len(term_sets)
    term_ids: dict[str, int] = {}
    rows, cols = [], []
    for i, terms in enumerate(term_sets):
        for t in terms:
            rows.append(i)
            cols.append(term_ids.setdefault(t, len(term_ids)))
    incidence = sp.csr_array(
        (np.ones(len(rows), dtype=np.float32), (rows, cols)), shape=(m, len(term_ids))
    )
    sizes = np.diff(incidence.indptr).astype(np.float64)  # terms per gene (sets: no repeats)
    # terms of a single gene only add to that gene's size, not to any intersection
    shared = np.bincount(incidence.indices, minlength=incidence.shape[1]) > 1
    incidence = incidence[:, np.flatnonzero(shared)].tocsr()
    incidence.sort_indices()
    with warnings.catch_warnings():  # "sparse CSR support is in beta"
        warnings.simplefilter("ignore", UserWarning)
        product = torch.sparse_csr_tensor(
            torch.from_numpy(incidence.indptr.astype(np.int64)),
            torch.from_numpy(incidence.indices.astype(np.int64)),
            torch.from_numpy(incidence.data.astype(np.float32)),
            size=incidence.shape,
        )
    sizes32 = torch.from_numpy(sizes.astype(np.float32))
    thr32 = float(np.float32(threshold))
    kk = min(k, m)

    block = max(1, _BLOCK_ENTRIES // max(m, 1))
    sources, targets, weights = [], [], []
    for start in range(0, m, block):
        stop = min(start + block, m)
        dense = torch.from_numpy(incidence[start:stop].T.toarray())  # (terms, block)
        inter = (product @ dense).T.contiguous()  # (block, m): |A_t & A_s|, exact integers
        local = torch.arange(stop - start)
        inter[local, local + start] = sizes32[start:stop]  # self: all terms, shared or not
        # float32 Jaccard, correctly rounded: rounding is monotonic, so the k-th largest float32
        # value is the rounded k-th largest exact value and every exact top-k pair has a float32
        # value >= it; candidates are then re-checked exactly in float64 (ties included)
        jaccard32 = sizes32[None, :] - inter
        jaccard32 += sizes32[start:stop, None]  # union
        torch.div(inter, jaccard32, out=jaccard32)
        kth = torch.topk(jaccard32, kk, dim=1, sorted=False).values.min(dim=1).values
        candidates = jaccard32 >= kth.clamp(min=thr32)[:, None]
        t_local, s = (x.numpy() for x in candidates.nonzero(as_tuple=True))
        t = t_local + start
        common = inter[t_local, s].numpy().astype(np.float64)
        jaccard = common / (sizes[t] + sizes[s] - common)  # exact float64, as the original
        ok = jaccard > threshold
        t, s, jaccard = t[ok], s[ok], jaccard[ok]
        # per target: strongest first, ties by source position; keep the first k
        order = np.lexsort((s, -jaccard, t))
        t, s, jaccard = t[order], s[order], jaccard[order]
        first = np.flatnonzero(np.r_[True, t[1:] != t[:-1]])
        rank = np.arange(len(t)) - np.repeat(first, np.diff(np.r_[first, len(t)]))
        keep = rank < k
        t, s, jaccard = t[keep], s[keep], jaccard[keep]
        order = np.lexsort((s, t))
        sources.append(s[order])
        targets.append(t[order])
        weights.append(jaccard[order].astype(np.float32))
    return (
        np.concatenate(sources).astype(np.int64),
        np.concatenate(targets).astype(np.int64),
        np.concatenate(weights),
    )
