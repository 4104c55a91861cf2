"""Silent wrong results refused (issue 23, cases 3 to 8).

Each case used to return a plausible answer (no effect, no agreement, an empty dictionary, a
folder outside the cache, lower coverage) or to overwrite a user's file without a word; each is
now a clear error that names the gene, argument or file. Data: the committed Papalexi 2021
subset (``tests/data/perturb/papalexi2021``) and the CellTypist PBMC sample
(``tests/data/scrna/pbmc_celltypist_sample``); the model is a tiny, untrained scLong (no GO
graph): every case is refused before the model runs.
"""

from __future__ import annotations

import warnings

import anndata as ad
import numpy as np
import pytest
import torch

import sclong_scverse as scl
from conftest import TEST_DATA
from sclong_scverse.data import ScLongCorpus
from sclong_scverse.go import read_gaf
from sclong_scverse.model import ModelIntegrityError, _pretrained
from sclong_scverse.validation import ScLongInputError

MISSING = "STAT1"  # measured in the screen, left out of the model's vocabulary


#: torch on 2 threads in this module (the CI machine's cores), restored after
pytestmark = pytest.mark.usefixtures("two_torch_threads")


@pytest.fixture(scope="module")
def screen():
    """The Papalexi subset: layers log1p and sclong, GEARS conditions, ranked DE genes."""
    if not (TEST_DATA / "perturb" / "papalexi2021").is_dir():
        pytest.skip("tests/data/perturb/papalexi2021 not found (scripts/build_test_data.py)")
    adata = scl.datasets.papalexi2021(TEST_DATA)
    log = adata.copy()
    log.X = log.X.astype(np.float32)
    scl.pp.normalize(adata)  # layers["sclong"], scLong's input
    import scanpy as sc

    sc.pp.normalize_total(log, target_sum=1e4)
    sc.pp.log1p(log)
    adata.layers["log1p"] = log.X
    scl.pp.perturbation_conditions(adata, "perturbation", layer="log1p")
    return adata


@pytest.fixture(scope="module")
def model(screen):
    """A tiny untrained scLong on the control cells whose vocabulary lacks ``MISSING``."""
    control = screen[screen.obs["condition"] == "ctrl"].copy()
    scl.SCLONG.setup_anndata(control, layer="sclong")
    torch.manual_seed(0)
    genes = [g for g in control.var_names if g != MISSING]
    return scl.SCLONG(control, config="tiny", vocabulary=genes, gene_graph=False)


# ---------------------------------------------------------------------- case 3
def test_in_silico_perturb_refuses_a_gene_the_model_does_not_read(screen, model):
    control = screen[screen.obs["condition"] == "ctrl"].copy()
    assert MISSING in set(control.var_names)  # the AnnData has it; the model does not
    with pytest.raises(ScLongInputError, match=rf"\['{MISSING}'\].*not in the model's vocab"):
        scl.tl.in_silico_perturb(
            control, model, ["JAK2", MISSING], indices=np.arange(16), n_null=2, n_bins=2
        )
    assert "sclong_in_silico" not in control.uns


# ---------------------------------------------------------------------- case 4
def test_in_silico_vs_screen_refuses_non_finite_observed_values(screen, model):
    adata = screen.copy()
    adata.layers["nan"] = np.full(adata.shape, np.nan, dtype=np.float32)
    with pytest.raises(ScLongInputError, match=r"adata.layers\['nan'\].*NaN"):
        scl.tl.in_silico_vs_screen(
            adata, model, targets=["JAK2"], layer="nan", n_cells=16, n_null=2, n_bins=2
        )
    assert "sclong_in_silico_screen" not in adata.uns


# ---------------------------------------------------------------------- case 5
def test_save_pretrained_keeps_the_users_readme(model, tmp_path):
    folder = tmp_path / "release"
    folder.mkdir()
    (folder / "README.md").write_text("my own notes\n")
    card = {"name": "tiny", "training_data": "Papalexi 2021 control cells"}
    with pytest.raises(ValueError, match=r"README.md.*overwrite=True"):
        model.save_pretrained(folder, **card)
    assert (folder / "README.md").read_text() == "my own notes\n"
    assert sorted(p.name for p in folder.iterdir()) == ["README.md"]  # nothing written
    model.save_pretrained(folder, overwrite=True, **card)
    assert (folder / "README.md").read_text().startswith("---\nlibrary_name: sclong-scverse")


# ---------------------------------------------------------------------- case 6
@pytest.mark.parametrize("ref", ["../../../outside", "absolute"])
def test_hub_cache_ref_outside_the_cache_is_refused(tmp_path, ref):
    outside = tmp_path / "outside"  # a complete model folder beside the cache
    outside.mkdir()
    for name in _pretrained.MODEL_FILES:
        (outside / name).write_text("{}")
    repo = tmp_path / "hub" / "models--org--name"
    (repo / "refs").mkdir(parents=True)
    (repo / "snapshots").mkdir()
    (repo / "refs" / "main").write_text(str(outside) if ref == "absolute" else ref)
    with pytest.raises(ModelIntegrityError, match=r"refs/main.*not a commit hash"):
        _pretrained.resolve_pretrained(
            "org/name", cache_dir=tmp_path / "hub", local_files_only=True
        )


# ---------------------------------------------------------------------- case 7
def test_corpus_refuses_duplicated_gene_names(data_dir, tmp_path):
    source = sorted((data_dir / "scrna" / "pbmc_celltypist_sample").glob("*.h5ad"))[0]
    adata = ad.read_h5ad(source)[:20].copy()
    names = adata.var_names.to_numpy().copy()
    names[1], names[3] = names[0], names[2]  # two names twice
    adata.var_names = names
    path = tmp_path / "duplicated.h5ad"
    with warnings.catch_warnings():  # anndata's own note on non-unique names
        warnings.simplefilter("ignore", UserWarning)
        adata.write_h5ad(path)
    with pytest.raises(ScLongInputError, match=rf"duplicated.h5ad.*duplicated.*'{names[0]}'"):
        ScLongCorpus(path)


# ---------------------------------------------------------------------- case 8
def test_gaf_with_an_unknown_aspect_is_refused(tmp_path):
    fields = ["UniProtKB", "P04637", "TP53", "enables", "GO:0003677", "PMID:0", "IDA", "", "X",
              "", "", "protein", "taxon:9606", "20220912", "UniProt", "", ""]  # fmt: skip
    gaf = tmp_path / "unknown_aspect.gaf"
    gaf.write_text("!gaf-version: 2.2\n" + "\t".join(fields) + "\n")
    with pytest.raises(ScLongInputError, match=r"unknown_aspect.gaf.*line 2.*'X'.*P, F"):
        read_gaf(gaf)
