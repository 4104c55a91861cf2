"""Official files loaded without a checksum say so, with the sha256 to pin (issue 23, item 2).

Data: the miniature official release (``tiny_ckpt.pth``, ``tiny_hparams.pkl``,
``tiny_genes.txt``; ``tests/data/parity`` or ``../shared/parity``) and 16 PBMC cells.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path

import pytest

import sclong_scverse as scl
from sclong_scverse.io import OfficialFormatError, load_official
from sclong_scverse.model import SCLONG


def _files(parity_dir: Path) -> tuple[Path, Path, Path]:
    return (
        parity_dir / "tiny_ckpt.pth",
        parity_dir / "tiny_hparams.pkl",
        parity_dir / "tiny_genes.txt",
    )


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _unverified(caught) -> list[str]:
    return [str(w.message) for w in caught if "loaded unverified" in str(w.message)]


def _cells():
    """16 PBMC cells, normalised and registered (a new AnnData each call)."""
    adata = scl.datasets.pbmc68k_counts(max_cells=16, seed=0)
    scl.pp.normalize(adata, layer="counts")
    SCLONG.setup_anndata(adata, layer="sclong")
    return adata


def test_load_official_without_checksum_warns_with_the_sha256(parity_dir):
    files = _files(parity_dir)
    digest = _sha256(files[0])
    with pytest.warns(UserWarning, match="loaded unverified") as caught:
        release = load_official(*files)
    (message,) = _unverified(caught)
    assert str(files[0]) in message and f"expected_sha256='{digest}'" in message
    assert "\n" not in message
    assert release.sha256 == {name: _sha256(path) for name, path in zip(
        ("checkpoint", "hparams", "genes"), files, strict=True)}  # fmt: skip
    assert release.verified == ()
    # pinned: checked, no warning; a wrong checksum is refused as before
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pinned = load_official(*files, expected_sha256=digest)
    assert not _unverified(caught) and pinned.verified == ("checkpoint",)
    with pytest.raises(OfficialFormatError, match="has sha256"):
        load_official(*files, expected_sha256="0" * 64)


@pytest.mark.filterwarnings("ignore:only .* genes of the data:UserWarning")
def test_from_official_records_the_sha256_in_the_saved_manifest(parity_dir, tmp_path):
    files = _files(parity_dir)
    digest = _sha256(files[0])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = SCLONG.from_official(_cells(), *files)
    (message,) = _unverified(caught)
    assert digest in message and str(files[0]) in message
    assert model.official_source_["checkpoint"] == {
        "file": "tiny_ckpt.pth",
        "sha256": digest,
        "verified": False,
    }
    model.save(tmp_path / "model")
    manifest = json.loads((tmp_path / "model" / "manifest.json").read_text())
    assert manifest["source"]["checkpoint"]["sha256"] == digest
    assert manifest["source"]["hparams"]["sha256"] == _sha256(files[1])
    # the saved model is verified on every load, and keeps the record when saved again
    again = SCLONG.load(tmp_path / "model", adata=_cells())
    assert again.official_source_["checkpoint"]["sha256"] == digest
    again.save(tmp_path / "again")
    manifest = json.loads((tmp_path / "again" / "manifest.json").read_text())
    assert manifest["source"]["checkpoint"]["sha256"] == digest
    # pinned: recorded as verified
    pinned = SCLONG.from_official(_cells(), *files, expected_sha256=digest)
    assert pinned.official_source_["checkpoint"]["verified"] is True


def test_convert_official_without_sha256_prints_it(parity_dir, tmp_path, capsys):
    from sclong_scverse import cli

    files = _files(parity_dir)
    digest = _sha256(files[0])
    argv = ["convert-official", "--checkpoint", str(files[0]), "--hparams", str(files[1])]
    argv += ["--genes", str(files[2])]
    assert cli.main([*argv, "--out", str(tmp_path / "a")]) == 0
    captured = capsys.readouterr()
    (line,) = [line for line in captured.err.splitlines() if "loaded unverified" in line]
    assert line.startswith("sclong: warning: ") and str(files[0]) in line
    assert f"--sha256 {digest}" in line
    assert f"checkpoint sha256: {digest} (not verified)" in captured.out
    assert cli.main([*argv, "--out", str(tmp_path / "b"), "--sha256", digest]) == 0
    captured = capsys.readouterr()
    assert "loaded unverified" not in captured.err
    assert f"checkpoint sha256: {digest} (verified against --sha256)" in captured.out
