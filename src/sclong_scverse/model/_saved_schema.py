"""The schema of a saved model's files, checked before anything in them is used or allocated.

A saved folder (:mod:`._saving`) holds ``manifest.json`` and ``model.pt``. Safe loading
(``weights_only=True``) guarantees that reading them runs no code; this module guarantees that
what was read has the shape the loaders expect, so that a damaged or edited file is refused in
one line naming it (a :class:`~sclong_scverse.errors.ModelIntegrityError`) instead of failing
deep inside scvi-tools or torch, and that nothing it asks for is built before it is checked:

- ``manifest.json``: at most :data:`MAX_MANIFEST_BYTES`, nested at most a few levels, a dict
  whose ``files`` maps plain file names (no folders) to ``{"sha256": 64 hex digits, ...}``.
- ``model.pt``: a dict with ``model_state_dict`` (names to tensors), ``var_names`` (gene names)
  and ``attr_dict`` (attribute names to values). Attribute names are identifiers ending in
  ``_`` that name no method or property of the model's class (a saved attribute can never
  replace code); ``registry_`` and ``init_params_`` have scvi-tools' structure, and
  ``init_params_`` names only arguments of the class.
- a network configuration is checked by :class:`~sclong_scverse.nn.ScLongConfig` (bounded
  sizes) and the network it describes is built on the meta device (no memory) and its parameters
  compared, shape by shape, with the saved weights before the real one is built.
"""

from __future__ import annotations

import inspect
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import ModelIntegrityError, ScLongInputError

#: Largest ``manifest.json`` read (a real one is a few kB).
MAX_MANIFEST_BYTES = 1 << 20
_SHA256 = re.compile(r"[0-9a-f]{64}")
_MAX_DEPTH = 32


def _depth(value: Any, limit: int = _MAX_DEPTH) -> int:
    """Nesting depth of dicts and lists in ``value`` (stops counting past ``limit``)."""
    deepest, stack = 0, [(value, 0)]
    while stack:
        item, level = stack.pop()
        deepest = max(deepest, level)
        if level > limit:
            break
        if isinstance(item, dict):
            stack.extend((child, level + 1) for child in item.values())
        elif isinstance(item, list | tuple):
            stack.extend((child, level + 1) for child in item)
    return deepest


def read_manifest(path: Path) -> dict:
    """``manifest.json`` read and checked (see the module notes), or a one-line error."""
    try:
        size = path.stat().st_size
    except OSError as error:
        raise ModelIntegrityError(f"cannot read the model manifest {path}: {error}") from None
    if size > MAX_MANIFEST_BYTES:
        raise ModelIntegrityError(
            f"{path} is {size:,} bytes, not a model manifest (at most "
            f"{MAX_MANIFEST_BYTES:,}); the folder was altered or is not a saved model."
        )
    try:
        manifest = json.loads(path.read_bytes().decode("utf-8"))
    except (ValueError, RecursionError) as error:
        reason = "nested too deeply" if isinstance(error, RecursionError) else error
        raise ModelIntegrityError(f"{path} is not a readable model manifest ({reason}).") from None
    problem = _manifest_problem(manifest)
    if problem:
        raise ModelIntegrityError(
            f"{path} is not a valid model manifest: {problem}; the folder was altered or is "
            "not a saved scLong model."
        )
    return manifest


def _manifest_problem(manifest: Any) -> str | None:
    if not isinstance(manifest, dict):
        return f"a JSON object is expected, not a {type(manifest).__name__}"
    if _depth(manifest) > _MAX_DEPTH:
        return "nested too deeply"
    files = manifest.get("files")
    if not isinstance(files, dict):
        return f"'files' must map file names to checksums, not {type(files).__name__}"
    for name, entry in files.items():
        if not name or Path(name).name != name or name in (".", ".."):
            return f"{name!r} is not a plain file name"
        if not isinstance(entry, dict) or not _SHA256.fullmatch(str(entry.get("sha256", ""))):
            return f"the entry of {name!r} has no sha256 (64 hexadecimal digits)"
    return None


def check_saved_content(content: Any, path: Path, cls: type | None = None) -> None:
    """Refuse a ``model.pt`` whose content is not a saved model's (see the module notes).

    Parameters
    ----------
    content
        What :func:`~..io._safe.safe_torch_load` returned (plain data, before conversion).
    path
        The file, for the message.
    cls
        The class it is loaded as: attribute names are checked against its methods and
        ``init_params_`` against its constructor.
    """
    problem = _content_problem(content, cls)
    if problem:
        raise ModelIntegrityError(
            f"{path} is not a valid saved model: {problem}; the file is corrupted or was "
            "edited. Copy it again from its source."
        )


def _content_problem(content: Any, cls: type | None) -> str | None:
    if not isinstance(content, dict) or not {"model_state_dict", "attr_dict"} <= set(content):
        return "expected a dict with the keys model_state_dict, var_names, attr_dict"
    state, attrs = content["model_state_dict"], content["attr_dict"]
    if not isinstance(state, dict) or not all(
        isinstance(key, str) and isinstance(value, torch.Tensor) for key, value in state.items()
    ):
        return "model_state_dict must map parameter names to tensors"
    names = content.get("var_names")
    for genes in names.values() if isinstance(names, dict) else [names]:  # MuData: per modality
        problem = _gene_names_problem(genes)
        if problem:
            return problem
    if not isinstance(attrs, dict):
        return f"attr_dict must be a dict, not {type(attrs).__name__}"
    for name in attrs:
        problem = _attribute_problem(name, cls)
        if problem:
            return problem
    registry = attrs.get("registry_")
    # every model of the package saves its setup registry
    if not isinstance(registry, dict):
        return "registry_ (the AnnData setup) must be a dict"
    if not isinstance(registry.get("model_name", ""), str):
        return "registry_['model_name'] must be a class name"
    setup = registry.get("setup_args")
    if not isinstance(setup, dict) or not all(isinstance(key, str) for key in setup):
        return "registry_['setup_args'] must map argument names to values"
    if registry.get("setup_method_name", "setup_anndata") not in (
        "setup_anndata",
        "setup_mudata",
    ):
        return "registry_['setup_method_name'] must be setup_anndata or setup_mudata"
    init = attrs.get("init_params_")
    if init is not None:
        return _init_params_problem(init, cls)
    return None


def _gene_names_problem(names: Any) -> str | None:
    """Why ``names`` are not a saved model's gene names (unique, non-empty strings), or None."""
    if names is None or isinstance(names, str | bytes) or not hasattr(names, "__len__"):
        return "var_names must be a list of gene names"
    try:
        values = [str(name) for name in names if isinstance(name, str | np.str_)]
    except TypeError:
        values = []
    if len(names) == 0 or len(values) != len(names) or not all(values):
        return "var_names must be a list of non-empty gene names (strings)"
    if len(set(values)) != len(values):
        return "var_names repeat gene names"
    return None


def _attribute_problem(name: Any, cls: type | None) -> str | None:
    if not isinstance(name, str) or not name.isidentifier():
        return f"attribute name {name!r} is not an identifier"
    if not name.endswith("_") or name.startswith("__"):
        return f"attribute name {name!r} is not a saved attribute (ending in '_')"
    if cls is not None:
        static = inspect.getattr_static(cls, name, None)
        if callable(static) or isinstance(static, property | classmethod | staticmethod):
            return f"attribute {name!r} would replace a method of {cls.__name__}"
    return None


def _init_params_problem(init: Any, cls: type | None) -> str | None:
    if not isinstance(init, dict) or not isinstance(init.get("non_kwargs", {}), dict):
        return "init_params_ must be a dict with non_kwargs and kwargs"
    kwargs = init.get("kwargs", {})
    if not isinstance(kwargs, dict) or not all(isinstance(v, dict) for v in kwargs.values()):
        return "init_params_['kwargs'] must map names to dicts"
    names = list(init.get("non_kwargs", {})) + [k for group in kwargs.values() for k in group]
    if not all(isinstance(name, str) for name in names):
        return "init_params_ names must be strings"
    if cls is not None:
        parameters = inspect.signature(cls.__init__).parameters
        takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
        unknown = sorted(set(names) - set(parameters))
        if unknown and not takes_any:
            return f"init_params_ names {unknown[:3]}, which {cls.__name__} does not take"
    return None


def check_network_shapes(
    config: Mapping[str, Any], state: Mapping[str, torch.Tensor], path: Path, prefix: str
) -> None:
    """Refuse a saved network configuration that its weights do not fit, allocating nothing.

    ``config`` is checked by :class:`~sclong_scverse.nn.ScLongConfig` (bounded sizes); the
    network is built on the meta device and every parameter compared with
    ``state[prefix + name]`` (buffers such as the GO graph's edges depend on more than the
    configuration; ``load_state_dict`` checks them after).
    """
    from ..nn import ScLongConfig, ScLongNetwork

    try:
        parsed = ScLongConfig.from_dict(dict(config) if isinstance(config, Mapping) else config)
        with torch.device("meta"):
            network = ScLongNetwork(parsed)
    except ScLongInputError as error:
        raise ModelIntegrityError(
            f"{path} holds an invalid network configuration ({error}); the file is corrupted "
            "or was edited."
        ) from None
    for name, edges in state.items():  # the GO graph: token positions of the network
        if name.endswith("edge_index") and edges.numel():
            low, high = int(edges.min()), int(edges.max())
            if edges.dtype.is_floating_point or low < 0 or high >= parsed.n_tokens:
                raise ModelIntegrityError(
                    f"{path} holds a gene graph ({name}) with positions {low}..{high} outside "
                    f"the network's 0..{parsed.n_tokens - 1}; the file is corrupted or was "
                    "edited."
                )
    for name, expected in network.named_parameters():  # buffers depend on the gene graph
        saved = state.get(prefix + name)
        if saved is not None and tuple(saved.shape) != tuple(expected.shape):
            raise ModelIntegrityError(
                f"The weights in {path} do not fit the configuration saved with them "
                f"({prefix + name}: saved {tuple(saved.shape)}, the configuration needs "
                f"{tuple(expected.shape)}); the file is corrupted or was edited."
            )
