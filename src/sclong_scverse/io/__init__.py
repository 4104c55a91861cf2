"""Official scLong release files <-> this package."""

from ._safe import UnsafeFileError, sha256_file
from .official import (
    OfficialFormatError,
    OfficialRelease,
    check_hparams,
    config_from_hparams,
    load_official,
    read_checkpoint,
    read_genes,
    read_hparams,
    save_official,
)

__all__ = [
    "OfficialFormatError",
    "OfficialRelease",
    "check_hparams",
    "config_from_hparams",
    "load_official",
    "read_checkpoint",
    "read_genes",
    "read_hparams",
    "save_official",
    "sha256_file",
    "UnsafeFileError",
]
