"""Property-based tests (hypothesis) of every public reader of files: damaged input is refused.

Each reader starts from a real, small, valid file (a copy, subset or re-layout of the real data
in ``tests/data``; see ``tests/data/PROVENANCE.md``) and hypothesis damages it: random bytes,
truncation at a random offset, one flipped byte, an empty file, a folder in place of the file, a
missing path, and arguments that are not paths at all (``int``, ``None``, ``list``). Whatever
the damage, the call either returns or raises this package's own error
(:class:`sclong_scverse.errors.ScLongError`) in one line that names the file (or the argument
given) and never advises ``weights_only=False``; and nothing is written: the folder's listing
and every file in it are unchanged. Readers of HDF5 files run each example in a child process
with a time limit, which turns a hang or a crash into a failure (see :func:`_isolated`).

Profiles (environment variable ``SCLONG_HYPOTHESIS_PROFILE``), as in ``test_properties.py``:

- ``ci`` (default): derandomized (the same examples on every run): 40 generated examples per
  reader and 9 explicit ones, 1,470 in all for the 30 readers; about 30 s on 2 busy cores.
- ``long``: random, 400 generated examples per reader (12,000; about 4 minutes)::

      SCLONG_HYPOTHESIS_PROFILE=long python -m pytest tests/test_fuzz_readers.py
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import io
import os
import pickle
import select
import shutil
import signal
import tempfile
import warnings
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

import sclong_scverse as scl
from conftest import HYPOTHESIS_PROFILE, TEST_DATA
from sclong_scverse import go
from sclong_scverse import io as scl_io
from sclong_scverse.chem import read_deepcdr_graph_features
from sclong_scverse.errors import ScLongError
from sclong_scverse.genes import GeneVocabulary

PROFILE = HYPOTHESIS_PROFILE  # registered and loaded in conftest.py

#: generated examples per reader, besides the explicit ones (empty, folder, missing, types)
EXAMPLES = 40 if PROFILE == "ci" else 400

PARITY = TEST_DATA / "parity"
DEEPCDR = TEST_DATA / "drug" / "deepcdr"
DEEPCE = TEST_DATA / "drug" / "deepce"
GO = TEST_DATA / "go"

# ---------------------------------------------------------------- valid files, from real data


def _gene2go(n_rows: int = 80) -> pd.DataFrame:
    """The first rows of the real human gene2go subset, with term names and gene names."""
    table = pd.read_csv(GO / "human_gene2go.tsv.gz", sep="\t", dtype=str, nrows=n_rows)
    terms = pd.read_csv(GO / "go_terms.tsv.gz", sep="\t", dtype=str).set_index("go_id")["term"]
    names = pd.read_csv(GO / "human_gene_ids.tsv.gz", sep="\t", dtype=str)
    names = names.set_index("entrez_id")["gene_name"]
    table["term"] = table["go_id"].map(terms).fillna("")
    table["gene_name"] = table["entrez_id"].map(names).fillna("")
    return table


def _write_gmt(folder: Path) -> Path:
    table = _gene2go()
    lines = [
        f"{term}\t{group['term'].iloc[0]}\t" + "\t".join(dict.fromkeys(group["symbol"]))
        for term, group in table.groupby("go_id", sort=False)
    ]
    path = folder / "go_sets.gmt"
    path.write_text("\n".join(lines) + "\n")
    return path


_ASPECT = {"BP": "P", "MF": "F", "CC": "C"}
_CATEGORY = {"BP": "Process", "MF": "Function", "CC": "Component"}
_QUALIFIER = {"BP": "involved_in", "MF": "enables", "CC": "located_in"}


def _write_gaf(folder: Path) -> Path:
    lines = ["!gaf-version: 2.2"]
    for row in _gene2go().itertuples():
        fields = ["NCBIGene", row.entrez_id, row.symbol, _QUALIFIER[row.ontology], row.go_id]
        fields += ["GO_REF:0000000", row.evidence, "", _ASPECT[row.ontology], row.gene_name]
        fields += ["", "protein", "taxon:9606", "20220912", "NCBI", "", ""]
        lines.append("\t".join(fields))
    path = folder / "goa_human.gaf"
    path.write_text("\n".join(lines) + "\n")
    return path


def _write_gene2go(folder: Path) -> Path:
    lines = ["#tax_id\tGeneID\tGO_ID\tEvidence\tQualifier\tGO_term\tPubMed\tCategory"]
    for row in _gene2go().itertuples():
        fields = ["9606", row.entrez_id, row.go_id, row.evidence, _QUALIFIER[row.ontology]]
        fields += [row.term, "-", _CATEGORY[row.ontology]]
        lines.append("\t".join(fields))
    path = folder / "gene2go"
    path.write_text("\n".join(lines) + "\n")
    return path


def _write_long_table(folder: Path) -> Path:
    path = folder / "annotations.tsv"
    _gene2go()[["symbol", "go_id", "evidence", "ontology"]].to_csv(path, sep="\t", index=False)
    return path


def _go_links(n_rows: int = 120) -> pd.DataFrame:
    return pd.read_csv(GO / "go_parents.tsv.gz", sep="\t", dtype=str, nrows=n_rows)


def _write_parents_table(folder: Path) -> Path:
    path = folder / "go_parents.tsv"
    _go_links().to_csv(path, sep="\t", index=False)
    return path


def _write_obo(folder: Path) -> Path:
    lines = ["format-version: 1.2", "ontology: go", ""]
    for child, links in _go_links().groupby("child", sort=False):
        lines += ["[Term]", f"id: {child}"]
        for link in links.itertuples():
            relationship = "is_a" if link.relationship == "isa" else link.relationship
            if relationship == "is_a":
                lines.append(f"is_a: {link.parent} ! parent")
            else:
                lines.append(f"relationship: {relationship} {link.parent} ! parent")
        lines.append("")
    path = folder / "go-basic.obo"
    path.write_text("\n".join(lines))
    return path


def _copy(source: Path) -> Callable[[Path], Path]:
    def write(folder: Path) -> Path:
        return Path(shutil.copy(source, folder / source.name))

    return write


def _write_parity(folder: Path) -> None:
    for name in ("tiny_ckpt.pth", "tiny_hparams.pkl", "tiny_genes.txt"):
        shutil.copy(PARITY / name, folder / name)


def _parity_file(name: str) -> Callable[[Path], Path]:
    def write(folder: Path) -> Path:
        _write_parity(folder)
        return folder / name

    return write


def _gene_vector_lines(n: int = 40) -> list[str]:
    with gzip.open(DEEPCE / "gene_vector.csv.gz", "rt") as handle:
        return [next(handle) for _ in range(n)]


def _write_gene_vectors(folder: Path) -> Path:
    path = folder / "gene_vector.csv"
    path.write_text("".join(_gene_vector_lines()))
    return path


def _write_gene_vectors_gz(folder: Path) -> Path:
    path = folder / "gene_vector.csv.gz"
    path.write_bytes(gzip.compress("".join(_gene_vector_lines()).encode(), mtime=0))
    return path


def _write_smiles(folder: Path) -> Path:
    path = folder / "drugs_smiles.csv"
    lines = (DEEPCE / "drugs_smiles.csv").read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:30]))
    return path


def _signatures() -> tuple[list[str], np.ndarray, list[str]]:
    """Landmark genes, real numbers (DeepCE's gene vectors) and DeepCE drug ids."""
    vectors = pd.read_csv(io.StringIO("".join(_gene_vector_lines(20))), header=None, index_col=0)
    drugs = pd.read_csv(DEEPCE / "drugs_smiles.csv", header=None, nrows=6)[0].tolist()
    return list(vectors.index), vectors.to_numpy().T[:12], drugs


def _write_deepce_signatures(folder: Path) -> Path:
    genes, values, drugs = _signatures()
    cells = ["A375", "MCF7", "PC3"]
    rows = []
    for i, profile in enumerate(values):
        drug, cell = drugs[i % len(drugs)], cells[i % len(cells)]
        meta = [f"CPC00{i}_{cell}_24H:{drug}:10", drug, "trt_cp", cell, "10.0 um"]
        rows.append(meta + [float(v) for v in profile])
    path = folder / "signature_train.csv"
    pd.DataFrame(rows, columns=[*scl.datasets.DEEPCE_COLUMNS, *genes]).to_csv(path, index=False)
    return path


def _write_gctx(folder: Path) -> Path:
    import h5py

    genes, values, drugs = _signatures()
    path = folder / "level5.gctx"
    with h5py.File(path, "w") as f:
        f.attrs["version"] = "GCTX1.0"
        f["0/DATA/0/matrix"] = values.astype(np.float32)  # (n_cols, n_rows)
        f["0/META/ROW/id"] = np.array([g.encode() for g in genes])
        f["0/META/COL/id"] = np.array([f"CPC00{i}:{drugs[i % 6]}".encode() for i in range(12)])
        f["0/META/COL/pert_dose"] = np.array([10.0] * 11 + [-666.0])
    return path


def _deepdds_drugs() -> pd.DataFrame:
    table = pd.read_csv(DEEPCE / "drugs_smiles.csv", header=None, nrows=6, dtype=str)
    return table.assign(group=[0, 5, 0, 5, 0, 5])


def _write_deepdds_drugs(folder: Path) -> Path:
    path = folder / "drugs_0_10.csv"
    _deepdds_drugs().to_csv(path, header=False, index=False)
    return path


def _write_deepdds_combinations(folder: Path) -> Path:
    _write_deepdds_drugs(folder)
    smiles = _deepdds_drugs()[1].tolist()
    pairs = [(0, 1), (0, 2), (1, 3), (2, 4), (3, 5), (4, 5)]
    frame = pd.DataFrame(
        {
            "drug1": [smiles[a] for a, _ in pairs],
            "drug2": [smiles[b] for _, b in pairs],
            "cell": ["A375", "HT29", "A375", "T47D", "HT29", "A375"],
            "label": [0, 1, 0, 1, 1, 0],
        }
    )
    path = folder / "new_labels_0_10.csv"
    frame.to_csv(path, index=False)
    return path


_GDSC_FILES = (
    "GDSC_IC50.csv.gz",
    "GDSC_drug_list_2019-06-24.csv",
    "223drugs_pubchem_smiles.txt",
    "Cell_lines_annotations_20181226.txt.gz",
)


def _gdsc_file(name: str) -> Callable[[Path], Path]:
    def write(folder: Path) -> Path:
        for each in _GDSC_FILES:
            shutil.copy(DEEPCDR / each, folder / each)
        return folder / name

    return write


def _hkl_members(n: int = 2) -> list[tuple[str, bytes]]:
    with zipfile.ZipFile(DEEPCDR / "drug_graph_feat.zip") as archive:
        names = sorted(m for m in archive.namelist() if m.endswith(".hkl"))[:n]
        return [(name, archive.read(name)) for name in names]


def _write_graph_zip(folder: Path) -> Path:
    path = folder / "drug_graph_feat.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in _hkl_members():
            archive.writestr(name, data)
    return path


def _write_graph_folder(folder: Path) -> Path:
    (folder / "drug_graph_feat").mkdir()
    members = _hkl_members()
    for name, data in members:
        (folder / name).write_bytes(data)
    return folder / members[0][0]


@functools.lru_cache(maxsize=1)
def _cells() -> ad.AnnData:
    """40 cells x 30 genes of scanpy's pbmc68k_reduced (log-normalised ``raw``), in tests/data."""
    adata = ad.read_h5ad(TEST_DATA / "scrna" / "pbmc68k_reduced" / "10x_pbmc68k_reduced.h5ad")
    raw = adata.raw.to_adata()
    return ad.AnnData(
        X=np.asarray(raw.X[:40, :30].toarray() if hasattr(raw.X, "toarray") else raw.X[:40, :30]),
        obs=pd.DataFrame(index=raw.obs_names[:40].astype(str)),
        var=pd.DataFrame(index=raw.var_names[:30].astype(str)),
    )


def _write_gears(folder: Path) -> Path:
    cells = _cells()
    genes = list(cells.var_names)
    labels = ["ctrl"] * 16 + [f"{genes[0]}+ctrl"] * 12 + [f"{genes[1]}+{genes[2]}"] * 12
    adata = ad.AnnData(
        X=cells.X.copy(),
        obs=pd.DataFrame({"condition": labels, "cell_type": "PBMC"}, index=cells.obs_names),
        var=pd.DataFrame({"gene_name": genes}, index=[f"ENSG{i:011d}" for i in range(30)]),
    )
    path = folder / "perturb_processed.h5ad"
    adata.write_h5ad(path)
    return path


def _write_scperturb(folder: Path) -> Path:
    cells = _cells()
    genes = list(cells.var_names)
    labels = ["control"] * 16 + [genes[0]] * 12 + [genes[1]] * 12
    adata = ad.AnnData(
        X=np.expm1(cells.X).round(),
        obs=pd.DataFrame({"perturbation": labels}, index=cells.obs_names),
        var=pd.DataFrame(index=genes),
    )
    path = folder / "scperturb.h5ad"
    adata.write_h5ad(path)
    return path


# ---------------------------------------------------------------- the readers


@dataclass(frozen=True)
class Reader:
    """A public reader: how to write its valid input, and how to call it on a path.

    Attributes
    ----------
    name
        The test id.
    write
        Writes the valid input into a folder; returns the file that the examples damage (other
        files it writes stay valid).
    call
        Calls the reader with the (possibly damaged) path or value, and the folder.
    folder
        The reader reads a folder: its messages may name the folder instead of the file.
    hdf5
        HDF5 parses the file: each example runs in a child process with a time limit (see
        :func:`_isolated`).
    """

    name: str
    write: Callable[[Path], Path]
    call: Callable[[Any, Path], Any]
    folder: bool = False
    hdf5: bool = False


def _official(role: str) -> Callable[[Any, Path], Any]:
    def call(value: Any, folder: Path) -> Any:
        files = {
            "checkpoint": folder / "tiny_ckpt.pth",
            "hparams": folder / "tiny_hparams.pkl",
            "genes": folder / "tiny_genes.txt",
        }
        files[role] = value
        return scl_io.load_official(files["checkpoint"], files["hparams"], files["genes"])

    return call


READERS = [
    Reader("read_gmt", _write_gmt, lambda p, _: go.read_gmt(p)),
    Reader("read_gaf", _write_gaf, lambda p, _: go.read_gaf(p)),
    Reader("read_gene2go", _write_gene2go, lambda p, _: go.read_gene2go(p)),
    Reader(
        "read_gene2go_pickle",
        _copy(PARITY / "tiny_ens_gene2go.pkl"),
        lambda p, _: go.read_gene2go_pickle(p),
    ),
    Reader("read_go_parents_table", _write_parents_table, lambda p, _: go.read_go_parents(p)),
    Reader("read_go_parents_obo", _write_obo, lambda p, _: go.read_go_parents(p)),
    Reader("read_annotations_table", _write_long_table, lambda p, _: go.read_annotations(p)),
    Reader("read_annotations_gmt", _write_gmt, lambda p, _: go.read_annotations(p)),
    Reader(
        "read_checkpoint", _parity_file("tiny_ckpt.pth"), lambda p, _: scl_io.read_checkpoint(p)
    ),
    Reader("read_hparams", _parity_file("tiny_hparams.pkl"), lambda p, _: scl_io.read_hparams(p)),
    Reader("read_genes", _parity_file("tiny_genes.txt"), lambda p, _: scl_io.read_genes(p)),
    Reader(
        "GeneVocabulary.from_file",
        _parity_file("tiny_genes.txt"),
        lambda p, _: GeneVocabulary.from_file(p),
    ),
    Reader("load_official_checkpoint", _parity_file("tiny_ckpt.pth"), _official("checkpoint")),
    Reader("load_official_hparams", _parity_file("tiny_hparams.pkl"), _official("hparams")),
    Reader("load_official_genes", _parity_file("tiny_genes.txt"), _official("genes")),
    Reader("read_gears", _write_gears, lambda p, _: scl.datasets.read_gears(p), hdf5=True),
    Reader(
        "read_scperturb",
        _write_scperturb,
        lambda p, _: scl.datasets.read_scperturb(p),
        hdf5=True,
    ),
    Reader("read_gctx", _write_gctx, lambda p, _: scl.datasets.read_gctx(p), hdf5=True),
    Reader(
        "read_deepce_signatures",
        _write_deepce_signatures,
        lambda p, _: scl.datasets.read_deepce_signatures(p),
    ),
    Reader(
        "read_deepce_gene_vectors",
        _write_gene_vectors,
        lambda p, _: scl.datasets.read_deepce_gene_vectors(p),
    ),
    Reader(
        "deepce_landmark_genes_gz",
        _write_gene_vectors_gz,
        lambda p, _: scl.datasets.deepce_landmark_genes(p),
    ),
    Reader("read_deepce_smiles", _write_smiles, lambda p, _: scl.datasets.read_deepce_smiles(p)),
    Reader(
        "read_deepdds_drugs",
        _write_deepdds_drugs,
        lambda p, _: scl.datasets.read_deepdds_drugs(p),
    ),
    Reader(
        "read_deepdds_combinations",
        _write_deepdds_combinations,
        lambda p, folder: scl.datasets.read_deepdds_combinations(
            p, drugs=folder / "drugs_0_10.csv"
        ),
    ),
    *[
        Reader(
            f"gdsc_deepcdr[{name}]",
            _gdsc_file(name),
            lambda p, folder: scl.datasets.gdsc_deepcdr(folder if isinstance(p, Path) else p),
            folder=True,
        )
        for name in _GDSC_FILES
    ],
    Reader(
        "read_deepcdr_graph_features_zip",
        _write_graph_zip,
        lambda p, _: read_deepcdr_graph_features(p),
        hdf5=True,
    ),
    Reader(
        "read_deepcdr_graph_features_folder",
        _write_graph_folder,
        lambda p, folder: read_deepcdr_graph_features(
            folder / "drug_graph_feat" if isinstance(p, Path) else p
        ),
        hdf5=True,
    ),
]
_BY_NAME = {reader.name: reader for reader in READERS}


@functools.cache
def _valid(name: str) -> tuple[tuple[tuple[str, bytes], ...], str]:
    """The valid input of a reader: every file it writes (relative path, bytes), and its target."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        target = _BY_NAME[name].write(folder)
        files = tuple(
            (str(p.relative_to(folder)), p.read_bytes())
            for p in sorted(folder.rglob("*"))
            if p.is_file()
        )
        return files, str(target.relative_to(folder))


def _materialise(name: str, folder: Path) -> tuple[Path, bytes]:
    files, target = _valid(name)
    for relative, data in files:
        (folder / relative).parent.mkdir(parents=True, exist_ok=True)
        (folder / relative).write_bytes(data)
    return folder / target, dict(files)[target]


def _snapshot(folder: Path) -> dict[str, str]:
    """Every path under ``folder`` with the sha256 of its bytes (``"folder"`` for folders)."""
    return {
        str(p.relative_to(folder)): "folder"
        if p.is_dir()
        else hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
    }


# ---------------------------------------------------------------- damage

_FRACTION = st.floats(0, 1, allow_nan=False)
#: what hypothesis draws: random bytes, a truncation, a flipped byte, a valid prefix followed by
#: random bytes (positions as fractions of the file), an empty file, a folder in place of the
#: file, a missing path, a value that is not a path
DAMAGE = st.one_of(
    st.tuples(st.just("random"), st.binary(min_size=1, max_size=4096)),
    st.tuples(st.just("truncate"), _FRACTION),
    st.tuples(st.just("flip"), _FRACTION, st.integers(1, 255)),
    st.tuples(st.just("tail"), _FRACTION, st.binary(min_size=1, max_size=256)),
    st.sampled_from([("empty",), ("folder",), ("missing",)]),
    st.tuples(st.just("type"), st.sampled_from([0, 7, None, [], ["a.txt"], 1.5])),
)


def _position(fraction: float, size: int) -> int:
    return min(int(fraction * size), max(size - 1, 0))


def _apply(damage: tuple, target: Path, valid: bytes) -> Any:
    """Damage ``target`` on disk; the value to pass to the reader."""
    kind = damage[0]
    if kind == "type":
        return damage[1]
    if kind in ("folder", "missing"):
        target.unlink()
        if kind == "folder":
            target.mkdir()
        return target
    if kind == "random":
        content = damage[1]
    elif kind == "truncate":
        content = valid[: _position(damage[1], len(valid))]
    elif kind == "flip":
        position = _position(damage[1], len(valid))
        content = valid[:position] + bytes([valid[position] ^ damage[2]]) + valid[position + 1 :]
    elif kind == "tail":
        content = valid[: _position(damage[1], len(valid))] + damage[2]
    else:  # empty
        content = b""
    target.write_bytes(content)
    return target


def _names_the_input(message: str, value: Any, target: Path, folder: bool) -> bool:
    """Whether the message names the damaged file (its folder too, for a reader of a folder),
    or the type of the value given in its place."""
    if isinstance(value, Path):
        names = {target.name, target.name.removesuffix(".gz")}
        if folder:
            names.add(target.parent.name)
        return any(name in message for name in names)
    return type(value).__name__ in message or repr(value) in message


def _check(name: str, damage: tuple, folder: Path) -> None:
    """Run a reader on damaged input in ``folder``: it returns or raises a ScLongError in one
    line naming the file; nothing is written."""
    reader = _BY_NAME[name]
    target, valid = _materialise(name, folder)
    value = _apply(damage, target, valid)
    before = _snapshot(folder)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            reader.call(value, folder)
    except ScLongError as error:
        message = str(error)
        assert message.strip(), f"{name}: an empty message for {damage!r}"
        assert "\n" not in message, f"{name}: a message of several lines: {message!r}"
        assert "weights_only=False" not in message, f"{name} advises weights_only=False"
        assert _names_the_input(message, value, target, reader.folder), (
            f"{name}: the message does not name {target.name} / {value!r}: {message!r}"
        )
    except Exception as error:
        raise AssertionError(
            f"{name} raised {type(error).__name__} (not a ScLongError) for {damage!r}: "
            f"{' '.join(str(error).split())[:300]}"
        ) from error
    assert _snapshot(folder) == before, f"{name} wrote into the folder for {damage!r}"


#: seconds an isolated example may take (they take milliseconds)
HANG_SECONDS = 60


def _isolated(check: Callable[[], None], what: str) -> None:
    """Run ``check`` in a forked child process, which is killed after :data:`HANG_SECONDS`.

    HDF5 itself can loop forever on a damaged file (HDF5 2.0.0 through h5py 3.16: one flipped
    byte in the length of a global-heap object, e.g. an h5ad's variable-length strings, hangs
    the read of an attribute), where no error can be raised; the child turns a hang, or a
    crash, into a failed example instead of a test run that never ends.
    """
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: run the check, report, exit at once (no pytest teardown)
        os.close(read_end)
        try:
            check()
            report = b"ok"
        except BaseException as error:  # reported to the parent, which raises it
            report = f"fail {' '.join(str(error).split())[:2000]}".encode()
        os.write(write_end, report)
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        ready, _, _ = select.select([pipe], [], [], HANG_SECONDS)
        if not ready:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            raise AssertionError(f"{what} hung for more than {HANG_SECONDS} s")
        report = pipe.read()
    _, status = os.waitpid(pid, 0)
    if not report:
        raise AssertionError(f"{what} crashed (wait status {status})")
    if report != b"ok":
        raise AssertionError(report.decode().removeprefix("fail "))


def check_reader(name: str, damage: tuple) -> None:
    """:func:`_check` in a fresh folder (in a child process for the readers of HDF5 files)."""
    _valid(name)  # written once, in this process (a child's cache is lost with it)
    with tempfile.TemporaryDirectory() as tmp:
        if _BY_NAME[name].hdf5 and hasattr(os, "fork"):
            _isolated(lambda: _check(name, damage, Path(tmp)), f"{name} on {damage!r}")
        else:
            _check(name, damage, Path(tmp))


@pytest.mark.parametrize("name", list(_BY_NAME))
def test_valid_input_reads(name):
    """The starting point is valid: each reader reads its file as it is (no damage)."""
    reader = _BY_NAME[name]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        target, _ = _materialise(name, folder)
        before = _snapshot(folder)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = reader.call(target, folder)
        assert result is not None
        if hasattr(result, "__len__"):
            assert len(result) > 0, f"{name} read nothing from its valid input"
        assert _snapshot(folder) == before


@pytest.mark.parametrize("name", list(_BY_NAME))
@settings(max_examples=EXAMPLES)
@example(damage=("empty",))
@example(damage=("folder",))
@example(damage=("missing",))
@example(damage=("type", 3))
@example(damage=("type", None))
@example(damage=("type", ["a.txt"]))
@example(damage=("random", bytes(range(256))))  # binary: not UTF-8, not gzip, not HDF5
@example(damage=("truncate", 0.5))
@example(damage=("flip", 0.0, 0xFF))  # the first byte: the magic number of binary formats
@given(damage=DAMAGE)
def test_damaged_input_is_refused_in_one_line(name, damage):
    """Damaged input: the reader returns, or raises a ScLongError in one line naming the file."""
    check_reader(name, damage)


_HPARAMS_CONTENT = [
    None,
    [1, 2, 3],
    {1: 2, "a": 3},  # keys that cannot be sorted together
    {"max_seq_len": "512", "top_seq_len": 64, "base_dim": 32},
    {"max_seq_len": 512, "top_seq_len": 64, "base_dim": 32, "G_go": "abc"},
    {"max_seq_len": 512, "top_seq_len": 64, "base_dim": 32, "G_go": [[0, 1], [1]]},
    {"max_seq_len": 512, "top_seq_len": 600, "base_dim": 32},
    {"max_seq_len": 10**12, "top_seq_len": 64, "base_dim": 32},
]
_CHECKPOINT_CONTENT = [
    None,
    [1, 2, 3],
    {"model_state_dict": {"a": 1}},
    {"model_state_dict": [1, 2]},
    {"token_emb.fc1.weight": "text"},
    {},
]


def _refused_or_read(call: Callable[[], Any], path: Path, must_refuse: bool) -> None:
    """``call()`` returns (unless ``must_refuse``) or raises a ScLongError naming ``path``."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            call()
    except ScLongError as error:
        assert "\n" not in str(error) and path.name in str(error), error
    else:
        assert not must_refuse, f"{path.name} was loaded"


@pytest.mark.parametrize("content", _HPARAMS_CONTENT, ids=repr)
def test_hparams_pickle_of_other_content_is_refused(tmp_path, content):
    """A valid pickle of something else than the official arguments: one line naming it."""
    _write_parity(tmp_path)
    path = tmp_path / "tiny_hparams.pkl"
    path.write_bytes(pickle.dumps(content))
    _refused_or_read(lambda: scl_io.read_hparams(path), path, must_refuse=False)
    _refused_or_read(lambda: _official("hparams")(path, tmp_path), path, must_refuse=True)


@pytest.mark.parametrize("content", _CHECKPOINT_CONTENT, ids=repr)
def test_checkpoint_of_other_content_is_refused(tmp_path, content):
    """A valid torch file of something else than an official checkpoint: one line naming it."""
    import torch

    _write_parity(tmp_path)
    path = tmp_path / "tiny_ckpt.pth"
    torch.save(content, path)
    _refused_or_read(lambda: scl_io.read_checkpoint(path), path, must_refuse=False)
    _refused_or_read(lambda: _official("checkpoint")(path, tmp_path), path, must_refuse=True)


def test_profiles_are_registered():
    """The profiles of test_properties.py, and every reader tested."""
    assert PROFILE in ("ci", "long")
    assert settings.get_profile("ci").derandomize
    assert settings.get_profile("long").max_examples > settings.get_profile("ci").max_examples
    assert len(READERS) == len(_BY_NAME) == 30
