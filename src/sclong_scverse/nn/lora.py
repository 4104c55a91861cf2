"""Low-rank adapters (LoRA, Hu et al. 2021) for the attention projections of Performers.

A :class:`LoRALinear` is an :class:`torch.nn.Linear` whose frozen weight ``W`` gets a trainable
low-rank update: ``y = x W^T + b + (alpha / r) * dropout(x) A^T B^T`` with ``A`` ``(r, in)``
(Kaiming-uniform) and ``B`` ``(out, r)`` (zeros), so that a fresh adapter leaves the output
unchanged. The base weight keeps its name (``weight``, ``bias``): the state dict of an adapted
network holds the backbone's keys unchanged plus ``lora_A`` / ``lora_B`` entries, so adapters are
saved and checked apart from the backbone.

We do not use ``peft``: it would pull ``transformers`` and ``accelerate`` into the dependencies
for about a hundred lines of code, and its module matching is written for Hugging Face models.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn

from ..errors import ScLongInputError

#: The projections of :class:`~sclong_scverse.nn.FavorSelfAttention` adapters can wrap.
ATTENTION_PROJECTIONS = ("to_q", "to_k", "to_v", "to_out")


class LoRALinear(nn.Linear):
    """A linear layer with a trainable low-rank update of its (frozen) weight.

    Parameters
    ----------
    in_features, out_features
        Sizes of the layer.
    rank
        Rank ``r`` of the update.
    alpha
        Scale numerator: the update is multiplied by ``alpha / rank``.
    dropout
        Dropout on the adapter's input (training only).
    bias
        Whether the base layer has a bias.
    device, dtype
        Of the parameters.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        rank: int = 8,
        alpha: float = 16.0,
        dropout: float = 0.0,
        bias: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ):
        super().__init__(in_features, out_features, bias=bias, device=device, dtype=dtype)
        if rank < 1:
            raise ScLongInputError(f"LoRA rank must be >= 1, got {rank}.")
        self.rank = int(rank)
        self.alpha = float(alpha)
        self.scaling = self.alpha / self.rank
        self.lora_A = nn.Parameter(torch.empty(rank, in_features, device=device, dtype=dtype))
        self.lora_B = nn.Parameter(torch.zeros(out_features, rank, device=device, dtype=dtype))
        self.lora_dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))

    @classmethod
    def from_linear(
        cls, linear: nn.Linear, rank: int = 8, alpha: float = 16.0, dropout: float = 0.0
    ) -> LoRALinear:
        """Wrap an existing layer: same weight and bias tensors, a zero update.

        Parameters
        ----------
        linear
            The layer to adapt; its parameters are shared (not copied).
        rank, alpha, dropout
            As in :class:`LoRALinear`.

        Returns
        -------
        The adapted layer, on the device and dtype of ``linear``.
        """
        weight = linear.weight
        layer = cls(
            linear.in_features,
            linear.out_features,
            rank=rank,
            alpha=alpha,
            dropout=dropout,
            bias=linear.bias is not None,
            device=weight.device,
            dtype=weight.dtype,
        )
        layer.weight = linear.weight
        if linear.bias is not None:
            layer.bias = linear.bias
        return layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Base output plus the scaled low-rank update.

        Parameters
        ----------
        x
            ``(..., in_features)`` input.

        Returns
        -------
        ``(..., out_features)`` output.
        """
        base = super().forward(x)
        update = self.lora_dropout(x) @ self.lora_A.t().to(x.dtype)
        return base + (update @ self.lora_B.t().to(x.dtype)) * self.scaling

    def merged_weight(self) -> torch.Tensor:
        """The weight with the update folded in, ``W + (alpha / r) B A``."""
        return self.weight + self.scaling * (self.lora_B @ self.lora_A)

    def extra_repr(self) -> str:  # noqa: D102
        return f"{super().extra_repr()}, rank={self.rank}, alpha={self.alpha:g}"


def add_lora(
    module: nn.Module,
    rank: int = 8,
    alpha: float = 16.0,
    dropout: float = 0.0,
    targets: Iterable[str] = ATTENTION_PROJECTIONS,
) -> list[str]:
    """Replace the named linear children of every attention block by :class:`LoRALinear`.

    Every submodule of ``module`` that is a :class:`~sclong_scverse.nn.FavorSelfAttention`
    (any module with those attributes) gets its ``targets`` projections wrapped; the base
    weights are shared, so state-dict keys of the backbone do not change. Modules already
    adapted are left as they are.

    Parameters
    ----------
    module
        A network (e.g. :class:`~sclong_scverse.nn.ScLongNetwork`) or one Performer.
    rank, alpha, dropout
        Adapter settings, see :class:`LoRALinear`.
    targets
        Names of the projections to adapt (default all four: queries, keys, values, output).

    Returns
    -------
    The qualified names of the adapted layers.
    """
    from .performer import FavorSelfAttention

    targets = tuple(targets)
    unknown = sorted(set(targets) - set(ATTENTION_PROJECTIONS))
    if unknown:
        raise ScLongInputError(
            f"Unknown LoRA targets {unknown}; choose from {ATTENTION_PROJECTIONS}."
        )
    adapted = []
    for name, child in list(module.named_modules()):
        if not isinstance(child, FavorSelfAttention):
            continue
        for target in targets:
            linear = getattr(child, target)
            if isinstance(linear, LoRALinear):
                continue
            setattr(child, target, LoRALinear.from_linear(linear, rank, alpha, dropout))
            adapted.append(f"{name}.{target}" if name else target)
    return adapted


def lora_parameters(module: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """The adapter parameters (``lora_A``, ``lora_B``) of ``module``, with their names.

    Parameters
    ----------
    module
        A network with adapters (:func:`add_lora`).

    Returns
    -------
    ``(name, parameter)`` pairs.
    """
    return [
        (name, p)
        for name, p in module.named_parameters()
        if name.rsplit(".", 1)[-1] in ("lora_A", "lora_B")
    ]
