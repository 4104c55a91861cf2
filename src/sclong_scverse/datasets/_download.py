"""Download public data files once, verified by sha256, into a cache folder (as scanpy does)."""

from __future__ import annotations

import hashlib
import logging
import os
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path

from ..errors import DatasetDownloadError
from ..io._safe import sha256_file

logger = logging.getLogger(__name__)

#: Bytes read per block while downloading.
_BLOCK = 1 << 20


def data_cache_dir() -> Path:
    """The folder where downloaded data sets are kept.

    ``$SCLONG_DATA_DIR`` when set, else ``$XDG_CACHE_HOME/sclong_scverse`` (default
    ``~/.cache/sclong_scverse``).

    Returns
    -------
    The folder (created on the first download).
    """
    if os.environ.get("SCLONG_DATA_DIR"):
        return Path(os.environ["SCLONG_DATA_DIR"])
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "sclong_scverse"


def fetch_file(url: str, path: str | os.PathLike, sha256: str, timeout: float = 60.0) -> Path:
    """``path``, downloaded from ``url`` unless a file with the expected checksum is there.

    The download goes to ``<path>.partial`` and replaces ``path`` only once its sha256
    matches; a mismatch or a failed download leaves nothing behind.

    Parameters
    ----------
    url
        Where the file is published (``https://``, or ``file://`` for a local mirror).
    path
        Where to keep it.
    sha256
        The file's published hex sha256.
    timeout
        Seconds to wait for the server.

    Returns
    -------
    ``path``.

    Raises
    ------
    DatasetDownloadError
        The download failed (no network, moved file) or its checksum differs; the message
        names the URL and the folder where a manually downloaded copy can be put.
    """
    path = Path(path)
    if path.is_file() and sha256_file(path) == sha256:
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    digest = hashlib.sha256()
    logger.warning("downloading %s -> %s", url, path)
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, open(partial, "wb") as out:
            for block in iter(lambda: response.read(_BLOCK), b""):
                digest.update(block)
                out.write(block)
    except (urllib.error.URLError, OSError) as error:
        partial.unlink(missing_ok=True)
        raise DatasetDownloadError(
            f"Could not download {url} ({error}). Download it by hand into {path.parent} "
            "(the checksum is verified), or point SCLONG_SHARED_DATA to a folder holding the "
            "data set."
        ) from None
    if digest.hexdigest() != sha256:
        partial.unlink(missing_ok=True)
        raise DatasetDownloadError(
            f"{url} does not match its published sha256 (got {digest.hexdigest()}, expected "
            f"{sha256}); nothing was kept. The file may have changed upstream: report it, or "
            f"put a copy you trust in {path.parent}."
        )
    os.replace(partial, path)
    return path


def fetch_files(base_url: str, files: Mapping[str, str], folder: str | os.PathLike) -> Path:
    """Every ``name -> sha256`` of ``files`` from ``base_url`` into ``folder``; the folder."""
    folder = Path(folder)
    for name, sha256 in files.items():
        fetch_file(f"{base_url.rstrip('/')}/{name}", folder / name, sha256)
    return folder
