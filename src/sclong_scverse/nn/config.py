"""Sizes and options of the scLong network."""

from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import dataclass
from typing import Any, Literal

from ..errors import ScLongInputError

AttentionMode = Literal["faithful", "per_cell"]

#: The whole-number fields of :class:`ScLongConfig` and their allowed ranges: wide enough for
#: any real model (the 1B model: dim 200, large_dim 1280, 42 layers, 27,874 genes), narrow
#: enough that a damaged or crafted configuration is refused before memory is allocated.
_SIZE_BOUNDS: dict[str, tuple[int, int]] = {
    "n_genes": (1, 1_000_000),
    "dim": (1, 65_536),
    "top_seq_len": (1, 1_000_000),
    "large_dim": (1, 65_536),
    "large_depth": (1, 1_024),
    "large_heads": (1, 1_024),
    "large_dim_head": (1, 65_536),
    "mini_depth": (1, 1_024),
    "mini_heads": (1, 1_024),
    "mini_dim_head": (1, 65_536),
    "decoder_depth": (1, 1_024),
    "decoder_heads": (1, 1_024),
    "decoder_dim_head": (1, 65_536),
    "value_hidden_dim": (1, 65_536),
    "ff_mult": (1, 64),
    "nb_features": (1, 65_536),
    "go_num_layers": (0, 64),
}


def _sizes(
    dim: int,
    top_seq_len: int,
    large: tuple[int, int, int, int],
    mini: tuple[int, int, int],
    decoder: tuple[int, int, int],
    **options: Any,
) -> dict[str, Any]:
    """A preset's sizes.

    ``large``: the large encoder's (width, layers, heads, head size); ``mini`` and ``decoder``:
    (layers, heads, head size).
    """
    sizes = dict(dim=dim, top_seq_len=top_seq_len, **options)
    for part, values in (("large", large), ("mini", mini), ("decoder", decoder)):
        names = ("dim", "depth", "heads", "dim_head")[-len(values) :]  # mini, decoder: no dim
        sizes.update({f"{part}_{n}": v for n, v in zip(names, values, strict=True)})
    return sizes


_PRESETS: dict[str, dict[str, Any]] = {
    # The official scLong release (Bai et al. 2026): 1,006,086,461 parameters on 27,874 genes.
    "1b": _sizes(200, 4096, (1280, 42, 32, 64), (2, 8, 64), (2, 8, 64), n_genes=27874),
    # The benchmark configuration of issue #2: official but for a 2-layer, 256-wide large encoder.
    "bench": _sizes(200, 4096, (256, 2, 4, 64), (2, 8, 64), (2, 8, 64), n_genes=27874),
    # Pretrains on a 2-core CPU in minutes (a few thousand cells, the whole vocabulary of the data).
    "tiny": _sizes(32, 512, (64, 2, 4, 16), (1, 2, 16), (1, 2, 16)),
    # A middle size, for a single GPU or a patient CPU.
    "small": _sizes(64, 1024, (256, 4, 4, 32), (2, 4, 16), (2, 4, 16)),
}


@dataclass
class ScLongConfig:
    """All sizes and options of :class:`~sclong_scverse.nn.ScLongNetwork`.

    The names follow the scLong article; the official constructor arguments they correspond
    to are given in brackets.

    Parameters
    ----------
    n_genes
        Size of the gene vocabulary, without the trailing pad token. The network reads
        ``n_genes + 1`` values per cell (``max_seq_len`` in the original). ``None`` until the
        vocabulary is known (a preset for user data leaves it open).
    dim
        Width of tokens, gene embeddings, mini encoder and decoder (``base_dim``).
    top_seq_len
        Number of most expressed genes routed to the large encoder (``top_seq_len``).
    large_dim, large_depth, large_heads, large_dim_head
        Width, layers, heads and head size of the large Performer (``large_dim``,
        ``large_enc_depth``, ``large_enc_heads``, ``large_enc_dim_head``).
    mini_depth, mini_heads, mini_dim_head
        Layers, heads and head size of the mini Performer over the remaining genes.
    decoder_depth, decoder_heads, decoder_dim_head
        Layers, heads and head size of the full-length decoder Performer.
    value_hidden_dim
        Hidden width of the value MLP ``Linear(1, h) -> ReLU -> Linear(h, dim)`` (50).
    ff_mult
        Feed-forward expansion of every Performer layer (4).
    nb_features
        FAVOR+ random features per head; ``None`` gives the original ``int(h * ln h)`` for head
        size ``h``.
    go_num_layers
        Number of ``SGConv`` layers applied to the GO gene table (``go_num_layers``).
    mask_threshold
        Input values ``<= mask_threshold`` are mask tokens (``mask_token_thres``, -1).
    mask_value
        The value written for masked positions during pretraining (the original uses -10).
    mask_max_norm
        ``max_norm`` of the mask-vector embedding (1, as ``nn.Embedding(1, d, max_norm=1)``).
    attention_mode
        ``"faithful"`` (default): the original's FAVOR+ key stabiliser, one maximum over the
        whole batch, and ``torch.topk`` routing. Reproduces the original's numbers, but a cell's
        output moves slightly (about 1e-3) with its batch-mates and ties at the top-k boundary
        follow ``torch.topk``'s order. ``"per_cell"``: the stabiliser is a maximum per cell
        and head (as in performer-pytorch 1.1.4) and ties at the boundary go to the gene that
        comes first in the vocabulary, so a cell's output depends on that cell only.
    low_expression_branch
        ``True`` (default): scLong as published, every gene enters; the ``top_seq_len`` most
        expressed through the large encoder, all others through the mini encoder, and the
        decoder runs over the full length. ``False``: the article's ablation *without the
        low-expression branch*: only the ``top_seq_len`` most expressed genes of each cell
        enter (no mini encoder is built), the decoder sees their encodings alone (a sequence of
        ``top_seq_len`` tokens) and predicts only them; see
        :meth:`~sclong_scverse.nn.ScLongNetwork.forward` for the outputs at the other positions
        and :class:`~sclong_scverse.module.ScLongModule` for how masked genes are routed.
        Configs saved without this field load as ``True``.
    """

    n_genes: int | None = None
    dim: int = 200
    top_seq_len: int = 4096
    large_dim: int = 1280
    large_depth: int = 42
    large_heads: int = 32
    large_dim_head: int = 64
    mini_depth: int = 2
    mini_heads: int = 8
    mini_dim_head: int = 64
    decoder_depth: int = 2
    decoder_heads: int = 8
    decoder_dim_head: int = 64
    value_hidden_dim: int = 50
    ff_mult: int = 4
    nb_features: int | None = None
    go_num_layers: int = 1
    mask_threshold: float = -1.0
    mask_value: float = -10.0
    mask_max_norm: float | None = 1.0
    attention_mode: AttentionMode = "faithful"
    low_expression_branch: bool = True

    def __post_init__(self) -> None:
        for name, (low, high) in _SIZE_BOUNDS.items():
            value = getattr(self, name)
            if value is None and name in ("n_genes", "nb_features"):
                continue
            if (
                isinstance(value, bool)
                or not isinstance(value, numbers.Integral)
                or not low <= value <= high
            ):
                raise ScLongInputError(
                    f"ScLongConfig.{name} must be a whole number from {low} to {high}, got "
                    f"{value!r} (a saved or edited configuration asks for a network that "
                    "cannot be built)."
                )
            setattr(self, name, int(value))
        for name in ("mask_threshold", "mask_value"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or value != value:
                raise ScLongInputError(f"ScLongConfig.{name} must be a number, got {value!r}.")
        if isinstance(self.low_expression_branch, str) or self.low_expression_branch not in (
            True,
            False,
        ):
            raise ScLongInputError(
                f"low_expression_branch must be True or False, not {self.low_expression_branch!r}."
            )
        self.low_expression_branch = bool(self.low_expression_branch)
        if self.attention_mode not in ("faithful", "per_cell"):
            raise ScLongInputError(
                f"attention_mode must be 'faithful' or 'per_cell', not {self.attention_mode!r}."
            )
        if self.mask_value > self.mask_threshold:
            raise ScLongInputError(
                f"mask_value ({self.mask_value}) must be <= mask_threshold "
                f"({self.mask_threshold}) to be read as a mask token."
            )

    @property
    def n_tokens(self) -> int:
        """Number of values per cell, the vocabulary plus one pad token (``max_seq_len``)."""
        if self.n_genes is None:
            raise ScLongInputError("n_genes is not set: give the vocabulary size to the config.")
        return self.n_genes + 1

    def features_for(self, dim_head: int) -> int:
        """FAVOR+ random features for a head of size ``dim_head``.

        Parameters
        ----------
        dim_head
            Head size.

        Returns
        -------
        ``nb_features`` when set, else the original ``int(dim_head * ln(dim_head))``.
        """
        if self.nb_features is not None:
            return self.nb_features
        return int(dim_head * math.log(dim_head))

    def replace(self, **changes: Any) -> ScLongConfig:
        """Return a copy with some fields changed.

        Parameters
        ----------
        **changes
            New values of fields, e.g. ``attention_mode="per_cell"``.

        Returns
        -------
        The new config (validated); this one is unchanged.
        """
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Plain dictionary of all fields (JSON-serialisable)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ScLongConfig:
        """Build a config from :meth:`to_dict` output; unknown keys raise a clear error.

        Parameters
        ----------
        values
            Field names and values.

        Returns
        -------
        The config.
        """
        if not isinstance(values, dict) or not all(isinstance(key, str) for key in values):
            raise ScLongInputError(
                f"A scLong configuration is a dict of field names and values, got "
                f"{type(values).__name__}."
            )
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ScLongInputError(
                f"Unknown ScLongConfig fields {unknown}; known: {sorted(known)}."
            )
        return cls(**values)

    @classmethod
    def presets(cls) -> list[str]:
        """Names accepted by :meth:`preset`."""
        return sorted(_PRESETS)

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> ScLongConfig:
        """A named configuration.

        Parameters
        ----------
        name
            ``"1b"`` (the official scLong configuration, 27,874 genes), ``"bench"`` (official but
            for a 2-layer, width-256 large encoder), ``"small"``, or ``"tiny"`` (pretrains on a
            laptop CPU in minutes). ``"small"`` and ``"tiny"`` leave ``n_genes`` open.
        **overrides
            Fields to change, e.g. ``n_genes=18000`` or ``attention_mode="per_cell"``.

        Returns
        -------
        The config.
        """
        if name not in _PRESETS:
            raise ScLongInputError(f"Unknown preset {name!r}; choose one of {cls.presets()}.")
        return cls(**{**_PRESETS[name], **overrides})
