"""Verification of the Lightning checkpoints a pretraining run resumes from.

:meth:`SCLONG.pretrain <sclong_scverse.model.SCLONG.pretrain>` writes Lightning checkpoints
whose last entry, ``"sclong_checkpoint"``
(:data:`~sclong_scverse.module._training_plan.CHECKPOINT_RECORD_KEY`), records the network
configuration and a sha256 of everything else in the checkpoint (weights, optimiser and schedule
state, loop and corpus positions, random state; see
:func:`~sclong_scverse.module._training_plan.checkpoint_digest`). The checksum is of the content,
not of the file's bytes, so it lives inside the checkpoint (no sidecar file to lose or to copy
along) and survives a copy of the file that keeps its content.

Before Lightning reads a checkpoint to resume, :func:`verify_resume_checkpoint` opens it safely
(``torch.load(weights_only=True)`` through :func:`~sclong_scverse.io._safe.safe_torch_load`: no
code in the file can run), and refuses, with one line naming the file, anything that is not a
checkpoint of this package, that holds NaN or infinite weights or optimiser state, that differs
from its checksum, or that was written for another configuration. Checkpoints written before the
record existed are resumed with a warning that they could not be verified.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch

from ..errors import ScLongFileNotFound
from ..io._safe import UnsafeFileError, non_finite_tensors, safe_torch_load
from ..module._training_plan import CHECKPOINT_FORMAT, CHECKPOINT_RECORD_KEY, checkpoint_digest
from ._saving import ModelIntegrityError

#: the entries a Lightning checkpoint written by ``pretrain`` always holds
_LIGHTNING_KEYS = ("state_dict", "pytorch-lightning_version")
#: the entries whose floating-point values must be finite to resume
_FINITE_ENTRIES = ("state_dict", "optimizer_states", "lr_schedulers")


def _load(path: Path) -> Any:
    """The checkpoint's content, read without running code (memory-mapped when possible)."""
    try:
        return safe_torch_load(path, mmap=True)
    except UnsafeFileError:
        raise
    except Exception:  # not a zip-format torch file, or a damaged one: read it whole
        return safe_torch_load(path)


def _floats(value: Any, where: str) -> Iterator[tuple[str, Any]]:
    """``(name, value)`` of every tensor and float in nested dicts and lists."""
    if isinstance(value, torch.Tensor | float):
        yield where, value
    elif isinstance(value, Mapping):
        for key, item in value.items():
            yield from _floats(item, f"{where}/{key}")
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            yield from _floats(item, f"{where}[{index}]")


def _non_finite(checkpoint: Mapping[str, Any]) -> list[str]:
    """Names of the weights, optimiser and schedule values that are NaN or infinite."""
    values = (
        (name, torch.as_tensor(value) if isinstance(value, float) else value)
        for entry in _FINITE_ENTRIES
        for name, value in _floats(checkpoint.get(entry), entry)
    )
    return non_finite_tensors(values)


def _config_differences(saved: Any, current: Mapping[str, Any]) -> list[str]:
    """``"field: saved vs current"`` for each configuration field that differs."""
    if not isinstance(saved, Mapping):
        return [f"configuration: {type(saved).__name__} instead of a dict"]
    names = sorted(set(saved) | set(current), key=str)
    return [
        f"{name}: {saved.get(name, '(absent)')!r} vs {current.get(name, '(absent)')!r}"
        for name in names
        if saved.get(name, "(absent)") != current.get(name, "(absent)")
    ]


def _shape_differences(state: Any, module: torch.nn.Module) -> list[str]:
    """``"name: saved vs current shape"`` for the weights whose shape differs."""
    if not isinstance(state, Mapping):
        return ["state_dict: not a dict of tensors"]
    current = {f"module.{key}": value for key, value in module.state_dict().items()}
    return [
        f"{key}: {tuple(value.shape)} vs {tuple(current[key].shape)}"
        for key, value in state.items()
        if key in current
        and isinstance(value, torch.Tensor)
        and tuple(value.shape) != tuple(current[key].shape)
    ]


def verify_resume_checkpoint(path: str | os.PathLike, module: torch.nn.Module) -> bool:
    """Check a checkpoint before a pretraining run resumes from it.

    The file is read with ``torch.load(weights_only=True)`` (no code in it can run), then:
    it must be a Lightning checkpoint written by :meth:`SCLONG.pretrain
    <sclong_scverse.model.SCLONG.pretrain>` (its ``"sclong_checkpoint"`` record present), its
    weights, optimiser and schedule state finite, its content equal to the sha256 recorded when
    it was written, and its configuration the configuration of ``module``. A checkpoint written
    before checkpoints carried the record (but otherwise one of this package's) is accepted with
    a warning that it could not be verified, once its values are checked to be finite and its
    weight shapes to fit ``module``.

    Parameters
    ----------
    path
        The checkpoint file.
    module
        The :class:`~sclong_scverse.module.ScLongModule` the run trains.

    Returns
    -------
    ``True`` when the checksum was verified, ``False`` for an older checkpoint without one
    (after the warning).

    Raises
    ------
    FileNotFoundError
        No file at ``path``.
    ModelIntegrityError
        The file is not a readable torch file (truncated, damaged, another format), refers to
        code or object types outside the allow-list (nothing was run), is not a checkpoint
        written by ``pretrain``, holds NaN or infinite values, differs from its checksum, or
        belongs to another configuration.
    """
    path = Path(path)
    if not path.is_file():
        raise ScLongFileNotFound(f"resume: no checkpoint file at {path}.")
    try:
        checkpoint = _load(path)
    except UnsafeFileError:
        raise ModelIntegrityError(
            f"resume: {path} was refused: it refers to code or object types that a checkpoint "
            "written by SCLONG.pretrain never holds, and nothing in it was run. Resume from a "
            "checkpoint of the interrupted run (last.ckpt or step*.ckpt in its checkpoint_dir)."
        ) from None
    except Exception:  # torch raises many types for damaged or foreign files
        raise ModelIntegrityError(
            f"resume: {path} is not a readable torch checkpoint (truncated, damaged, or another "
            "kind of file). Resume from an intact checkpoint of the interrupted run (last.ckpt "
            "or step*.ckpt in its checkpoint_dir), or copy it again from where it was written."
        ) from None
    has_lightning = isinstance(checkpoint, Mapping) and all(
        key in checkpoint for key in _LIGHTNING_KEYS
    )
    record = checkpoint.get(CHECKPOINT_RECORD_KEY) if has_lightning else None
    legacy = has_lightning and record is None and "sclong_rng" in checkpoint
    if not (isinstance(record, Mapping) or legacy):
        raise ModelIntegrityError(
            f"resume: {path} is not a checkpoint written by SCLONG.pretrain (it has no "
            f"{CHECKPOINT_RECORD_KEY!r} record). Resume from a checkpoint of the interrupted run "
            "(last.ckpt or step*.ckpt in its checkpoint_dir)."
        )
    bad = _non_finite(checkpoint)
    if bad:
        raise ModelIntegrityError(
            f"resume: {path} holds NaN or infinite values in {', '.join(bad[:3])}"
            f"{' ...' if len(bad) > 3 else ''} ({len(bad)} in all): the run diverged before "
            "this checkpoint or the file is corrupted. Resume from an earlier checkpoint (e.g. "
            "a step*.ckpt), with a lower lr or gradient clipping."
        )
    if legacy:
        shapes = _shape_differences(checkpoint["state_dict"], module)
        if shapes:
            raise ModelIntegrityError(
                f"resume: {path} holds weights of other shapes than this model's ("
                f"{'; '.join(shapes[:3])}): it was written for another configuration. Resume "
                "with the model and configuration of the interrupted run."
            )
        warnings.warn(
            f"resume: {path} was written before checkpoints carried a checksum, so it could not "
            "be verified (its values are finite and its weights fit this model). Resume from it "
            "only if you trust it; the checkpoints this run writes carry a checksum.",
            UserWarning,
            stacklevel=3,
        )
        return False
    if record.get("format") != CHECKPOINT_FORMAT or not isinstance(record.get("sha256"), str):
        raise ModelIntegrityError(
            f"resume: {path} has a {CHECKPOINT_RECORD_KEY!r} record of an unknown format "
            f"({str(record.get('format'))[:40]!r}, expected {CHECKPOINT_FORMAT!r}): written by "
            "another version of sclong-scverse, or altered. Resume with the version that wrote it."
        )
    actual = checkpoint_digest(checkpoint, record)
    if actual != record["sha256"]:
        raise ModelIntegrityError(
            f"resume: {path} does not match the checksum it was written with (sha256 "
            f"{actual[:16]}..., recorded {record['sha256'][:16]}...): the file was corrupted or "
            "changed after it was written. Resume from another checkpoint of the run (e.g. a "
            "step*.ckpt), or copy it again from where it was written."
        )
    differences = _config_differences(record.get("config"), module.config.to_dict())
    if differences:
        raise ModelIntegrityError(
            f"resume: {path} was written for another configuration ({'; '.join(differences[:3])}"
            f"{' ...' if len(differences) > 3 else ''}). Resume with the model and configuration "
            "of the interrupted run."
        )
    return True
