"""Saving and loading scLong models safely: plain-data files, a checksum manifest, verification.

scvi-tools saves a model as one ``model.pt`` pickled with ``torch.save`` (its training history as
pandas data frames) and loads it with ``weights_only=False``, which runs whatever code a crafted
file carries. This module writes the same content as plain data (tensors, numpy arrays, dicts,
lists, strings, numbers), so that it reads back with ``torch.load(weights_only=True)``, and writes
``manifest.json`` beside it: the sha256 of every file, the package, torch and scvi-tools versions
and the network configuration. Loading verifies the manifest and that every weight is finite.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections import defaultdict
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from ..errors import ModelIntegrityError, ScLongError, ScLongFileNotFound, ScLongTypeError, reading
from ..io._safe import UnsafeFileError, non_finite_tensors, safe_torch_load, sha256_file
from ..validation import ScLongInputError
from ._saved_schema import check_saved_content, read_manifest

MODEL_FILE = "model.pt"
MANIFEST_FILE = "manifest.json"
MANIFEST_FORMAT = "sclong-scverse-model/1"

_TAG = "__sclong_plain__"


# ---------------------------------------------------------------------- plain data
def to_plain(value: Any, where: str = "model") -> Any:
    """Turn a model's saved attributes into plain data that ``weights_only`` loading accepts.

    Data frames become tagged dicts of numpy columns (restored by :func:`from_plain`);
    ``defaultdict`` becomes a tagged dict; tensors, numpy arrays and scalars stay as they are.

    Raises
    ------
    TypeError
        A value of a type with no plain form (it would need pickled code to be read back).
    """
    if isinstance(value, torch.Tensor | np.ndarray | str | bytes | bool | int | float | type(None)):
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, pd.DataFrame):
        return {
            _TAG: "DataFrame",
            "index": np.asarray(value.index.to_numpy()),
            "index_name": value.index.name,
            "columns": [str(c) for c in value.columns],
            "values": [np.asarray(value[c].to_numpy()) for c in value.columns],
        }
    if isinstance(value, pd.Index):
        return np.asarray(value.to_numpy())
    if isinstance(value, defaultdict):
        factory = value.default_factory
        if factory not in (dict, list, None):
            raise ScLongTypeError(f"{where}: a defaultdict of {factory} has no plain form.")
        return {
            _TAG: "defaultdict",
            "factory": None if factory is None else factory.__name__,
            "items": {k: to_plain(v, f"{where}/{k}") for k, v in value.items()},
        }
    if isinstance(value, Mapping):
        return {k: to_plain(v, f"{where}/{k}") for k, v in value.items()}
    if isinstance(value, list | tuple):
        items = [to_plain(v, f"{where}[{i}]") for i, v in enumerate(value)]
        return items if isinstance(value, list) else tuple(items)
    raise ScLongTypeError(f"{where}: {type(value).__name__} has no plain form to save safely.")


def from_plain(value: Any) -> Any:
    """Invert :func:`to_plain` (data frames and ``defaultdict`` restored)."""
    if isinstance(value, dict):
        tag = value.get(_TAG)
        if tag == "DataFrame":
            frame = pd.DataFrame(
                dict(zip(value["columns"], value["values"], strict=True)),
                index=pd.Index(value["index"], name=value["index_name"]),
            )
            return frame
        if tag == "defaultdict":
            factory = {"dict": dict, "list": list, None: None}[value["factory"]]
            return defaultdict(factory, {k: from_plain(v) for k, v in value["items"].items()})
        return {k: from_plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [from_plain(v) for v in value]
    if isinstance(value, tuple):
        return tuple(from_plain(v) for v in value)
    return value


# ---------------------------------------------------------------------- manifest
def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("sclong-scverse", "torch", "scvi-tools", "anndata"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "unknown"
    return out


def write_manifest(
    dir_path: str | os.PathLike,
    files: list[str],
    extra: dict | None = None,
    prefix: str | None = None,
) -> Path:
    """Write ``manifest.json`` in ``dir_path``: sha256 and size of ``files``, versions, ``extra``.

    Parameters
    ----------
    dir_path
        The model folder.
    files
        File names inside ``dir_path`` to record.
    extra
        More plain values to record (e.g. the network configuration).
    prefix
        File name prefix of the model (the manifest is ``{prefix}manifest.json``).

    Returns
    -------
    The manifest's path.
    """
    folder = Path(dir_path)
    manifest = {
        "format": MANIFEST_FORMAT,
        "versions": _versions(),
        "files": {
            name: {"sha256": sha256_file(folder / name), "bytes": (folder / name).stat().st_size}
            for name in files
        },
        **(extra or {}),
    }
    path = folder / f"{prefix or ''}{MANIFEST_FILE}"
    _atomic_write_bytes(path, (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode())
    return path


def verify_manifest(
    dir_path: str | os.PathLike, names: list[str] | None = None, prefix: str | None = None
) -> dict:
    """Check the files of a saved model against its ``manifest.json``.

    Parameters
    ----------
    dir_path
        The model folder.
    names
        Files that must be listed and match (default: every file the manifest lists).
    prefix
        File name prefix of the model (the manifest is ``{prefix}manifest.json``).

    Returns
    -------
    The manifest.

    Raises
    ------
    ModelIntegrityError
        No manifest, an unreadable one, a listed file missing, or a checksum that differs.
    """
    folder = Path(dir_path)
    path = folder / f"{prefix or ''}{MANIFEST_FILE}"
    if not path.exists():
        raise ModelIntegrityError(
            f"{folder} has no {path.name}, so its files cannot be verified (it was not saved "
            "by sclong-scverse >= 0.1, or the manifest was removed). If you trust the files, "
            "pass verify=False to load them anyway, then save the model again to add one."
        )
    manifest = read_manifest(path)
    listed = manifest["files"]
    for name in names if names is not None else list(listed):
        if name not in listed:
            raise ModelIntegrityError(f"{path} does not list {name}; the folder was altered.")
        if not (folder / name).exists():
            raise ModelIntegrityError(f"{folder / name} is listed in {path} but missing.")
        actual = sha256_file(folder / name)
        if actual != listed[name].get("sha256"):
            raise ModelIntegrityError(
                f"{folder / name} does not match its checksum in {path.name} (sha256 "
                f"{actual[:16]}..., expected {str(listed[name].get('sha256'))[:16]}...): the file "
                "was corrupted or changed after saving. Copy it again from its source; pass "
                "verify=False only if you know why it changed."
            )
    return manifest


# ---------------------------------------------------------------------- files
def _umask_permissions(path: str | os.PathLike) -> None:
    """Give a file made by :func:`tempfile.mkstemp` (0600) the usual permissions (umask)."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
        _umask_permissions(temporary)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def save_model_file(content: dict, path: str | os.PathLike) -> None:
    """``torch.save`` the plain form of ``content`` to ``path`` (a temporary name, then renamed)."""
    path = Path(path)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(handle)
    try:
        torch.save(to_plain(content), temporary)
        _umask_permissions(temporary)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def prepare_save_folder(
    dir_path: str | os.PathLike, prefix: str | None, overwrite: bool
) -> tuple[Path, str]:
    """The folder to save a model in (created) and the file-name stem of ``prefix``.

    Raises
    ------
    ScLongInputError
        ``dir_path`` is a file, or already holds a saved model (``model.pt``) and
        ``overwrite`` is ``False`` (a :class:`ValueError`).
    """
    folder = Path(dir_path)
    stem = prefix or ""
    if folder.exists() and not folder.is_dir():
        raise ScLongInputError(f"{folder} is a file; give a folder to save the model in.")
    if (folder / f"{stem}{MODEL_FILE}").exists() and not overwrite:
        raise ScLongInputError(
            f"{folder} already holds a saved model; pass overwrite=True to replace it, or "
            "choose another folder."
        )
    folder.mkdir(parents=True, exist_ok=True)
    return folder, stem


def write_registered_data(model, folder: Path, stem: str, **write_kwargs) -> str:
    """Write ``model.adata`` (``adata.h5ad``, or ``mdata.h5mu`` for a MuData) atomically.

    Written under a temporary name and renamed when complete. Returns the file name.
    """
    from mudata import MuData

    suffix = "mdata.h5mu" if isinstance(model.adata, MuData) else "adata.h5ad"
    target = folder / f"{stem}{suffix}"
    temporary = folder / f".{target.name}.partial"
    try:
        model.adata.write(temporary, **write_kwargs)
        os.replace(temporary, target)
    finally:
        temporary.unlink(missing_ok=True)
    return target.name


def save_model_folder(
    model,
    dir_path: str | os.PathLike,
    prefix: str | None,
    overwrite: bool,
    save_anndata: bool,
    write_kwargs: dict,
    *,
    state: Mapping[str, torch.Tensor],
    gene_ids=None,
    content: dict | None = None,
    manifest: dict | None = None,
) -> None:
    """Save a scvi-tools model of this package as plain data with a checksum manifest.

    Writes ``model.pt`` (``state``, ``var_names``, the attributes ending in ``_``, the
    ``gene_ids`` of the registered genes when given, and ``content``), the registered AnnData
    when ``save_anndata`` (:func:`write_registered_data`), and ``manifest.json`` (the class
    name and ``manifest``), each file under a temporary name renamed when complete.
    """
    folder, stem = prepare_save_folder(dir_path, prefix, overwrite)
    files = []
    if save_anndata:
        files.append(write_registered_data(model, folder, stem, **write_kwargs))
    attributes = {name: value for name, value in model._get_user_attributes() if name.endswith("_")}
    saved = {
        "model_state_dict": {k: v.detach().cpu() for k, v in state.items()},
        "var_names": model.get_var_names(),
        "attr_dict": attributes,
        **(content or {}),
    }
    if gene_ids is not None:  # to register aligned queries on load
        saved["gene_ids"] = np.asarray(gene_ids, dtype=object)
    save_model_file(saved, folder / f"{stem}{MODEL_FILE}")
    files.append(f"{stem}{MODEL_FILE}")
    extra = {"model": type(model).__name__, **(manifest or {})}
    write_manifest(folder, files, extra=extra, prefix=prefix)


def saved_folder_path(dir_path: Any, prefix: Any = None) -> Path:
    """``dir_path`` as a :class:`~pathlib.Path`, or a one-line error for another type."""
    if not isinstance(dir_path, str | os.PathLike) or not isinstance(prefix, str | None):
        raise ScLongInputError(
            f"give the saved model's folder as a path (and prefix as a string), not "
            f"{type(dir_path).__name__}."
        )
    return Path(dir_path)


def read_saved_data(
    cls: type, folder: Path, prefix: str | None, verify: bool, mudata: bool = False, hint: str = ""
):
    """The AnnData (``mudata``: MuData) saved next to a model (``save_anndata=True``).

    Parameters
    ----------
    cls
        The loading class (named in the message).
    folder, prefix
        The saved model's folder and file-name prefix.
    verify
        Check the file's sha256 against the manifest first.
    mudata
        Read ``mdata.h5mu`` (a model set up on a MuData) instead of ``adata.h5ad``.
    hint
        More arguments of ``load`` to name in the message (e.g. ``", backbone=..."``).

    Raises
    ------
    ScLongInputError
        The model was saved without its data (pass them to ``load``).
    """
    path = folder / f"{prefix or ''}{'mdata.h5mu' if mudata else 'adata.h5ad'}"
    if not path.exists():
        raise ScLongInputError(
            f"{folder} was saved without its AnnData; pass the data to attach: "
            f"{cls.__name__}.load({str(folder)!r}, adata=adata{hint})."
        )
    if verify:
        verify_manifest(folder, [path.name], prefix=prefix)
    if mudata:
        import mudata as md

        return md.read_h5mu(path)
    import anndata as ad

    return ad.read_h5ad(path)


def open_saved_model(
    dir_path: str | os.PathLike,
    prefix: str | None,
    verify: bool,
    reader: Callable[[Path], Any],
    cls: type | None = None,
) -> tuple[Path, dict, Any]:
    """``model.pt`` of a saved folder: found, checked against the manifest, read by ``reader``.

    ``reader`` gets the path and returns ``(content, extra)``: what :func:`torch.load` returns
    (safely: with ``weights_only=True``), which must be a saved model's dict, and anything
    else it has (e.g. the page release of a memory-mapped read). The content is checked
    against the saved-model schema (:func:`~._saved_schema.check_saved_content`, attribute
    names against ``cls``). Returns the path, the content (not yet converted from plain data)
    and ``extra``, or raises as :func:`read_saved_model`.
    """
    folder = saved_folder_path(dir_path, prefix)
    name = f"{prefix or ''}{MODEL_FILE}"
    path = folder / name
    if not folder.exists():
        raise ScLongFileNotFound(f"saved model folder not found: {folder}")
    if not folder.is_dir():
        raise ModelIntegrityError(
            f"{folder} is a file, not a saved scLong model folder; give the folder that save() "
            "wrote."
        )
    if not path.exists():
        raise ScLongFileNotFound(f"{folder} is not a saved scLong model: {name} not found.")
    if verify:
        verify_manifest(folder, [name], prefix=prefix)
    try:
        with reading(
            path,
            "saved model file",
            "copy it again from its source",
            also=(Exception,),
            error=ModelIntegrityError,
        ):  # what torch's reader raises on damaged bytes
            content, extra = reader(path)
    except UnsafeFileError as error:
        raise UnsafeFileError(
            f"{error} (Models saved by sclong-scverse before safe saving pickled pandas objects: "
            "load them with the version that wrote them, in an environment you trust, and "
            "save them again.)"
        ) from None
    check_saved_content(content, path, cls)
    return path, content, extra


def read_saved_model(
    dir_path: str | os.PathLike,
    prefix: str | None = None,
    *,
    verify: bool = True,
    map_location: str | torch.device = "cpu",
    cls: type | None = None,
) -> dict:
    """Read a saved model's ``model.pt`` safely (``weights_only=True``) and verify it.

    Parameters
    ----------
    dir_path
        The folder written by :meth:`~sclong_scverse.model.SCLONG.save`.
    prefix
        File name prefix given to ``save``.
    verify
        Check ``model.pt`` against ``manifest.json`` (sha256) first.
    map_location
        Where the tensors go.
    cls
        The class the model is loaded as: saved attribute names must not name its methods,
        and its constructor must take the saved arguments.

    Returns
    -------
    ``{"model_state_dict", "var_names", "attr_dict"}`` as scvi-tools saves them.

    Raises
    ------
    ScLongFileNotFound
        No ``model.pt`` in ``dir_path`` (a :class:`FileNotFoundError`).
    ModelIntegrityError
        A manifest that is not one, a checksum mismatch (with ``verify``), content that is not
        a saved model's (:mod:`._saved_schema`), or weights that are NaN or infinite.
    UnsafeFileError
        The file refers to code or object types outside the allow-list; nothing was run.
    """
    path, content, _ = open_saved_model(
        dir_path,
        prefix,
        verify,
        lambda path: (safe_torch_load(path, map_location=map_location), None),
        cls,
    )
    content = from_plain(content)
    state = content["model_state_dict"]
    bad = non_finite_tensors(state)
    if bad:
        raise ModelIntegrityError(
            f"{path} holds NaN or infinite weights in {bad[:5]}{' ...' if len(bad) > 5 else ''} "
            f"({len(bad)} tensors): the model diverged during training or the file is corrupted. "
            "It would give NaN outputs; retrain or restore the file."
        )
    return content


# ---------------------------------------------------------------------- downstream heads
def text_columns(frame: pd.DataFrame, columns: tuple[str, ...]) -> pd.DataFrame:
    """A copy of ``frame`` whose ``columns`` hold plain strings (categoricals saved as text)."""
    frame = frame.copy()
    for column in columns:
        frame[column] = frame[column].astype(str).to_numpy(dtype=object)
    return frame


def save_head(
    model,
    dir_path: str | os.PathLike,
    prefix: str | None,
    overwrite: bool,
    *,
    spec: dict | None = None,
    attrs: dict | None = None,
    extra: dict | None = None,
) -> None:
    """Save a downstream head (``SCLONGDrugResponse`` ...) as plain data plus a manifest.

    ``model.pt`` holds the weights, ``var_names``, and ``attr_dict`` with the setup registry,
    ``spec`` (default ``model.spec_``: what ``model._build`` needs), ``is_trained_``,
    ``history_`` and the head's own ``attrs``; ``manifest.json`` the checksums, versions, the
    class name and ``extra``.
    """
    folder, stem = prepare_save_folder(dir_path, prefix, overwrite)
    content = {
        "model_state_dict": {k: v.cpu() for k, v in model.module.state_dict().items()},
        "var_names": np.asarray(model.adata.var_names, dtype=object),
        "attr_dict": {
            "registry_": model.registry_,
            "spec_": dict(model.spec_) if spec is None else spec,
            "is_trained_": bool(model.is_trained_),
            "history_": model.history_,
            **(attrs or {}),
        },
    }
    save_model_file(content, folder / f"{stem}{MODEL_FILE}")
    write_manifest(
        folder,
        [f"{stem}{MODEL_FILE}"],
        extra={"model": type(model).__name__, **(extra or {})},
        prefix=prefix,
    )


def _dry_build(model, spec: dict, state: dict, network, dir_path) -> None:
    """Build the head described by ``spec`` with its module on the meta device; compare shapes.

    The head's own preparation (featurising drugs, reading its data) runs as usual; only its
    torch module (``_module_cls``) and backbone network are built on the meta device, so nothing
    of their size is allocated: a damaged or edited ``spec`` that asks for other (or huge)
    layers is refused before the real module is built.
    """
    from torch.fx.experimental import _config as fx_config

    real = type(model)._module_cls

    def on_meta(*args, **kwargs):
        # data-dependent buffers (e.g. a graph's edges without self-loops) get fake sizes on
        # the meta device; only the parameters' shapes are compared
        with torch.device("meta"), fx_config.patch(meta_nonzero_assume_all_nonzero=True):
            return real(*args, **kwargs)

    model._module_cls = on_meta
    try:
        if network is None:
            model._build(spec)
        else:
            with torch.device("meta"):
                backbone = network(spec, state)
            model._build(spec, backbone)
        expected = {name: tuple(value.shape) for name, value in model.module.named_parameters()}
    except ScLongError:
        raise
    except (RuntimeError, NotImplementedError):  # a step the meta device cannot run
        return  # (checked by the real build and load_state_dict)
    except (ValueError, KeyError, TypeError, AttributeError, IndexError) as error:
        raise ModelIntegrityError(
            f"{dir_path} holds a spec_ that does not build a {type(model).__name__} "
            f"({type(error).__name__}: {' '.join(str(error).split())[:200]}); the file is "
            "corrupted or was edited."
        ) from None
    finally:
        del model._module_cls
    for name, shape in expected.items():
        saved = state.get(name)
        if saved is not None and tuple(saved.shape) != shape:
            raise ModelIntegrityError(
                f"The weights in {dir_path} do not fit the spec saved with them ({name}: saved "
                f"{tuple(saved.shape)}, the spec needs {shape}); the file is corrupted or was "
                "edited."
            )


def load_head(
    cls,
    dir_path: str | os.PathLike,
    adata,
    prefix: str | None,
    verify: bool,
    *,
    check=None,
    network=None,
):
    """Load a head saved by :func:`save_head`: ``(model, attr_dict)``, the model in eval mode.

    ``model.pt`` is read with ``torch.load(weights_only=True)`` after the manifest is checked.
    ``check(spec, attrs)`` may refuse ``adata`` (raise) before it is registered as the saved
    setup registered its data; ``network(spec, state)`` may build a network passed to
    ``model._build(spec, network)``. The caller restores the head's own attributes from
    ``attr_dict``.
    """
    from scvi.model.base import BaseModelClass

    saved = read_saved_model(dir_path, prefix, verify=verify, cls=cls)
    attrs, state = saved["attr_dict"], saved["model_state_dict"]
    registry = attrs.get("registry_")
    if registry is None or not isinstance(attrs.get("spec_"), dict):
        raise ModelIntegrityError(
            f"{dir_path} is not a saved {cls.__name__} (no registry_ or spec_ in its model.pt)."
        )
    if registry.get("model_name", cls.__name__) != cls.__name__:
        raise ModelIntegrityError(
            f"{dir_path} holds a {registry.get('model_name')}, not a {cls.__name__}; load it "
            f"with {registry.get('model_name')}.load."
        )
    spec = attrs["spec_"]
    if check is not None:
        check(spec, attrs)
    cls.setup_anndata(adata, **dict(registry["setup_args"]))
    model = cls.__new__(cls)
    BaseModelClass.__init__(model, adata)
    _dry_build(model, spec, state, network, dir_path)
    if network is None:
        model._build(spec)
    else:
        model._build(spec, network(spec, state))
    try:
        model.module.load_state_dict(state)
    except RuntimeError as error:
        raise ModelIntegrityError(
            f"The weights in {dir_path} do not fit the saved configuration "
            f"({str(error).splitlines()[0]})."
        ) from None
    model.module.eval()
    model.is_trained_ = bool(attrs.get("is_trained_", True))
    model.history_ = attrs.get("history_")
    model.init_params_ = {"non_kwargs": {}, "kwargs": {}}
    return model, attrs
