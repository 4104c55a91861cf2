"""Pretrained scLong models by name: a registry of pinned releases over the Hugging Face hub.

A saved :class:`~sclong_scverse.model.SCLONG` folder (``model.pt`` + ``manifest.json``, see
:meth:`~sclong_scverse.model.SCLONG.save`) is what a hub repository holds. Models are found, in
order, as a local folder; in the hub cache (the layout ``huggingface_hub`` writes:
``<cache>/models--<org>--<name>/snapshots/<commit>/``, with ``refs/<branch>`` naming a
commit), so they load offline; or downloaded with ``huggingface_hub`` when it is installed and
downloads are allowed. Integrity: the manifest lists the sha256 of every file of the model and
:meth:`~sclong_scverse.model.SCLONG.load` verifies it; a registered release (or the caller)
also pins the sha256 of ``manifest.json`` itself, so an edited manifest is refused as well.

No release is registered yet: the official 1B weights are distributed as a file share, not on a
hub (load them with :meth:`~sclong_scverse.model.SCLONG.from_official`), and this project has
not published trained models. :func:`register_pretrained` adds a release (e.g. a lab's own).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ScLongFileNotFound, ScLongInputError
from ..io._safe import sha256_file
from ._saving import MANIFEST_FILE, MODEL_FILE, ModelIntegrityError

#: files of a saved model that a hub repository holds (``adata.h5ad`` is optional)
MODEL_FILES = (MODEL_FILE, MANIFEST_FILE)
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_COMMIT = re.compile(r"^[0-9a-f]{40}$")


@dataclass(frozen=True)
class PretrainedRelease:
    """A pinned scLong release on a model hub.

    Attributes
    ----------
    name
        Short name users pass to :meth:`~sclong_scverse.model.SCLONG.from_pretrained`.
    repo_id
        Hub repository (``"org/name"``).
    revision
        The commit (40 hex digits) the release is pinned to.
    manifest_sha256
        sha256 of the release's ``manifest.json`` (which lists the sha256 of every other file).
    description
        One line: preset, training data, genes.
    card
        Further facts shown by :func:`pretrained_models` (licence, metrics, ...).
    """

    name: str
    repo_id: str
    revision: str
    manifest_sha256: str
    description: str = ""
    card: dict = field(default_factory=dict)


_REGISTRY: dict[str, PretrainedRelease] = {}


def register_pretrained(release: PretrainedRelease, *, overwrite: bool = False) -> None:
    """Add a release to the registry :meth:`SCLONG.from_pretrained` resolves names with.

    Parameters
    ----------
    release
        The release: its ``revision`` must be a full commit hash and ``manifest_sha256`` 64 hex
        digits, so that a name always means the same files.
    overwrite
        Replace a release registered under the same name.
    """
    if not _REPO_ID.match(release.repo_id):
        raise ScLongInputError(f"repo_id must look like 'org/name', got {release.repo_id!r}.")
    if not _COMMIT.match(release.revision):
        raise ScLongInputError(
            f"revision must be a full 40-digit commit hash (a branch can move), got "
            f"{release.revision!r}."
        )
    if not re.fullmatch(r"[0-9a-f]{64}", release.manifest_sha256):
        raise ScLongInputError("manifest_sha256 must be 64 lower-case hex digits.")
    if release.name in _REGISTRY and not overwrite:
        raise ScLongInputError(f"{release.name!r} is registered already; pass overwrite=True.")
    _REGISTRY[release.name] = release


def pretrained_models() -> dict[str, PretrainedRelease]:
    """The registered releases, by name (empty until one is registered; see the module notes)."""
    return dict(_REGISTRY)


def default_cache_dir() -> Path:
    """The hub cache: ``$HF_HUB_CACHE``, else ``$HF_HOME/hub``, else ~/.cache/huggingface/hub."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    home = os.environ.get("HF_HOME")
    return Path(home) / "hub" if home else Path.home() / ".cache" / "huggingface" / "hub"


def _repo_folder(cache_dir: Path, repo_id: str) -> Path:
    return cache_dir / ("models--" + repo_id.replace("/", "--"))


def _inside(path: Path, folder: Path) -> bool:
    """Whether ``path`` (links followed) lies in ``folder`` (links followed)."""
    return path.resolve().is_relative_to(folder.resolve())


def _cached_snapshot(cache_dir: Path, repo_id: str, revision: str) -> Path | None:
    """The snapshot folder of ``repo_id`` at ``revision`` (a commit or a ref) in the cache.

    A ref file (``refs/<revision>``) must hold a 40-digit commit hash, as ``huggingface_hub``
    writes them, and the snapshot must lie in the cache: anything else (``../..``, an absolute
    path) would load a folder from outside the cache and is refused.

    Raises
    ------
    ModelIntegrityError
        The ref file or the revision points outside the cache, or the ref is not a commit hash.
    """
    repo = _repo_folder(cache_dir, repo_id)
    commit = revision
    if not _COMMIT.match(revision):
        refs = repo / "refs"
        ref = refs / revision
        if not ref.is_file():
            return None
        if not _inside(ref, refs):
            raise ModelIntegrityError(
                f"revision {revision!r} names {ref}, outside {refs}; pass a branch name or a "
                "40-digit commit hash."
            )
        commit = ref.read_text(errors="replace").strip()
        if not _COMMIT.match(commit):
            raise ModelIntegrityError(
                f"{ref} (refs/{revision} of the hub cache) holds {commit[:80]!r}, not a commit "
                "hash (40 lower-case hex digits): the cache was edited or is corrupted. Delete "
                f"{ref} (and download again), or pass revision=<commit>."
            )
    snapshot = repo / "snapshots" / commit
    if snapshot.exists() and not _inside(snapshot, cache_dir):
        raise ModelIntegrityError(
            f"{snapshot} (the snapshot of {repo_id}@{revision}) resolves to "
            f"{snapshot.resolve()}, outside the hub cache {cache_dir}; delete it and download "
            "again."
        )
    return snapshot if all((snapshot / name).is_file() for name in MODEL_FILES) else None


def _download(repo_id: str, revision: str, cache_dir: Path) -> Path:
    try:
        from huggingface_hub import snapshot_download
    except ImportError as error:
        raise ImportError("huggingface_hub is not installed") from error
    return Path(
        snapshot_download(
            repo_id,
            revision=revision,
            cache_dir=cache_dir,
            allow_patterns=[*MODEL_FILES, "adata.h5ad", "README.md"],
        )
    )


def resolve_pretrained(
    name_or_path: str | os.PathLike,
    *,
    revision: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    manifest_sha256: str | None = None,
    local_files_only: bool = False,
) -> Path:
    """The local folder of a saved model given by path, registered name or hub repository.

    Parameters
    ----------
    name_or_path
        A folder with ``model.pt`` and ``manifest.json``; a name from :func:`pretrained_models`;
        or a hub repository id (``"org/name"``).
    revision
        Commit or branch of a repository id (default ``"main"``); a registered name is pinned
        and refuses another revision.
    cache_dir
        Hub cache (default :func:`default_cache_dir`).
    manifest_sha256
        Expected sha256 of ``manifest.json`` (registered names carry theirs).
    local_files_only
        Never download: use the cache only.

    Returns
    -------
    The folder, with ``manifest.json`` checked against ``manifest_sha256`` when one is known.

    Raises
    ------
    FileNotFoundError
        Not a folder, name or cached repository, and no download possible: the message says which
        files to place where.
    ModelIntegrityError
        ``manifest.json`` differs from the pinned checksum, or a ref of the hub cache
        (``refs/<revision>``) is not a commit hash or points outside the cache.
    """
    path = Path(name_or_path)
    if path.is_dir():
        folder = path
    else:
        text = str(name_or_path)
        release = _REGISTRY.get(text)
        if release is not None:
            if revision not in (None, release.revision):
                raise ScLongInputError(
                    f"{text!r} is pinned to revision {release.revision}; pass its repository id "
                    f"{release.repo_id!r} to load another revision."
                )
            repo_id, revision = release.repo_id, release.revision
            manifest_sha256 = manifest_sha256 or release.manifest_sha256
        elif _REPO_ID.match(text):
            repo_id, revision = text, revision or "main"
        else:
            known = ", ".join(sorted(_REGISTRY)) or "none registered yet"
            raise ScLongFileNotFound(
                f"{text!r} is not a folder, a registered model ({known}) or a hub repository id "
                "('org/name')."
            )
        cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        folder = _cached_snapshot(cache, repo_id, revision)
        if folder is None:
            reason = "downloads are off (local_files_only=True)"
            if not local_files_only:
                try:
                    folder = _download(repo_id, revision, cache)
                except ImportError:
                    reason = "huggingface_hub is not installed (pip install huggingface_hub)"
                except Exception as error:  # network or hub errors: say what to do offline
                    reason = f"the download failed ({type(error).__name__}: {error})"
        if folder is None:
            commit = revision if _COMMIT.match(revision) else "<commit>"
            where = _repo_folder(cache, repo_id) / "snapshots" / commit
            refs = "" if _COMMIT.match(revision) else f" and {revision}'s commit in refs/{revision}"
            raise ScLongFileNotFound(
                f"{repo_id}@{revision} is not in the hub cache {cache} and {reason}. Offline, "
                f"place {' and '.join(MODEL_FILES)} of the release in {where}{refs}, or pass the "
                "folder that holds them."
            )
    for name in MODEL_FILES:
        if not (folder / name).is_file():
            raise ScLongFileNotFound(f"{folder} has no {name}; is it a saved SCLONG model?")
    if manifest_sha256 is not None:
        actual = sha256_file(folder / MANIFEST_FILE)
        if actual != manifest_sha256.lower():
            raise ModelIntegrityError(
                f"{folder / MANIFEST_FILE} has sha256 {actual}, not the pinned "
                f"{manifest_sha256.lower()}: the release's files were changed or corrupted. "
                "Delete the cached copy and download it again."
            )
    return folder


def model_card(model, *, name: str, training_data: str, metrics: dict | None = None) -> str:
    """A hub model card (``README.md``) for a saved scLong model.

    Parameters
    ----------
    model
        The :class:`~sclong_scverse.model.SCLONG` model.
    name
        Model name shown in the card.
    training_data
        What the model was trained on (dataset, cells, genes, licence).
    metrics
        Measured figures to list (e.g. held-out masked MSE and its baseline).

    Returns
    -------
    Markdown with a YAML header (library, tags, licence) that hubs index.
    """
    from .. import __version__

    config = model.module.config
    lines = [
        "---",
        "library_name: sclong-scverse",
        "tags: [single-cell, scverse, scvi-tools, foundation-model, sclong]",
        "license: mit",
        "---",
        f"# {name}",
        "",
        "An scLong model saved by sclong-scverse "
        f"{__version__}. Load it with `scl.SCLONG.from_pretrained(...)` or, from a folder, "
        "`scl.SCLONG.load(folder, adata=adata)`; `manifest.json` lists the sha256 of every file.",
        "",
        "## Model",
        f"- network: {model._model_summary_string}",
        f"- genes: {config.n_genes:,} (the vocabulary; data genes are aligned to it on load)",
        f"- trained: {'yes' if model.is_trained else 'no'}",
        "",
        "## Training data",
        training_data,
    ]
    if metrics:
        lines += ["", "## Metrics", *[f"- {key}: {value}" for key, value in metrics.items()]]
    return "\n".join(lines) + "\n"


def manifest_checksum(folder: str | os.PathLike) -> str:
    """sha256 of a saved model's ``manifest.json`` (what a registry entry pins)."""
    path = Path(folder) / MANIFEST_FILE
    json.loads(path.read_text())  # a manifest, not any file
    return sha256_file(path)
