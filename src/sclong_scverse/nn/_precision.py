"""Running a network whose weights are held in bfloat16: natively, or widened to float32.

A network loaded with ``dtype=torch.bfloat16`` holds its matrices in bfloat16 (half the memory).
Where the hardware has bfloat16 matrix instructions (GPUs from Ampere on; CPUs with AVX-512
BF16 or AMX), running it in bfloat16 autocast is the fast way. Where it has not, bfloat16 matrix
products are emulated and several times slower than float32 (3.4x for the ``bench`` preset and
5.1x for the 1B model on a 2-core Xeon without AVX-512 BF16, ``benchmarks/bench_1b.py``); there
:func:`widened_weights` runs the network in float32 while keeping the weights in bfloat16: each
block of the network (an attention or feed-forward layer of the 1B model) has its bfloat16
tensors widened to float32 just before its ``forward`` and the held ones put back right after,
so the extra memory is one block's weights in float32 at a time. The result is exactly the
float32 network evaluated at the bfloat16-rounded weights.
"""

from __future__ import annotations

import contextlib
import functools
import platform
import sys
from collections.abc import Iterator

import torch

#: CPU flags (``/proc/cpuinfo``) of bfloat16 matrix instructions
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")


@functools.cache
def cpu_bf16_flags() -> tuple[str, ...]:
    """The bfloat16 matrix instructions this CPU reports (Linux ``/proc/cpuinfo``).

    x86: ``avx512_bf16``, ``amx_bf16``; ARM: ``bf16``. Empty where none is reported or the
    platform does not say (macOS, Windows).
    """
    if not sys.platform.startswith("linux"):
        return ()
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                key, _, value = line.partition(":")
                if key.strip() in ("flags", "Features"):
                    flags = set(value.split())
                    wanted = ("bf16",) if platform.machine() in ("aarch64", "arm64") else ()
                    return tuple(f for f in BF16_CPU_FLAGS + wanted if f in flags)
    except OSError:
        pass
    return ()


def native_bf16(device: torch.device | str) -> bool:
    """Whether ``device`` runs bfloat16 matrix products natively (not emulated)."""
    device = torch.device(device)
    if device.type == "cuda":
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    if device.type == "cpu":
        return bool(cpu_bf16_flags())
    return device.type in ("xpu", "mps")


#: widen a whole submodule at once when its bfloat16 tensors take at most this many bytes widened
WIDEN_BLOCK_BYTES = 256 * 2**20


def _own_bf16(module: torch.nn.Module) -> list[tuple[torch.nn.Module, str, bool]]:
    """``(module, name, is_parameter)`` of the bfloat16 tensors ``module`` holds itself."""
    found = [(module, n, True) for n, p in module._parameters.items() if _is_bf16(p)]
    return found + [(module, n, False) for n, b in module._buffers.items() if _is_bf16(b)]


def _is_bf16(tensor: torch.Tensor | None) -> bool:
    return tensor is not None and tensor.dtype == torch.bfloat16


def _widening_blocks(
    module: torch.nn.Module, budget: int, itemsize: int
) -> list[tuple[torch.nn.Module, list[tuple[torch.nn.Module, str, bool]]]]:
    """Where to widen: the largest submodules whose bfloat16 tensors fit ``budget`` widened.

    A submodule that fits is widened whole when its ``forward`` starts (so a module that reads
    its children's weights directly, like the streamed FAVOR+ attention, sees them widened);
    one that does not has only its own tensors widened, and its children are looked at in turn.
    """
    tensors = [t for sub in module.modules() for t in _own_bf16(sub)]
    if not tensors:
        return []
    size = sum(
        (sub._parameters[n] if is_p else sub._buffers[n]).numel() for sub, n, is_p in tensors
    )
    if size * itemsize <= budget:
        return [(module, tensors)]
    own = _own_bf16(module)
    blocks = [(module, own)] if own else []
    for child in module.children():
        blocks += _widening_blocks(child, budget, itemsize)
    return blocks


def _widen(_block, _inputs, *, tensors, held: dict, dtype: torch.dtype) -> None:
    """Forward pre-hook: keep the held tensors in ``held`` and put widened copies in place."""
    with torch.inference_mode():  # copies for this forward only, never trained
        for index, (sub, name, is_parameter) in enumerate(tensors):
            if is_parameter:
                parameter = sub._parameters[name]
                held[index] = parameter.data
                parameter.data = parameter.data.to(dtype)
            else:
                held[index] = sub._buffers[name]
                sub._buffers[name] = held[index].to(dtype)


def _restore(_block, _inputs, _output, *, tensors, held: dict) -> None:
    """Forward hook (also on errors): put the held tensors, the same objects, back."""
    for index, (sub, name, is_parameter) in enumerate(tensors):
        if index not in held:
            continue
        if is_parameter:
            sub._parameters[name].data = held.pop(index)
        else:
            sub._buffers[name] = held.pop(index)


@contextlib.contextmanager
def widened_weights(
    module: torch.nn.Module, dtype: torch.dtype = torch.float32, budget: int = WIDEN_BLOCK_BYTES
) -> Iterator[torch.nn.Module]:
    """Run ``module``'s bfloat16-held weights in ``dtype``, one block of submodules at a time.

    Inside the context, the largest submodules whose bfloat16 parameters and buffers take at
    most ``budget`` bytes in ``dtype`` (an attention or feed-forward block of the 1B network)
    have them widened to ``dtype`` when their ``forward`` starts, and the held tensors (the
    very same objects, nothing rounded again) restored when it ends, also when it raises. A
    larger module has only the tensors it holds itself widened that way. Outside a forward,
    and after the context, the module holds exactly what it held before.

    A weight read by a module above its block without calling the block's ``forward`` would
    meet float32 inputs in bfloat16: PyTorch then raises a dtype error (never a silent result).
    The widened copies are inference tensors (:func:`torch.inference_mode`): this is for
    inference; training needs float32-held weights.
    """
    itemsize = torch.empty(0, dtype=dtype).element_size()
    handles = []
    for block, tensors in _widening_blocks(module, budget, itemsize):
        held: dict[int, torch.Tensor] = {}
        widen = functools.partial(_widen, tensors=tensors, held=held, dtype=dtype)
        restore = functools.partial(_restore, tensors=tensors, held=held)
        handles.append(block.register_forward_pre_hook(widen))
        handles.append(block.register_forward_hook(restore, always_call=True))
    try:
        yield module
    finally:
        for handle in handles:
            handle.remove()
