"""Official scLong release files <-> this package."""

from .official import (
    OfficialFormatError,
    OfficialRelease,
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
    "config_from_hparams",
    "load_official",
    "read_checkpoint",
    "read_genes",
    "read_hparams",
    "save_official",
]
