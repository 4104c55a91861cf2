"""Resuming pretraining verifies the checkpoint first (issue 23, item 1).

A real pretraining run (the tiny preset on 32 cells of the CellTypist PBMC sample, the store's 256
most detected genes, two steps, a checkpoint a step) writes the checkpoints. Each test then hands
``SCLONG.pretrain(resume=...)`` (or ``sclong pretrain --resume``) a checkpoint that is good, older
(no checksum), diverged (NaN, infinite), altered (bytes flipped, a tensor changed, another
configuration), truncated, foreign, crafted or not a torch file at all.
"""

from __future__ import annotations

import os
import struct
import warnings
import zipfile
from pathlib import Path

import anndata as ad
import pytest
import torch

from conftest import most_detected
from sclong_scverse.data import ScLongCorpus
from sclong_scverse.model import SCLONG, ModelIntegrityError
from sclong_scverse.module._training_plan import CHECKPOINT_RECORD_KEY, checkpoint_digest

N_GENES = 256


def _pretrain(store: Path, genes: list[str], checkpoint_dir: Path, max_steps: int, resume=None):
    corpus = ScLongCorpus([store], block_size=16, seed=1)
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="top_seq_len is larger than the vocabulary")
        model = SCLONG.from_corpus(corpus, vocabulary=genes, gene_graph=False)
    return model.pretrain(
        corpus,
        max_steps=max_steps,
        batch_size=4,
        accelerator="cpu",
        enable_progress_bar=False,
        checkpoint_dir=checkpoint_dir,
        checkpoint_every_n_steps=1,
        resume=resume,
    )


@pytest.fixture(scope="module")
def run(data_dir, tmp_path_factory):
    """``(store, genes, checkpoint folder, losses)`` of a two-step run with a checkpoint a step."""
    folder = tmp_path_factory.mktemp("resume")
    source = sorted((data_dir / "scrna" / "pbmc_celltypist_sample").glob("*.h5ad"))[0]
    store = most_detected(ad.read_h5ad(source)[:32].copy(), N_GENES)
    store.write_h5ad(folder / "pbmc.h5ad")
    genes = list(store.var_names)
    losses = _pretrain(folder / "pbmc.h5ad", genes, folder / "checkpoints", max_steps=2)
    assert list(losses["step"]) == [0, 1]
    return folder / "pbmc.h5ad", genes, folder / "checkpoints", losses


def _resume(run, checkpoint: Path, tmp_path: Path):
    store, genes, _, _ = run
    return _pretrain(store, genes, tmp_path / "again", max_steps=2, resume=checkpoint)


def _refused(run, checkpoint: Path, tmp_path: Path, match: str) -> str:
    """The one-line message a resume from ``checkpoint`` is refused with (it names the file)."""
    with pytest.raises(ModelIntegrityError, match=match) as info:
        _resume(run, checkpoint, tmp_path)
    message = str(info.value)
    assert str(checkpoint) in message and "\n" not in message
    assert "weights_only=False" not in message and "weights_only` set to `False" not in message
    assert not (tmp_path / "again").exists()  # refused before anything was trained or written
    return message


def _saved(checkpoint: dict, path: Path, *, reseal: bool = False) -> Path:
    """Write ``checkpoint`` to ``path``; ``reseal``: its checksum recomputed (as if written)."""
    if reseal:
        record = checkpoint[CHECKPOINT_RECORD_KEY]
        record["sha256"] = checkpoint_digest(checkpoint, record)
    torch.save(checkpoint, path)
    return path


def _first_weight(checkpoint: dict) -> torch.Tensor:
    return checkpoint["state_dict"]["module.network.value_embedding.fc1.weight"]


def test_checkpoints_carry_a_checksum_and_resume_exactly(run, tmp_path):
    _, _, folder, losses = run
    checkpoint = torch.load(folder / "step00000001.ckpt", weights_only=True)
    record = checkpoint[CHECKPOINT_RECORD_KEY]
    assert record["format"] == "sclong-scverse-checkpoint/1"
    assert record["config"]["n_genes"] == N_GENES
    assert record["sha256"] == checkpoint_digest(checkpoint, record)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        resumed = _resume(run, folder / "step00000001.ckpt", tmp_path)
    assert not [w for w in caught if "could not be verified" in str(w.message)]
    assert list(resumed["step"]) == [1]
    assert resumed["masked_mse"].iloc[0] == losses["masked_mse"].iloc[1]  # exactly


def test_checkpoint_without_checksum_resumes_with_a_warning(run, tmp_path):
    """Checkpoints written before checksums: resumed, saying that they were not verified."""
    _, _, folder, losses = run
    checkpoint = torch.load(folder / "step00000001.ckpt", weights_only=True)
    del checkpoint[CHECKPOINT_RECORD_KEY]
    older = _saved(checkpoint, tmp_path / "older.ckpt")
    with pytest.warns(UserWarning, match="older.ckpt was written before checkpoints carried a"):
        resumed = _resume(run, older, tmp_path)
    assert resumed["masked_mse"].iloc[0] == losses["masked_mse"].iloc[1]


def test_nan_or_infinite_weights_and_optimiser_state_are_refused(run, tmp_path):
    _, _, folder, _ = run
    # a run that diverged writes NaN with a checksum that matches: refused all the same
    checkpoint = torch.load(folder / "last.ckpt", weights_only=True)
    _first_weight(checkpoint)[0, 0] = float("nan")
    diverged = _saved(checkpoint, tmp_path / "diverged.ckpt", reseal=True)
    message = _refused(run, diverged, tmp_path, "NaN or infinite values")
    assert "value_embedding.fc1.weight" in message
    # NaN written into a checkpoint afterwards (no new checksum)
    checkpoint = torch.load(folder / "last.ckpt", weights_only=True)
    _first_weight(checkpoint)[1, 0] = float("nan")
    _refused(run, _saved(checkpoint, tmp_path / "nan.ckpt"), tmp_path, "NaN or infinite")
    # the optimiser's second moments
    checkpoint = torch.load(folder / "last.ckpt", weights_only=True)
    moments = checkpoint["optimizer_states"][0]["state"][0]["exp_avg_sq"]
    moments.view(-1)[0] = float("inf")
    adam = _saved(checkpoint, tmp_path / "adam.ckpt", reseal=True)
    assert "optimizer_states" in _refused(run, adam, tmp_path, "NaN or infinite")


def test_flipped_bytes_a_changed_tensor_or_another_configuration_are_refused(run, tmp_path):
    _, _, folder, _ = run
    good = folder / "last.ckpt"
    # bytes flipped inside the largest tensor's record: torch reads the file without complaint
    data = bytearray(good.read_bytes())
    largest = max(zipfile.ZipFile(good).infolist(), key=lambda info: info.file_size)
    name_length, extra_length = struct.unpack("<HH", data[largest.header_offset + 26 :][:4])
    start = largest.header_offset + 30 + name_length + extra_length + 64
    data[start : start + 8] = bytes(byte ^ 0x5A for byte in data[start : start + 8])
    (tmp_path / "flipped.ckpt").write_bytes(bytes(data))
    torch.load(tmp_path / "flipped.ckpt", weights_only=True)  # no error from torch itself
    _refused(run, tmp_path / "flipped.ckpt", tmp_path, "does not match the checksum")
    # one weight changed (finite), the file written anew by torch
    checkpoint = torch.load(good, weights_only=True)
    _first_weight(checkpoint)[0, 0] += 0.25
    changed = _saved(checkpoint, tmp_path / "changed.ckpt")
    _refused(run, changed, tmp_path, "does not match the checksum")
    # sealed for another configuration than the model's
    checkpoint = torch.load(good, weights_only=True)
    checkpoint[CHECKPOINT_RECORD_KEY]["config"]["large_depth"] += 1
    other = _saved(checkpoint, tmp_path / "other.ckpt", reseal=True)
    assert "large_depth" in _refused(run, other, tmp_path, "another configuration")


def test_truncated_foreign_crafted_and_text_files_are_refused(run, tmp_path):
    _, _, folder, _ = run
    good = (folder / "last.ckpt").read_bytes()
    (tmp_path / "truncated.ckpt").write_bytes(good[: len(good) // 2])
    _refused(run, tmp_path / "truncated.ckpt", tmp_path, "not a readable torch checkpoint")
    (tmp_path / "empty.ckpt").write_bytes(b"")
    _refused(run, tmp_path / "empty.ckpt", tmp_path, "not a readable torch checkpoint")
    (tmp_path / "notes.ckpt").write_text("step 2, loss 0.4\n")
    _refused(run, tmp_path / "notes.ckpt", tmp_path, "not a readable torch checkpoint")
    torch.save({"a": 1}, tmp_path / "foreign.ckpt")
    _refused(run, tmp_path / "foreign.ckpt", tmp_path, "not a checkpoint written by SCLONG")
    torch.save({"state_dict": {}, "pytorch-lightning_version": "2.5"}, tmp_path / "pl.ckpt")
    _refused(run, tmp_path / "pl.ckpt", tmp_path, "not a checkpoint written by SCLONG")
    # a crafted file whose unpickling would create a file: refused, and nothing ran
    marker = tmp_path / "ran"

    class Crafted:
        def __reduce__(self):
            return (os.mkdir, (str(marker),))

    checkpoint = torch.load(folder / "last.ckpt", weights_only=True)
    checkpoint["extra"] = Crafted()
    torch.save(checkpoint, tmp_path / "crafted.ckpt")
    _refused(run, tmp_path / "crafted.ckpt", tmp_path, "nothing in it was run")
    assert not marker.exists()


def test_command_line_refuses_a_bad_checkpoint_with_one_line(run, tmp_path, capsys):
    from sclong_scverse import cli

    store, _, folder, _ = run
    (tmp_path / "notes.ckpt").write_text("not a checkpoint\n")
    good = (folder / "last.ckpt").read_bytes()
    (tmp_path / "truncated.ckpt").write_bytes(good[:1000])
    torch.save({"a": 1}, tmp_path / "foreign.ckpt")
    for name in ("notes.ckpt", "truncated.ckpt", "foreign.ckpt"):
        argv = ["pretrain", str(store), "--out", str(tmp_path / "model"), "--max-steps", "2"]
        argv += ["--batch-size", "4", "--no-progress", "--resume", str(tmp_path / name)]
        assert cli.main(argv) == 2, name
        err = capsys.readouterr().err
        errors = [line for line in err.splitlines() if line.startswith("sclong pretrain: error")]
        assert len(errors) == 1 and "Traceback" not in err, err
        assert errors[0].startswith("sclong pretrain: error: resume: ")
        assert str(tmp_path / name) in errors[0] and "weights_only" not in err
        assert not (tmp_path / "model").exists()
