"""Lean loading of large checkpoints: memory-mapped, converted tensor by tensor.

A 1B scLong checkpoint holds 4 GB of float32 weights. Read whole with ``torch.load`` and then
converted, it needs the file's size in memory before the model exists, and converting it to
bfloat16 would need both copies at once. Here the file is memory-mapped
(``torch.load(mmap=True, weights_only=True)``: nothing is read yet, no code runs), and each tensor
is copied into memory in the dtype it is held in, checked to be finite, and its pages of the
mapping are released before the next one is read (Linux: ``madvise(MADV_DONTNEED)`` on the
file's private, never written mapping, so a later read would simply read the file again). Peak
memory is the model as it is held plus one tensor.

Which tensors a model loaded with ``dtype=torch.bfloat16`` holds in bfloat16 is
:func:`held_dtype`'s rule: the matrices (two or more dimensions: every Linear weight, the FAVOR+
projection matrices, the mask vector), not the gene-embedding tables and the GO convolution
(which run in float32 outside autocast by design) nor the vectors (LayerNorm weights, biases:
CPU kernels want float32 norms under a bfloat16 input). For the 1B network that is 99% of the
weights; the model takes about half the memory of float32.
"""

from __future__ import annotations

import ctypes
import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from ._safe import non_finite_tensors, safe_torch_load

PathLike = str | os.PathLike

#: the dtypes a model's weights may be held in
HELD_DTYPES = (torch.float32, torch.bfloat16)
_DTYPE_NAMES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
}
_MADV_DONTNEED = 4  # linux/mman.h


def resolve_dtype(dtype: torch.dtype | str | None) -> torch.dtype:
    """The dtype weights are held in: ``None`` -> float32; names like ``"bf16"`` accepted.

    Raises
    ------
    ValueError
        Any dtype other than float32 and bfloat16.
    """
    if dtype is None:
        return torch.float32
    if isinstance(dtype, str):
        name = dtype.lower().removeprefix("torch.")
        if name not in _DTYPE_NAMES:
            raise ValueError(
                f"dtype must be torch.float32 or torch.bfloat16 (or 'float32' / 'bf16'), "
                f"not {dtype!r}."
            )
        return _DTYPE_NAMES[name]
    if dtype not in HELD_DTYPES:
        raise ValueError(
            f"dtype must be torch.float32 (default) or torch.bfloat16 (inference with half the "
            f"memory), not {dtype}. float16 weights are not supported: their range is too small "
            "for scLong's activations; use bfloat16."
        )
    return dtype


def held_dtype(name: str, tensor: torch.Tensor, dtype: torch.dtype) -> torch.dtype:
    """The dtype a state-dict entry is held in when the model is held in ``dtype``.

    Non-floating tensors keep theirs. With ``dtype=torch.bfloat16``: matrices (>= 2
    dimensions) outside the gene embedding are bfloat16; the gene tables, the GO convolution
    and every vector stay float32 (see the module notes). Otherwise float32.
    """
    if not tensor.is_floating_point():
        return tensor.dtype
    if dtype == torch.float32:
        return torch.float32
    if tensor.dim() >= 2 and "gene_embedding." not in f".{name}":
        return dtype
    return torch.float32


def weights_dtype(module: torch.nn.Module) -> torch.dtype:
    """``torch.bfloat16`` when any parameter of ``module`` is held in it, else float32."""
    for parameter in module.parameters():
        if parameter.dtype == torch.bfloat16:
            return torch.bfloat16
    return torch.float32


class _PageReleaser:
    """Drops the pages of tensors read from a file's private memory map (Linux; else nothing).

    Only address ranges that lie inside a mapping of that very file (``/proc/self/maps``) are
    released, so memory that is not the file's is never touched.
    """

    def __init__(self, path: Path | None):
        #: whether the tensors are backed by the file's mapping (copy them before keeping them)
        self.mapped = path is not None
        self._ranges: list[tuple[int, int]] = []
        self._madvise = None
        if path is None or not sys.platform.startswith("linux"):
            return
        try:
            target = str(Path(path).resolve())
            with open("/proc/self/maps") as maps:
                for line in maps:
                    parts = line.split(maxsplit=5)
                    if len(parts) == 6 and parts[5].strip() == target:
                        start, end = (int(v, 16) for v in parts[0].split("-"))
                        self._ranges.append((start, end))
            libc = ctypes.CDLL(None, use_errno=True)
            libc.madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
            self._madvise = libc.madvise
            self._page = os.sysconf("SC_PAGE_SIZE")
        except (OSError, AttributeError, ValueError):
            self._ranges, self._madvise = [], None

    def __call__(self, tensor: torch.Tensor) -> None:
        if not self._ranges or self._madvise is None or tensor.device.type != "cpu":
            return
        storage = tensor.untyped_storage()
        start = storage.data_ptr()
        end = start + storage.nbytes()
        start -= start % self._page
        end += -end % self._page
        for low, high in self._ranges:
            if low <= start and end <= high:
                self._madvise(start, end - start, _MADV_DONTNEED)
                return


def load_mapped(path: PathLike, mmap: bool = True) -> tuple[Any, Callable[[torch.Tensor], None]]:
    """Read a torch file safely, memory-mapped when it can be.

    Parameters
    ----------
    path
        The torch file.
    mmap
        Map it (``torch.load(mmap=True, weights_only=True)``): tensors are read from the file
        when used. Files in torch's legacy (pre-zip) format cannot be mapped and are read whole.

    Returns
    -------
    The content, and a function releasing a mapped tensor's pages once it has been copied
    (a no-op when the file is not mapped or not on Linux).
    """
    if mmap:
        try:
            content = safe_torch_load(os.fspath(path), mmap=True)
        except RuntimeError as error:
            if "mmap" not in str(error):
                raise
        else:
            return content, _PageReleaser(Path(path))
    return safe_torch_load(path), _PageReleaser(None)


def convert_state(
    state: Mapping[str, torch.Tensor],
    dtypes: Mapping[str, torch.dtype],
    release: Callable[[torch.Tensor], None],
    copy: bool,
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Each tensor in its held dtype, checked to be finite, its mapped pages released.

    Parameters
    ----------
    state
        Name -> tensor (possibly memory-mapped).
    dtypes
        Name -> the dtype to hold it in.
    release
        Called on each source tensor after it was converted (:func:`load_mapped`).
    copy
        Always copy (the source is a mapping that must not back the model).

    Returns
    -------
    The converted tensors, and the names of those holding NaN or infinite values after the
    conversion (overflow included).
    """
    converted: dict[str, torch.Tensor] = {}
    bad: list[str] = []
    for name, value in state.items():
        held = value.to(dtypes[name], copy=copy)
        release(value)
        if non_finite_tensors({name: held}):
            bad.append(name)
        converted[name] = held
    return converted, bad
