"""Read and write the official scLong release files.

An official release has three files:

- the checkpoint ``.pth``: a dict with ``model_state_dict`` (or a bare state dict) in the
  original ``DualEncoderSCFM`` key layout; the gene-identity table is float64;
- the hyper-parameter ``.pkl``: the constructor keyword arguments, including the GO graph
  ``G_go`` (``(2, n_edges)`` token positions) and ``G_go_weight``, and ``device='cuda'``;
- the gene list ``.txt``: one Ensembl id a line; token ``i`` = line ``i``, plus one pad token.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import re
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .._files import existing_file, reading
from ..errors import OfficialFormatError, ScLongError, ScLongInputError, _reason
from ..nn import ScLongConfig, ScLongNetwork
from ._lean import convert_state, held_dtype, load_mapped, resolve_dtype
from ._safe import (
    TENSOR_PICKLE_GLOBALS,
    UnsafeFileError,
    restricted_load,
    sha256_file,
)

PathLike = str | os.PathLike

# official key prefix -> ours (applied in order, first match wins)
_FIXED_KEYS = {
    "token_emb.fc1.": "value_embedding.fc1.",
    "token_emb.fc2.": "value_embedding.fc2.",
    "token_norm.": "token_norm.",
    "mask_emb.": "mask_embedding.",
    "pos_emb.emb.": "gene_embedding.identity.",
    "go_conv.emb.": "gene_embedding.go_table.",
    "base_to_large.": "large_in.",
    "large_in_norm.": "large_in_norm.",
    "large_to_base.": "large_out.",
    "large_to_base_out_norm.": "large_out_norm.",
    "decode_norm.": "decoder_norm.",
    "exp_to_out.": "expression_head.",
}
_PERFORMERS = {"large_encoder", "mini_encoder", "decoder"}
_ATTENTION_PARTS = {
    "norm.": "norm.",
    "fn.to_q.": "to_q.",
    "fn.to_k.": "to_k.",
    "fn.to_v.": "to_v.",
    "fn.to_out.": "to_out.",
    "fn.fast_attention.projection_matrix": "projection_matrix",
}
_FEED_FORWARD_PARTS = {"norm.": "norm.", "fn.fn.w1.": "w1.", "fn.fn.w2.": "w2."}


def _key_rules() -> list[tuple[str, str]]:
    """(official, ours) name prefixes, ``{i}`` a layer number; first match wins.

    A prefix ending in ``.`` takes any rest of the key (kept as it is); any other is a whole
    name.
    """
    rules = list(_FIXED_KEYS.items())
    rules.append(("go_conv.sim_layers.{i}.", "gene_embedding.go_convs.{i}."))
    for encoder in sorted(_PERFORMERS):
        for index, block, parts in (
            ("0", "attention", _ATTENTION_PARTS),
            ("1", "feed_forward", _FEED_FORWARD_PARTS),
        ):
            rules += [
                (
                    f"{encoder}.net.layers.{{i}}.{index}.{official}",
                    f"{encoder}.layers.{{i}}.{block}.{ours}",
                )
                for official, ours in parts.items()
            ]
        rules.append((f"{encoder}.calls_since_last_redraw",) * 2)
    return rules


def _compiled(prefix: str) -> re.Pattern:
    pattern = re.escape(prefix).replace(re.escape("{i}"), r"(?P<i>\d+)")
    return re.compile("^" + pattern + ("" if prefix.endswith(".") else "$"))


_KEY_RULES = [(_compiled(o), o, _compiled(u), u) for o, u in _key_rules()]


def _rename(key: str, to_ours: bool) -> str | None:
    for official_pattern, official, ours_pattern, ours in _KEY_RULES:
        pattern, target = (official_pattern, ours) if to_ours else (ours_pattern, official)
        match = pattern.match(key)
        if match:
            index = match.groupdict().get("i")
            return (target if index is None else target.replace("{i}", index)) + key[match.end() :]
    return None


def official_to_ours(key: str) -> str | None:
    """Map an official state-dict key to this package's name (``None`` if unknown)."""
    return _rename(key, to_ours=True)


def ours_to_official(key: str) -> str | None:
    """Map one of this package's state-dict keys to the official name (``None`` if it has none)."""
    return _rename(key, to_ours=False)


#: the integer constructor arguments of the original ``DualEncoderSCFM``
_INTEGER_HPARAMS = (
    "max_seq_len",
    "top_seq_len",
    "base_dim",
    "mini_enc_depth",
    "mini_enc_heads",
    "mini_enc_dim_head",
    "large_dim",
    "large_enc_depth",
    "large_enc_heads",
    "large_enc_dim_head",
    "dec_depth",
    "dec_heads",
    "dec_dim_head",
    "go_num_layers",
)
#: the constructor arguments of the original ``DualEncoderSCFM`` that this package reproduces
KNOWN_HPARAMS = frozenset(_INTEGER_HPARAMS) | {
    "mask_token_thres",
    "g2v_position_emb",
    "G_go",
    "G_go_weight",
    "device",
    "go_use_gene2vec",
    "gene2vec_file",
}
#: key of this package's record of the hyper-parameters inside checkpoints it writes
RECORD_KEY = "sclong_scverse_hparams"
#: what the messages about each release file ask for instead
_CHECKPOINT_HINT = "give the official scLong checkpoint (.pth) or one that save_official wrote"
_HPARAMS_HINT = "give the official scLong hyper-parameter .pkl of the same release"
_GENES_HINT = "give the official gene list .txt (one Ensembl id a line)"
_WHAT = {"checkpoint": "checkpoint file", "hparams": "hyper-parameter file", "genes": "gene list"}
_HINTS = {"checkpoint": _CHECKPOINT_HINT, "hparams": _HPARAMS_HINT, "genes": _GENES_HINT}


def _from_file(path: PathLike, kind: str) -> contextlib.AbstractContextManager:
    """Report what goes wrong with the content of ``path``, a release file of ``kind``.

    Errors come on one line naming the file; any other than the package's becomes an
    :class:`OfficialFormatError` (:func:`~sclong_scverse.errors.reading`).
    """
    return reading(path, _WHAT[kind], _HINTS[kind], also=(Exception,), error=OfficialFormatError)


def read_hparams(path: PathLike) -> dict[str, Any]:
    """Read the official hyper-parameter ``.pkl`` on any machine (CUDA tensors go to the CPU).

    Parameters
    ----------
    path
        The ``.pkl`` file.

    The file is read with an allow-list unpickler: besides plain data it may refer only to torch's
    tensor rebuild functions and ``collections.OrderedDict`` (nested tensors are read with
    ``torch.load(weights_only=True)``). Anything else is refused before it runs.

    Returns
    -------
    The constructor keyword arguments, with ``G_go`` / ``G_go_weight`` as CPU tensors.

    Raises
    ------
    OfficialFormatError
        Not a pickle (empty, truncated, damaged, another format); a global outside the
        allow-list (named in the message; nothing was run); not a dict of constructor
        arguments.
    ScLongFileNotFound
        No file at ``path`` (a :class:`FileNotFoundError`).
    ScLongFileError
        ``path`` is a folder.
    """
    path = existing_file(path, _WHAT["hparams"], _HPARAMS_HINT)
    try:
        hparams = restricted_load(path, TENSOR_PICKLE_GLOBALS, what=str(path))
    except UnsafeFileError as error:
        raise OfficialFormatError(
            f"{' '.join(str(error).split())} This is not an official scLong hyper-parameter pickle."
        ) from None
    except ScLongError:
        raise
    except Exception as error:  # the restricted unpickler: any failure is a damaged file
        raise OfficialFormatError(
            f"{path} is not an official scLong hyper-parameter pickle ({_reason(error)}); "
            f"{_HPARAMS_HINT}."
        ) from None
    if not isinstance(hparams, Mapping):
        raise OfficialFormatError(
            f"{path} holds a {type(hparams).__name__}, expected the dict of constructor arguments "
            "(keys such as 'max_seq_len', 'top_seq_len', 'base_dim', 'G_go')."
        )
    required = {"max_seq_len", "top_seq_len", "base_dim"}
    with _from_file(path, "hparams"):  # keys of any type, graphs of any value
        missing = sorted(required - set(hparams))
        if missing:
            raise OfficialFormatError(
                f"{path} lacks the hyper-parameters {missing}; found "
                f"{sorted(map(str, hparams))[:20]}."
            )
        hparams = dict(hparams)
        for key in ("G_go", "G_go_weight"):
            if key in hparams and hparams[key] is not None:
                hparams[key] = torch.as_tensor(hparams[key]).cpu()
    return hparams


def read_checkpoint(path: PathLike) -> dict[str, torch.Tensor]:
    """Read the official checkpoint: a dict with ``model_state_dict`` or a bare state dict.

    Parameters
    ----------
    path
        The ``.pth`` file (read on the CPU).

    Returns
    -------
    The state dict in the official key layout (names as in the file, tensors unchanged).

    Raises
    ------
    OfficialFormatError
        The file is not a torch checkpoint (empty, truncated, damaged, another format), refers
        to code or objects outside the allow-list, or holds neither a state dict nor a dict
        with ``model_state_dict``.
    ScLongFileNotFound
        No file at ``path`` (a :class:`FileNotFoundError`).
    ScLongFileError
        ``path`` is a folder.
    """
    return _read_checkpoint_file(path)[0]


def _read_checkpoint_file(
    path: PathLike, mmap: bool = False
) -> tuple[dict[str, torch.Tensor], dict | None, Callable[[torch.Tensor], None]]:
    """A checkpoint's state dict, its hyper-parameter record, and a page-release function.

    The record is this package's (``None`` in official files); the function releases a
    tensor's pages when the file is memory-mapped (:func:`~._lean.load_mapped`).
    """
    path = existing_file(path, _WHAT["checkpoint"], _CHECKPOINT_HINT)
    try:
        checkpoint, release = load_mapped(path, mmap=mmap)
    except UnsafeFileError as error:
        raise OfficialFormatError(" ".join(str(error).split())) from None
    except ScLongError:
        raise
    except Exception as error:  # torch raises several types for non-checkpoint files
        raise OfficialFormatError(
            f"{path} is not a torch checkpoint ({_reason(error)}); {_CHECKPOINT_HINT}."
        ) from None
    record = None
    if isinstance(checkpoint, Mapping) and "model_state_dict" in checkpoint:
        record = checkpoint.get(RECORD_KEY)
        checkpoint = checkpoint["model_state_dict"]
    if not isinstance(checkpoint, Mapping) or not all(
        isinstance(v, torch.Tensor) for v in checkpoint.values()
    ):
        raise OfficialFormatError(
            f"{path} holds neither a state dict nor a dict with 'model_state_dict'."
        )
    return dict(checkpoint), record if isinstance(record, dict) else None, release


def check_hparams(hparams: Mapping[str, Any], where: str = "the hyper-parameters") -> None:
    """Check the official constructor arguments before a network is built from them.

    Every argument must be one this package reproduces (:data:`KNOWN_HPARAMS`), sizes positive
    integers, ``0 < top_seq_len < max_seq_len``, ``mask_token_thres < 0`` (inputs are
    non-negative; values at or below it are mask tokens), ``g2v_position_emb`` true (the only
    gene-embedding layout of the original), and the GO graph a ``(2, n_edges)`` integer tensor
    over token positions with ``n_edges`` finite, non-negative weights.

    Parameters
    ----------
    hparams
        The constructor keyword arguments (:func:`read_hparams`).
    where
        How to name them in errors (e.g. the file's path).

    Raises
    ------
    OfficialFormatError
        The first inconsistency found, named.
    """
    unknown = sorted(set(hparams) - KNOWN_HPARAMS)
    if unknown:
        raise OfficialFormatError(
            f"{where} has arguments this package does not reproduce: {unknown}. The network "
            "built from it would silently differ from the original; this release is not of the "
            f"scLong version this package implements (known arguments: {sorted(KNOWN_HPARAMS)})."
        )
    for key in _INTEGER_HPARAMS:
        if key not in hparams:
            continue
        value = hparams[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise OfficialFormatError(f"{where}: {key} must be a positive integer, got {value!r}.")
    top, length = hparams["top_seq_len"], hparams["max_seq_len"]
    if not top < length:
        raise OfficialFormatError(
            f"{where}: top_seq_len ({top}) must be smaller than max_seq_len ({length})."
        )
    threshold = hparams.get("mask_token_thres", -1)
    if isinstance(threshold, bool) or not isinstance(threshold, int | float) or threshold >= 0:
        raise OfficialFormatError(
            f"{where}: mask_token_thres must be a negative number (inputs are non-negative and "
            f"values at or below it are mask tokens), got {threshold!r}."
        )
    if hparams.get("g2v_position_emb", True) is not True:
        raise OfficialFormatError(
            f"{where}: g2v_position_emb={hparams['g2v_position_emb']!r}; only the original's "
            "gene-identity embedding (True) is implemented."
        )
    edge_index, edge_weight = hparams.get("G_go"), hparams.get("G_go_weight")
    if edge_index is None:
        if edge_weight is not None:
            raise OfficialFormatError(f"{where}: G_go_weight is given without G_go.")
        return
    if (
        not isinstance(edge_index, torch.Tensor)
        or edge_index.dim() != 2
        or edge_index.shape[0] != 2
        or edge_index.is_floating_point()
    ):
        raise OfficialFormatError(
            f"{where}: G_go must be a (2, n_edges) integer tensor, got "
            f"{type(edge_index).__name__} {tuple(getattr(edge_index, 'shape', ()))}."
        )
    if edge_index.numel() and (int(edge_index.min()) < 0 or int(edge_index.max()) >= length):
        raise OfficialFormatError(
            f"{where}: G_go has token positions outside [0, max_seq_len={length})."
        )
    if edge_weight is not None:
        if not isinstance(edge_weight, torch.Tensor) or edge_weight.shape != (edge_index.shape[1],):
            raise OfficialFormatError(
                f"{where}: G_go_weight must hold one weight per G_go edge "
                f"({edge_index.shape[1]}), got {tuple(getattr(edge_weight, 'shape', ()))}."
            )
        weight = edge_weight.double()
        if not bool(torch.isfinite(weight).all()) or bool((weight < 0).any()):
            raise OfficialFormatError(
                f"{where}: G_go_weight holds NaN, infinite or negative weights "
                f"({int((~torch.isfinite(weight)).sum())} non-finite); the GO-GCN would give "
                "NaN outputs. The file is corrupted."
            )


def _plain_hparams(hparams: Mapping[str, Any]) -> dict[str, Any]:
    """The scalar hyper-parameters and a digest of the GO graph (for the record and its check)."""
    import hashlib

    record: dict[str, Any] = {
        k: v for k, v in hparams.items() if isinstance(v, bool | int | float | str)
    }
    record.pop("device", None)  # where it was saved; loading maps to any device
    record.pop("gene2vec_file", None)  # initialisation only
    digest = hashlib.sha256()
    for key in ("G_go", "G_go_weight"):
        value = hparams.get(key)
        if value is not None:
            tensor = torch.as_tensor(value).detach().cpu()
            tensor = tensor.long() if key == "G_go" else tensor.float()
            digest.update(key.encode() + tensor.contiguous().numpy().tobytes())
    record["go_graph_sha256"] = digest.hexdigest()
    return record


def _check_record(
    record: Mapping[str, Any], hparams: Mapping[str, Any], where: str, checkpoint: str = ""
) -> None:
    """Refuse hyper-parameters that differ from the record the checkpoint carries."""
    expected = _plain_hparams(hparams)
    differing = [
        f"{key}: hyper-parameters {expected.get(key)!r}, checkpoint {value!r}"
        for key, value in record.items()
        if expected.get(key) != value
    ]
    if differing:
        raise OfficialFormatError(
            f"{where} disagree with the record in the checkpoint {checkpoint}, which was written "
            f"with other hyper-parameters: {differing[:5]}. Use the .pkl written with this .pth."
        )


def read_genes(path: PathLike) -> list[str]:
    """Read the official gene list: one id a line (the pad token is not listed).

    Parameters
    ----------
    path
        The gene list ``.txt`` (e.g. ``selected_genes_27k.txt``; ``.gz`` accepted).

    Returns
    -------
    The gene ids in token order.

    Raises
    ------
    OfficialFormatError
        The file lists no gene ids, or an id more than once, is not text or is damaged.
    ScLongFileNotFound
        There is no file at ``path`` (a :class:`FileNotFoundError`).
    """
    from ..genes import GeneVocabulary

    try:
        return GeneVocabulary.from_file(path).genes
    except ScLongInputError:  # not a path
        raise
    except ValueError as error:
        raise OfficialFormatError(str(error)) from error


def config_from_hparams(hparams: Mapping[str, Any], **overrides: Any) -> ScLongConfig:
    """Translate the official constructor arguments into a :class:`~sclong_scverse.ScLongConfig`.

    Parameters
    ----------
    hparams
        The official constructor keyword arguments (:func:`read_hparams`); ``max_seq_len``,
        ``top_seq_len`` and ``base_dim`` are required, other sizes default to the official 1B
        values.
    **overrides
        Config fields to set in addition, e.g. ``attention_mode="per_cell"``.

    Returns
    -------
    The config; ``n_genes = max_seq_len - 1``.
    """
    get = hparams.get
    values = dict(
        n_genes=int(hparams["max_seq_len"]) - 1,
        dim=int(hparams["base_dim"]),
        top_seq_len=int(hparams["top_seq_len"]),
        large_dim=int(get("large_dim", 1280)),
        large_depth=int(get("large_enc_depth", 42)),
        large_heads=int(get("large_enc_heads", 32)),
        large_dim_head=int(get("large_enc_dim_head", 64)),
        mini_depth=int(get("mini_enc_depth", 2)),
        mini_heads=int(get("mini_enc_heads", 8)),
        mini_dim_head=int(get("mini_enc_dim_head", 64)),
        decoder_depth=int(get("dec_depth", 2)),
        decoder_heads=int(get("dec_heads", 8)),
        decoder_dim_head=int(get("dec_dim_head", 64)),
        go_num_layers=int(get("go_num_layers", 1)),
        mask_threshold=float(get("mask_token_thres", -1)),
    )
    values.update(overrides)
    return ScLongConfig(**values)


def hparams_from_config(
    config: ScLongConfig, edge_index: torch.Tensor, edge_weight: torch.Tensor
) -> dict[str, Any]:
    """The official constructor arguments for a config and GO graph (``device='cpu'``)."""
    return {
        "max_seq_len": config.n_tokens,
        "top_seq_len": config.top_seq_len,
        "base_dim": config.dim,
        "mini_enc_depth": config.mini_depth,
        "mini_enc_heads": config.mini_heads,
        "mini_enc_dim_head": config.mini_dim_head,
        "large_dim": config.large_dim,
        "large_enc_depth": config.large_depth,
        "large_enc_heads": config.large_heads,
        "large_enc_dim_head": config.large_dim_head,
        "dec_depth": config.decoder_depth,
        "dec_heads": config.decoder_heads,
        "dec_dim_head": config.decoder_dim_head,
        "mask_token_thres": config.mask_threshold,
        "g2v_position_emb": True,
        "G_go": edge_index.detach().cpu().long(),
        "G_go_weight": edge_weight.detach().cpu().float(),
        "go_num_layers": config.go_num_layers,
        "device": "cpu",
        "go_use_gene2vec": True,
    }


def convert_official_state_dict(
    official: Mapping[str, torch.Tensor], network: ScLongNetwork, where: str = "The checkpoint"
) -> dict[str, torch.Tensor]:
    """Rename and cast an official state dict for ``network``; clear errors on mismatch.

    Parameters
    ----------
    official
        The state dict in the official key layout.
    network
        The network it is meant for.
    where
        How to name the state dict in errors (e.g. the checkpoint's path).

    Returns
    -------
    The state dict under ``network``'s names, in its dtypes.
    """
    ours = network.state_dict()
    converted = _matched_state_dict(official, network, where)
    return {k: v.to(ours[k].dtype) for k, v in converted.items()}


def _matched_state_dict(
    official: Mapping[str, torch.Tensor], network: ScLongNetwork, where: str = "The checkpoint"
) -> dict[str, torch.Tensor]:
    """An official state dict under ``network``'s names, names and shapes checked.

    Nothing is cast or read (mapped tensors stay unread); the GO graph entries are
    ``network``'s own.
    """
    ours = network.state_dict()
    graph_keys = {"gene_embedding.edge_index", "gene_embedding.edge_weight"}
    converted: dict[str, torch.Tensor] = {}
    unknown = []
    for key, value in official.items():
        name = official_to_ours(key)
        if name is None or name not in ours:
            unknown.append(key)
            continue
        converted[name] = value
    missing = sorted(
        ours_to_official(k) or k for k in ours if k not in converted and k not in graph_keys
    )
    if unknown or missing:
        raise OfficialFormatError(
            f"{where} does not match the scLong network built from the hyper-parameters: "
            f"unexpected keys {unknown[:10]}{' ...' if len(unknown) > 10 else ''} "
            f"({len(unknown)} in all); missing keys {missing[:10]}"
            f"{' ...' if len(missing) > 10 else ''} ({len(missing)} in all). "
            "Check that the .pth and the .pkl come from the same release."
        )
    wrong_shapes = [
        f"{ours_to_official(k)}: checkpoint {tuple(v.shape)}, expected {tuple(ours[k].shape)}"
        for k, v in converted.items()
        if v.shape != ours[k].shape
    ]
    if wrong_shapes:
        raise OfficialFormatError(
            f"{where}: tensors have the wrong shape for the hyper-parameters "
            f"(and gene list): {wrong_shapes[:10]}. Check that the .pth and the .pkl come from "
            "the same release."
        )
    for key in graph_keys:
        converted[key] = ours[key]
    return converted


@dataclass
class OfficialRelease:
    """An official scLong release loaded into this package.

    Attributes
    ----------
    network
        The :class:`~sclong_scverse.nn.ScLongNetwork` in eval mode.
    genes
        The gene vocabulary (token ``i`` = ``genes[i]``; the pad token follows the last gene), or
        ``None`` when no gene list was given.
    hparams
        The raw hyper-parameters read from the ``.pkl``.
    sha256
        The sha256 of each file read (``"checkpoint"``, ``"hparams"``, ``"genes"``), computed
        while loading.
    verified
        The files whose sha256 was checked against ``expected_sha256``.
    """

    network: ScLongNetwork
    genes: list[str] | None
    hparams: dict[str, Any]
    sha256: dict[str, str] = field(default_factory=dict)
    verified: tuple[str, ...] = ()


def load_official(
    checkpoint: PathLike,
    hparams: PathLike,
    genes: PathLike | None = None,
    *,
    attention_mode: str = "faithful",
    map_location: str | torch.device = "cpu",
    expected_sha256: str | Mapping[str, str] | None = None,
    dtype: torch.dtype | str | None = None,
    mmap: bool = True,
) -> OfficialRelease:
    """Load the official scLong weights, safely and verified.

    Both files are read without running code from them (:func:`read_hparams`,
    :func:`read_checkpoint`). The hyper-parameters are checked (:func:`check_hparams`) and
    cross-checked against every tensor shape of the checkpoint and, for releases written by
    :func:`save_official`, against the record the checkpoint carries (including ``top_seq_len``
    and the GO graph, which shapes do not reveal). Every weight and GO edge weight must be finite.

    Parameters
    ----------
    checkpoint
        The ``.pth`` checkpoint (a dict with ``model_state_dict`` or a bare state dict).
    hparams
        The hyper-parameter ``.pkl`` (GO graph inside; loads on CPU-only machines although the
        official file names ``device='cuda'``).
    genes
        The gene list ``.txt`` (e.g. ``selected_genes_27k.txt``); its length must be
        ``max_seq_len - 1``.
    attention_mode
        ``"faithful"`` (default, reproduces the original's numbers) or ``"per_cell"``; see
        :class:`~sclong_scverse.nn.ScLongConfig`.
    map_location
        Device of the returned network.
    expected_sha256
        The sha256 (hex) of the checkpoint, or ``{"checkpoint": ..., "hparams": ...,
        "genes": ...}`` for any of the three files: a file whose checksum differs is refused
        (e.g. a truncated download or flipped bytes, which loading alone may not reveal).
        Without a checksum for the checkpoint it is loaded unverified, with a
        :class:`UserWarning` that says so and gives its sha256 to pin. The sha256 of every file
        is computed (reading it in 16 MB blocks: one more pass over the checkpoint) and
        returned in :attr:`OfficialRelease.sha256`.
    dtype
        What the weights are held in: ``None`` / ``torch.float32`` (default) or
        ``torch.bfloat16``: half the memory, for inference only (queries then run in bfloat16
        autocast or widened to float32 block by block, ``precision="auto"``; training is
        refused). In bfloat16 the matrices are (every Linear weight, the
        FAVOR+ projections: 99% of the 1B network's weights); the gene-embedding tables, the GO
        convolution and the vectors (LayerNorm weights, biases) stay float32.
    mmap
        Memory-map the checkpoint (``torch.load(mmap=True, weights_only=True)``) and read it
        one tensor at a time, each copied in its held dtype, checked and its pages released
        before the next: peak memory is about the model as held plus one tensor, never an
        extra float32 copy of the whole model. ``False`` reads the whole file first, then
        converts (the same weights, bit for bit; peak about 1.1x the file). Legacy (pre-zip)
        torch files are always read whole.

    Returns
    -------
    :class:`OfficialRelease` with the network in eval mode, its genes, the raw
    hyper-parameters and the files' sha256. The stored random-feature projection matrices are
    loaded, never redrawn.

    Raises
    ------
    OfficialFormatError
        A file that is not what it should be, refers to code outside the allow-list, differs
        from ``expected_sha256``, holds NaN or infinite weights, or disagrees with another.

    Warns
    -----
    UserWarning
        No ``expected_sha256`` for the checkpoint: nothing verified it; the warning names the
        file and its sha256.
    """
    held = resolve_dtype(dtype)
    digests, verified = _verify_checksums(
        expected_sha256, {"checkpoint": checkpoint, "hparams": hparams, "genes": genes}
    )
    params = read_hparams(hparams)
    with _from_file(hparams, "hparams"):
        check_hparams(params, where=str(hparams))
        config = config_from_hparams(params)
    config = config.replace(attention_mode=attention_mode)  # the argument, checked
    with _from_file(hparams, "hparams"), torch.device("meta"):
        # no random initialisation of weights that are loaded anyway
        network = ScLongNetwork(config)
    gene_list = None
    if genes is not None:
        gene_list = read_genes(genes)
        if len(gene_list) != config.n_genes:
            raise OfficialFormatError(
                f"{genes} lists {len(gene_list)} genes but the hyper-parameters expect "
                f"max_seq_len - 1 = {config.n_genes}."
            )
    state, record, release = _read_checkpoint_file(checkpoint, mmap=mmap)
    if record is not None:
        _check_record(record, params, str(hparams), str(checkpoint))
    with _from_file(checkpoint, "checkpoint"):
        matched = _matched_state_dict(state, network, str(checkpoint))  # no value read yet
        del state
        for key in ("gene_embedding.edge_index", "gene_embedding.edge_weight"):
            matched.pop(key)
        # tensor by tensor: held dtype, finite, the mapped pages released (peak: model + 1)
        dtypes = {key: held_dtype(key, value, held) for key, value in matched.items()}
        converted, bad = convert_state(matched, dtypes, release, copy=release.mapped)
        del matched
    if bad:
        raise OfficialFormatError(
            f"{checkpoint} holds NaN or infinite values in {bad[:5]}"
            f"{' ...' if len(bad) > 5 else ''} ({len(bad)} tensors): the file is corrupted or "
            "the training diverged; the network would give NaN outputs."
        )
    edge_index = params.get("G_go")
    if edge_index is None:
        edge_index = torch.zeros(2, 0, dtype=torch.long)
    edge_weight = params.get("G_go_weight")
    if edge_weight is None:
        edge_weight = torch.ones(edge_index.shape[1])
    converted["gene_embedding.edge_index"] = edge_index.long()
    converted["gene_embedding.edge_weight"] = edge_weight.float()
    with _from_file(checkpoint, "checkpoint"):
        network.load_state_dict(converted, assign=True)
    with _from_file(hparams, "hparams"):
        network.gene_embedding.set_graph(edge_index, edge_weight)  # validates the positions
    if "checkpoint" not in verified:  # said once the files are known to load
        warnings.warn(unverified_message(checkpoint, digests["checkpoint"]), UserWarning, 2)
    return OfficialRelease(
        network.to(map_location).eval(), gene_list, params, sha256=digests, verified=verified
    )


def unverified_message(checkpoint: PathLike, digest: str, pin: str | None = None) -> str:
    """The one-line notice that an official checkpoint was loaded without a checksum to check.

    Parameters
    ----------
    checkpoint
        The checkpoint file.
    digest
        Its sha256, as computed while loading.
    pin
        How to pin it (default ``expected_sha256='<digest>'``, the Python argument).

    Returns
    -------
    The notice, naming the file and its sha256.
    """
    pin = pin or f"expected_sha256='{digest}'"
    return (
        f"{checkpoint} was loaded unverified (no expected sha256 was given); its sha256 is "
        f"{digest}. Compare it with the checksum published with the release and pin it with "
        f"{pin} to have it checked."
    )


def _verify_checksums(
    expected: str | Mapping[str, str] | None, paths: Mapping[str, PathLike | None]
) -> tuple[dict[str, str], tuple[str, ...]]:
    """The sha256 of every given file, and the names of those checked against ``expected``.

    Raises
    ------
    ScLongFileNotFound
        A given file does not exist.
    ScLongFileError
        A given path is a folder.
    OfficialFormatError
        A file's sha256 differs from the one expected.
    ValueError
        ``expected`` names a file that is not one of ``paths`` or was not given.
    """
    if isinstance(expected, str):
        expected = {"checkpoint": expected}
    expected = dict(expected or {})
    unknown = sorted(set(expected) - set(paths))
    if unknown:
        raise ScLongInputError(
            f"expected_sha256 keys must be among {sorted(paths)}, got {unknown}."
        )
    for name in expected:
        if paths[name] is None:
            raise ScLongInputError(
                f"expected_sha256 gives a checksum for {name}, but no {name} file."
            )
    digests = {}
    for name, path in paths.items():
        if path is None:
            continue
        path = existing_file(path, _WHAT[name], _HINTS[name])
        with reading(path, _WHAT[name], _HINTS[name]):
            digests[name] = sha256_file(path)
        digest = expected.get(name)
        if digest is not None and digests[name].lower() != str(digest).strip().lower():
            raise OfficialFormatError(
                f"{path} has sha256 {digests[name]}, expected {digest}: the file is corrupted, "
                "incomplete or another release. Download it again."
            )
    return digests, tuple(name for name in paths if name in expected)


def save_official(
    network: ScLongNetwork,
    checkpoint: PathLike,
    hparams: PathLike,
    genes: list[str] | None = None,
    genes_path: PathLike | None = None,
) -> None:
    """Write a network in the official release layout, readable by the original scripts.

    Parameters
    ----------
    network
        The network to write.
    checkpoint
        Destination ``.pth`` (a dict with ``model_state_dict`` and empty optimiser states, the
        identity table in float64 as in the official file, and a record of the scalar
        hyper-parameters and a digest of the GO graph, which :func:`load_official` checks the
        ``.pkl`` against; the original scripts ignore it).
    hparams
        Destination ``.pkl`` of constructor arguments (with ``G_go`` / ``G_go_weight``,
        ``device='cpu'``).
    genes, genes_path
        The vocabulary and where to write it (one id a line), optional.
    """
    if (genes is None) != (genes_path is None):
        raise ValueError("Give both genes and genes_path, or neither.")
    if not network.config.low_expression_branch:
        raise ValueError(
            "A network without the low-expression branch has no mini encoder: the official "
            "layout (DualEncoderSCFM) cannot hold it."
        )
    if genes is not None and len(genes) != network.config.n_genes:
        raise ValueError(f"{len(genes)} genes given for a network of {network.config.n_genes}.")
    state = {}
    for key, value in network.state_dict().items():
        official = ours_to_official(key)
        if official is None:
            continue  # the GO graph lives in the hyper-parameters
        value = value.detach().cpu()
        state[official] = value.double() if official == "pos_emb.emb.weight" else value.clone()
    embedding = network.gene_embedding
    params = hparams_from_config(network.config, embedding.edge_index, embedding.edge_weight)
    torch.save(
        {
            "epoch": "sclong-scverse",
            "model_state_dict": state,
            "optimizer_state_dict": {},
            "scheduler_state_dict": {},
            "scaler_state_dict": {},
            "losses": [],
            RECORD_KEY: _plain_hparams(params),
        },
        checkpoint,
    )
    with open(hparams, "wb") as handle:
        pickle.dump(params, handle)
    if genes is not None:
        Path(genes_path).write_text("\n".join(genes) + "\n")
