"""Safe reading of model files: allow-list unpicklers, ``weights_only`` torch loads, checksums.

Model weights travel between labs as files, and a pickle can run any code while it is read. Every
loader of this package goes through this module:

- :func:`safe_torch_load` is ``torch.load(..., weights_only=True)``; the only globals it admits
  besides torch's own tensor types are numpy's array, scalar and dtype reconstructors (plain
  data);
- :class:`RestrictedUnpickler` reads plain pickles (the official hyper-parameter ``.pkl``, GO
  annotation ``.pkl``) and refuses any global that is not on its allow-list, naming it;
- :func:`sha256_file`, :func:`sha256_plain` and :func:`non_finite_tensors` verify what was read.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch

from ..errors import UnsafeFileError

PathLike = str | os.PathLike


def _numpy_globals() -> list[Any]:
    """The reconstructors of numpy arrays, scalars and dtypes: plain data, no code."""
    core = getattr(np, "_core", None) or np.core  # numpy 2 / numpy 1
    items: list[Any] = [core.multiarray._reconstruct, core.multiarray.scalar, np.ndarray, np.dtype]
    items += [
        getattr(np.dtypes, name)
        for name in dir(np.dtypes)
        if name.endswith("DType") and isinstance(getattr(np.dtypes, name), type)
    ]
    return items


def _builtin_globals() -> list[Any]:
    return [bytes, set, frozenset]


def safe_torch_load(
    source: PathLike | bytes | IO[bytes],
    *,
    map_location: str | torch.device | None = "cpu",
    allow_numpy: bool = True,
    mmap: bool = False,
) -> Any:
    """``torch.load`` with ``weights_only=True`` and a small allow-list of data-only globals.

    Parameters
    ----------
    source
        A path, the bytes of a torch file, or an open binary file.
    map_location
        Where tensors go (default the CPU, whatever device they were saved on).
    allow_numpy
        Admit numpy arrays, scalars and dtypes (plain data).
    mmap
        Memory-map the file (a path, zip format) instead of reading its tensors: they are read
        from the file when used (``torch.load(mmap=True)``).

    Returns
    -------
    The loaded object.

    Raises
    ------
    UnsafeFileError
        The file refers to a global outside the allow-list (it would run code or build objects
        this package does not expect); nothing of it was executed.
    """
    extra: list[Any] = []
    if allow_numpy:
        extra += _numpy_globals() + _builtin_globals()
    handle = io.BytesIO(source) if isinstance(source, bytes | bytearray) else source
    try:
        with torch.serialization.safe_globals(extra):
            if mmap:
                return torch.load(handle, map_location=map_location, weights_only=True, mmap=True)
            return torch.load(handle, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        name = source if isinstance(source, str | os.PathLike) else "the file"
        detail = _weights_only_detail(str(error))
        if "global" not in detail.lower():  # not a code reference: a damaged or foreign file
            raise pickle.UnpicklingError(f"{name}: {detail}") from None
        raise UnsafeFileError(
            f"{name} was refused: {detail}. Loading it would run code or build objects of "
            "types this package does not allow; nothing in it was run. Only a file of plain "
            "tensors, numbers, strings and arrays is accepted."
        ) from None


_TORCH_ADVICE = re.compile(
    r"weights only load failed|weights_only|trust|arbitrary code|add_safe_globals|safe_globals\(|"
    r"please file an issue|check the documentation|this file can still be loaded|^\(\d\)",
    re.IGNORECASE,
)


def _weights_only_detail(message: str) -> str:
    """The informative part of torch's ``weights_only`` error, on one line.

    torch's text also advises re-running with ``weights_only=False`` or allow-listing the
    global, which would run the file's code: those lines are dropped, never shown.
    """
    text = re.sub(r"\x1b\[[0-9;]*m", "", message).replace("WeightsUnpickler error:", "")
    sentences = [s.strip() for line in text.splitlines() for s in re.split(r"(?<=\.)\s+", line)]
    kept = [s for s in sentences if s and not _TORCH_ADVICE.search(s)]
    detail = " ".join("; ".join(kept).split()).rstrip(".")
    return detail or "the file holds something other than plain tensors and data"


def _rebuild_from_bytes(data: bytes) -> Any:
    """Stand-in for ``torch.storage._load_from_bytes`` that loads the nested file safely."""
    return safe_torch_load(data, allow_numpy=False)


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that resolves only the globals on an allow-list.

    Parameters
    ----------
    file
        The open binary file.
    allowed
        ``{(module, name): object}``: the globals the pickle may refer to, and what each
        resolves to.
    what
        How to name the file in errors.
    """

    def __init__(self, file: IO[bytes], allowed: Mapping[tuple[str, str], Any], what: str):
        super().__init__(file)
        self._allowed = dict(allowed)
        self._what = what

    def find_class(self, module: str, name: str) -> Any:
        """Resolve ``module.name`` from the allow-list; refuse anything else."""
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise UnsafeFileError(
                f"{self._what} refers to {module}.{name}, which is not allowed in this file "
                f"(allowed: {', '.join(sorted(f'{m}.{n}' for m, n in self._allowed)) or 'none'}); "
                "it was not loaded and nothing in it was run. A genuine file of this kind holds "
                "only plain data."
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        """Refuse persistent ids (plain data pickles have none)."""
        raise UnsafeFileError(f"{self._what} uses persistent ids, which plain data never does.")


#: globals admitted in plain-data pickles (dicts, lists, sets of strings and numbers)
PLAIN_DATA_GLOBALS: dict[tuple[str, str], Any] = {
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "list"): list,
    ("builtins", "dict"): dict,
    ("builtins", "tuple"): tuple,
    ("__builtin__", "set"): set,
    ("__builtin__", "frozenset"): frozenset,
    ("collections", "OrderedDict"): dict,
}

#: globals admitted in the official hyper-parameter pickle: plain data plus tensors
TENSOR_PICKLE_GLOBALS: dict[tuple[str, str], Any] = {
    **PLAIN_DATA_GLOBALS,
    ("collections", "OrderedDict"): __import__("collections").OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
    ("torch._utils", "_rebuild_tensor"): torch._utils._rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): torch._utils._rebuild_parameter,
    ("torch.storage", "_load_from_bytes"): _rebuild_from_bytes,
}


def restricted_load(
    path: PathLike, allowed: Mapping[tuple[str, str], Any], what: str | None = None
) -> Any:
    """Unpickle ``path`` admitting only the globals in ``allowed``.

    Parameters
    ----------
    path
        The pickle file.
    allowed
        ``{(module, name): object}`` the pickle may refer to, e.g. :data:`PLAIN_DATA_GLOBALS`.
    what
        How to name the file in errors (default: its path).

    Returns
    -------
    The unpickled object.

    Raises
    ------
    UnsafeFileError
        The pickle refers to a global outside ``allowed``; nothing was run.
    """
    with Path(path).open("rb") as handle:
        return RestrictedUnpickler(handle, allowed, what or str(path)).load()


def sha256_file(path: PathLike, chunk_bytes: int = 1 << 24) -> str:
    """The hex sha256 of a file, read in chunks (a 4 GB checkpoint never sits in memory)."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        while chunk := handle.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_plain(value: Any) -> str:
    """The hex sha256 of plain data (tensors, arrays, dicts, lists, strings, numbers).

    The digest is of the content, not of a file's bytes: each tensor contributes its dtype,
    shape and raw bytes (read one tensor at a time, on the CPU), each dict its keys in a fixed
    order, each number its exact value. What :func:`safe_torch_load` reads back from a file
    ``torch.save`` wrote has the digest the saved object had.

    Parameters
    ----------
    value
        The object to digest.

    Returns
    -------
    The 64-digit hexadecimal sha256.
    """
    digest = hashlib.sha256()
    _digest_plain(value, digest)
    return digest.hexdigest()


def _digest_plain(value: Any, digest: Any) -> None:
    """Feed the canonical form of ``value`` to ``digest`` (see :func:`sha256_plain`)."""
    if isinstance(value, torch.Tensor):
        flat = value.detach().cpu().contiguous().reshape(-1)
        digest.update(f"T{value.dtype}{tuple(value.shape)}:".encode())
        if flat.numel():
            digest.update(flat.view(torch.uint8).numpy())
    elif isinstance(value, np.ndarray) and value.dtype != object:
        digest.update(f"A{value.dtype.str}{value.shape}:".encode())
        digest.update(np.ascontiguousarray(value).tobytes())
    elif isinstance(value, Mapping):
        items = sorted(value.items(), key=lambda item: (type(item[0]).__name__, repr(item[0])))
        digest.update(f"D{len(items)}:".encode())
        for key, item in items:
            _digest_plain(key, digest)
            _digest_plain(item, digest)
    elif isinstance(value, list | tuple | np.ndarray):
        digest.update(f"L{len(value)}:".encode())
        for item in value:
            _digest_plain(item, digest)
    elif isinstance(value, set | frozenset):
        digest.update(f"S{len(value)}:".encode())
        for item in sorted(value, key=repr):
            _digest_plain(item, digest)
    elif isinstance(value, str):
        data = value.encode("utf-8", "surrogatepass")
        digest.update(f"s{len(data)}:".encode() + data)
    elif isinstance(value, bytes | bytearray):
        digest.update(f"b{len(value)}:".encode() + bytes(value))
    elif isinstance(value, bool | np.bool_):
        digest.update(b"B1" if value else b"B0")
    elif isinstance(value, int | np.integer):
        digest.update(f"i{int(value)};".encode())
    elif isinstance(value, float | np.floating):
        digest.update(f"f{float(value).hex()};".encode())
    elif value is None:
        digest.update(b"N")
    else:  # dtypes, devices and the like: their text is their value
        digest.update(f"o{type(value).__name__}:{value!r};".encode())


def non_finite_tensors(tensors: Mapping[str, Any] | Iterable[tuple[str, Any]]) -> list[str]:
    """Names of floating-point tensors holding NaN or infinite values."""
    items = tensors.items() if isinstance(tensors, Mapping) else tensors
    bad = []
    for name, value in items:
        if isinstance(value, torch.Tensor) and value.is_floating_point():
            if value.device.type == "meta":
                continue
            if not bool(torch.isfinite(value).all()):
                bad.append(name)
    return bad
