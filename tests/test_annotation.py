"""Cell-type annotation (SCLONGClassifier, scl.tl.annotate) on real data: CellBench, pbmc68k.

Tiny backbones on the 256 most detected genes, trained a few epochs, keep the file within a few
minutes on two CPU cores. The backbones are not pretrained (their random features already
separate the cell lines; fine-tuning is what is tested here).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

import sclong_scverse as scl
from conftest import most_detected
from sclong_scverse.model import SCLONG, BackboneMismatchError, SCLONGClassifier
from sclong_scverse.module import backbone_sha256
from sclong_scverse.nn import LoRALinear, add_lora
from sclong_scverse.pp import ScLongInputError

N_GENES = 256
TRAIN = dict(accelerator="cpu", enable_progress_bar=False, batch_size=32, lr=3e-3)


def _config(n_genes: int) -> dict:
    config = scl.ScLongConfig.preset("tiny").to_dict()
    config.pop("n_genes", None)
    config["top_seq_len"] = n_genes // 4
    return config


@pytest.fixture(scope="module")
def cellbench_small(data_dir):
    adata = most_detected(scl.datasets.cellbench(data_dir), N_GENES)
    scl.pp.normalize(adata)
    return adata


@pytest.fixture(scope="module")
def backbone(cellbench_small):
    adata = cellbench_small.copy()
    SCLONG.setup_anndata(adata, layer="sclong")
    torch.manual_seed(0)
    return SCLONG(adata, config=_config(N_GENES))


def _stratified(obs: pd.DataFrame, key: str, per_class: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    chosen = []
    for _, rows in obs.groupby(key, observed=True).indices.items():
        chosen.extend(rng.choice(rows, min(per_class, len(rows)), replace=False))
    return np.sort(np.asarray(chosen))


def _accuracy(predicted, truth) -> tuple[float, float]:
    """Accuracy and the majority-class baseline (the most frequent true label)."""
    truth = np.asarray(truth, dtype=str)
    majority = float(pd.Series(truth).value_counts(normalize=True).max())
    return float((np.asarray(predicted) == truth).mean()), majority


@pytest.fixture(scope="module")
def lora_model(cellbench_small, backbone):
    """LoRA classifier trained on CEL-seq2 cells (60 per line), and the Drop-seq query."""
    adata = cellbench_small
    celseq = adata[adata.obs["batch"] != "sc_dropseq"].copy()
    reference = celseq[_stratified(celseq.obs, "cell_line", 60)].copy()
    query = adata[adata.obs["batch"] == "sc_dropseq"].copy()
    torch.manual_seed(0)
    model = SCLONGClassifier.from_sclong(
        backbone, reference, labels_key="cell_line", mode="lora", lora_rank=4
    )
    model.train(max_epochs=4, **TRAIN)
    return model, reference, query


def test_cross_protocol_celseq2_to_dropseq_beats_majority(cellbench_small, backbone, capsys):
    adata = cellbench_small
    celseq = adata[adata.obs["batch"] != "sc_dropseq"].copy()
    reference = celseq[_stratified(celseq.obs, "cell_line", 120)].copy()
    query = adata[adata.obs["batch"] == "sc_dropseq"].copy()
    # the fine-tuning modes' train/validation split comes from scvi-tools' data splitter, which
    # draws from numpy's global generator: seeded here (scvi.settings.seed seeds numpy, torch
    # and random), else the accuracy varied from 0.43 to 0.80 between runs
    import scvi

    scvi.settings.seed = 0
    model = SCLONGClassifier.from_sclong(
        backbone, reference, labels_key="cell_line", mode="partial"
    )
    model.train(max_epochs=6, **TRAIN)
    truth = query.obs["cell_line"].astype(str).to_numpy()
    predicted = model.predict(query)
    accuracy, majority = _accuracy(predicted, truth)
    with capsys.disabled():
        print(f"\nCEL-seq2 -> Drop-seq (partial): accuracy {accuracy:.3f}, majority {majority:.3f}")
    assert accuracy > majority + 0.15
    probabilities = model.predict(query, soft=True)
    assert list(probabilities.columns) == model.classes_
    assert probabilities.index.equals(query.obs_names)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-9)
    np.testing.assert_array_equal(
        np.asarray(model.classes_)[probabilities.to_numpy().argmax(axis=1)], predicted
    )
    history = model.history
    assert {"train_loss", "validation_loss", "accuracy_validation"} <= set(history)
    # the trained layers are the decoder's last one and its norm; the rest stayed fixed
    trained = {n for n, p in model.module.network.named_parameters() if p.requires_grad}
    last = f"decoder.layers.{model.module.config.decoder_depth - 1}."
    assert trained and all(n.startswith((last, "decoder_norm.")) for n in trained)
    original = backbone.module.network.state_dict()
    tuned = model.module.network.state_dict()
    assert torch.equal(tuned["large_in.weight"], original["large_in.weight"])
    assert not torch.equal(tuned["decoder_norm.weight"], original["decoder_norm.weight"])
    assert model.backbone_sha256_ == backbone_sha256(backbone.module.network)


def test_lora_trains_head_and_adapters_only(lora_model, backbone):
    model, _, query = lora_model
    counts = model.module.parameter_counts()
    lora = sum(p.numel() for n, p in model.module.named_parameters() if "lora_" in n)
    assert counts["trainable"] == counts["head"] + lora
    assert model.backbone_sha256_ == backbone_sha256(model.module.network)
    np.testing.assert_allclose(model.predict(query, soft=True).sum(axis=1), 1.0, atol=1e-9)


def test_annotate_writes_documented_fields(lora_model):
    model, _, query = lora_model
    adata = query.copy()
    out = scl.tl.annotate(adata, model, threshold=0.6, copy=True)
    assert "sclong_label" not in adata.obs  # copy=True leaves the input untouched
    assert scl.tl.annotate(adata, model, threshold=0.6) is None
    labels = adata.obs["sclong_label"]
    confidence = adata.obs["sclong_label_confidence"]
    assert isinstance(labels.dtype, pd.CategoricalDtype)
    assert list(labels.cat.categories) == [*model.classes_, "unknown"]
    assert ((labels == "unknown") == (confidence < 0.6)).all()
    assert adata.uns["sclong_label"]["params"]["threshold_rule"] == "given"
    assert adata.obs["sclong_label_ood"].dtype == np.float32
    assert np.isfinite(adata.obs["sclong_label_ood"]).all()
    assert confidence.between(1 / len(model.classes_), 1.0).all()
    probabilities = adata.obsm["sclong_label_probabilities"]
    np.testing.assert_allclose(probabilities.to_numpy().max(axis=1), confidence, rtol=1e-6)
    assert adata.uns["sclong_label"]["params"]["threshold"] == 0.6
    pd.testing.assert_series_equal(out.obs["sclong_label"], labels)
    ax = scl.pl.confusion_matrix(adata, "cell_line", show=False)
    assert ax.get_ylabel() == "true (cell_line)"
    with pytest.raises(ValueError, match="unknown_label"):
        scl.tl.annotate(adata, model, unknown_label=model.classes_[0])
    with pytest.raises(ValueError, match="'auto' or a number"):
        scl.tl.annotate(adata, model, threshold="calibrated")


def test_save_load_round_trip_and_wrong_backbone(lora_model, backbone, tmp_path):
    model, reference, query = lora_model
    expected = model.predict(query, soft=True)
    model.save(tmp_path / "clf")
    saved = (tmp_path / "clf" / "model.pt").stat().st_size
    loaded = SCLONGClassifier.load(tmp_path / "clf", adata=reference.copy(), backbone=backbone)
    pd.testing.assert_frame_equal(loaded.predict(query, soft=True), expected)
    np.testing.assert_array_equal(loaded.ood_score(query), model.ood_score(query))
    assert loaded.calibration_ == model.calibration_
    assert loaded.confidence_threshold() == model.confidence_threshold()
    assert loaded.classes_ == model.classes_ and loaded.mode == "lora"
    assert len(loaded.history["train_loss"]) == len(model.history["train_loss"])

    # the whole model in one folder: no backbone needed
    model.save(tmp_path / "full", save_backbone=True)
    assert (tmp_path / "full" / "model.pt").stat().st_size > 2 * saved
    full = SCLONGClassifier.load(tmp_path / "full", adata=reference.copy())
    pd.testing.assert_frame_equal(full.predict(query, soft=True), expected)

    # a backbone with other weights is refused, as is loading without one
    other = SCLONG(backbone.adata, config=backbone.module.config)
    with torch.no_grad():
        other.module.network.load_state_dict(backbone.module.network.state_dict())
        other.module.network.decoder_norm.weight.add_(1e-3)
    with pytest.raises(BackboneMismatchError, match="fine-tuned on a backbone with sha256"):
        SCLONGClassifier.load(tmp_path / "clf", adata=reference.copy(), backbone=other)
    with pytest.raises(ValueError, match="without the backbone"):
        SCLONGClassifier.load(tmp_path / "clf", adata=reference.copy())
    assert backbone_sha256(other.module.network) != model.backbone_sha256_


def _probe_accuracy(train_x, train_y, test_x, test_y) -> float:
    """StandardScaler + logistic regression (balanced class weights, as the classifier's)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(train_x)
    probe = LogisticRegression(max_iter=5000, class_weight="balanced")
    probe.fit(scaler.transform(train_x), train_y)
    return float((probe.predict(scaler.transform(test_x)) == test_y).mean())


def test_frozen_classifier_matches_a_logistic_regression_probe_across_protocols(
    cellbench_small, backbone, capsys
):
    """Train on the Drop-seq batch, test on the CEL-seq2 batches (the three shared lines)."""
    adata = cellbench_small
    is_drop = (adata.obs["batch"] == "sc_dropseq").to_numpy()
    reference = adata[is_drop].copy()
    query = adata[~is_drop & adata.obs["cell_line"].isin(["H1975", "H2228", "HCC827"])].copy()
    torch.manual_seed(0)
    model = SCLONGClassifier.from_sclong(backbone, reference, labels_key="cell_line")
    assert model.module.pooling == scl.module._module.HEAD_POOLING == "max"
    model.train(accelerator="cpu", enable_progress_bar=False)  # defaults: cached features
    truth = query.obs["cell_line"].astype(str).to_numpy()
    accuracy = float((model.predict(query) == truth).mean())
    # the probe reads the backbone's own embeddings with the same pooling
    pooling = model.module.pooling
    train_x = backbone.get_latent_representation(reference, pooling=pooling)
    test_x = backbone.get_latent_representation(query, pooling=pooling)
    # the same features up to the FAVOR+ key stabiliser's batch dependence (~1e-4 here)
    np.testing.assert_allclose(model.get_latent_representation(reference), train_x, atol=2e-3)
    labels = reference.obs["cell_line"].astype(str).to_numpy()
    probe = _probe_accuracy(train_x, labels, test_x, truth)
    _, majority = _accuracy(truth, truth)
    epochs = len(model.history["train_loss"])
    with capsys.disabled():
        print(
            f"\nDrop-seq -> CEL-seq2 (frozen, {epochs} epochs): accuracy {accuracy:.3f}, "
            f"logistic-regression probe {probe:.3f}, majority {majority:.3f}"
        )
    assert accuracy >= probe - 0.02
    assert accuracy > majority + 0.2
    # the head trained through Lightning on cached features for more epochs than the network
    # could afford and stopped early; then again on every cell for the best epoch's number of
    # epochs, standardised as on those cells (fixed), as the probe uses every reference cell
    assert {"train_loss", "validation_loss", "accuracy_validation"} <= set(model.history)
    assert 10 < epochs < 200
    assert model.refit_epochs_ == model.best_epoch_ + 1
    assert len(model.history["train_loss_refit"]) == model.refit_epochs_
    norm = model.module.head[0]
    assert bool(norm.fitted)
    np.testing.assert_allclose(norm.running_mean.numpy(), train_x.mean(axis=0), atol=1e-3)
    assert model.calibration_["rule"] == "validation"
    assert model.calibration_["n_validation"] == len(model.validation_indices) > 0
    assert len(model.train_indices) + len(model.validation_indices) == reference.n_obs


def test_held_out_cell_line_is_out_of_distribution(cellbench_small, backbone, capsys):
    """Frozen, trained on plates 1-2 without H838; annotate plate 3 with the defaults."""
    adata = cellbench_small
    plates = adata[adata.obs["batch"].isin(["sc_celseq2_5cl_p1", "sc_celseq2_5cl_p2"])]
    reference = plates[plates.obs["cell_line"] != "H838"].copy()
    query = adata[adata.obs["batch"] == "sc_celseq2_5cl_p3"].copy()
    torch.manual_seed(0)
    model = SCLONGClassifier.from_sclong(backbone, reference, labels_key="cell_line")
    model.train(accelerator="cpu", enable_progress_bar=False)
    scl.tl.annotate(query, model)  # threshold="auto"
    truth = query.obs["cell_line"].astype(str).to_numpy()
    unseen = truth == "H838"
    ood = query.obs["sclong_label_ood"].to_numpy()
    labels = query.obs["sclong_label"].astype(str).to_numpy()
    params = query.uns["sclong_label"]["params"]
    threshold, rule = model.confidence_threshold()
    assert params["threshold"] == threshold and params["threshold_rule"] == rule == "validation"
    unknown_seen, unknown_unseen = (
        (labels[~unseen] == "unknown").mean(),
        (labels[unseen] == "unknown").mean(),
    )
    kept = ~unseen & (labels != "unknown")
    validation_median = model.calibration_["validation_ood_median"]
    accuracy_kept = float((labels[kept] == truth[kept]).mean())
    with capsys.disabled():
        print(
            f"\nheld-out H838 (frozen): median OOD seen {np.median(ood[~unseen]):.2f}, H838 "
            f"{np.median(ood[unseen]):.2f} (validation {validation_median:.2f}); "
            f"auto threshold {threshold:.3f}: unknown {unknown_seen:.2f} of seen, "
            f"{unknown_unseen:.2f} of H838; accuracy of labelled seen cells {accuracy_kept:.3f}"
        )
    assert np.isfinite(ood).all() and (ood >= 0).all()
    assert np.median(ood[unseen]) > np.median(ood[~unseen])
    # the calibrated threshold labels some but far from all cells unknown, H838 more often
    assert 0 < unknown_seen < 0.5 and unknown_unseen > unknown_seen
    assert query.uns["sclong_label"]["ood"]["method"] == "mahalanobis"
    np.testing.assert_allclose(model.ood_score(query), ood, rtol=1e-6)


def test_a_cell_line_absent_from_training_gets_lower_confidence(cellbench_small, backbone, capsys):
    """Train on two CEL-seq2 plates without H838; annotate the third plate (all five lines)."""
    adata = cellbench_small
    plates = adata[adata.obs["batch"].isin(["sc_celseq2_5cl_p1", "sc_celseq2_5cl_p2"])]
    plates = plates[plates.obs["cell_line"] != "H838"].copy()
    reference = plates[_stratified(plates.obs, "cell_line", 60)].copy()
    third = adata[adata.obs["batch"] == "sc_celseq2_5cl_p3"].copy()
    query = third[_stratified(third.obs, "cell_line", 35, seed=1)].copy()
    torch.manual_seed(0)
    model = SCLONGClassifier.from_sclong(
        backbone, reference, labels_key="cell_line", mode="partial"
    )
    assert "H838" not in model.classes_
    model.train(max_epochs=10, **TRAIN)
    probabilities = model.predict(query, soft=True)
    truth = query.obs["cell_line"].astype(str).to_numpy()
    seen = truth != "H838"
    predicted = np.asarray(model.classes_)[probabilities.to_numpy().argmax(axis=1)]
    accuracy, majority = _accuracy(predicted[seen], truth[seen])
    confidence = probabilities.to_numpy().max(axis=1)
    with capsys.disabled():
        print(
            f"\nheld-out H838: accuracy {accuracy:.3f} on seen lines (majority {majority:.3f}); "
            f"median confidence seen {np.median(confidence[seen]):.3f}, H838 "
            f"{np.median(confidence[~seen]):.3f}"
        )
    assert accuracy > majority + 0.25
    assert np.median(confidence[~seen]) < np.median(confidence[seen])
    assert confidence[~seen].mean() < confidence[seen].mean()
    ood = model.ood_score(query)  # fitted on the fine-tuned features after training
    assert np.median(ood[~seen]) > np.median(ood[seen])


def test_pbmc68k_bulk_labels_held_out_split(capsys):
    adata = scl.datasets.pbmc68k_counts()
    scl.pp.normalize(adata)
    adata = most_detected(adata, N_GENES)
    scl.SCLONG.setup_anndata(adata, layer="sclong")
    torch.manual_seed(0)
    model = SCLONG(adata, config=_config(N_GENES))
    held_out = np.random.default_rng(0).random(adata.n_obs) < 0.3
    train, test = adata[~held_out].copy(), adata[held_out].copy()
    classifier = SCLONGClassifier.from_sclong(
        model, train, labels_key="bulk_labels", mode="partial"
    )
    # accuracy is the measure here: no class weights (they trade it for balanced accuracy)
    classifier.train(max_epochs=10, class_weights=None, **TRAIN)
    truth = test.obs["bulk_labels"].astype(str).to_numpy()
    accuracy = float((classifier.predict(test) == truth).mean())
    majority = float(pd.Series(train.obs["bulk_labels"]).value_counts(normalize=True).max())
    with capsys.disabled():
        print(f"\npbmc68k bulk_labels (partial): accuracy {accuracy:.3f}, majority {majority:.3f}")
    assert accuracy > majority + 0.1


def test_query_mapping(lora_model, backbone):
    model, reference, query = lora_model
    # a query with its genes shuffled and 20% missing: reordered, filled with 0, reported
    rng = np.random.default_rng(0)
    keep = rng.permutation(query.n_vars)[: int(0.8 * query.n_vars)]
    partial = query[:, keep].copy()
    with pytest.warns(UserWarning, match="filled with 0"):
        prepared = SCLONGClassifier.prepare_query_anndata(partial, model)
    assert prepared.var_names.equals(reference.var_names)
    report = prepared.uns["sclong_query"]
    assert report["n_missing"] == query.n_vars - len(keep) and report["n_unused"] == 0
    assert SCLONGClassifier.prepare_query_anndata(query, model, True).equals(reference.var_names)
    # fewer than half of the reference's genes: refused
    with pytest.raises(ScLongInputError, match="at least 50%"):
        SCLONGClassifier.prepare_query_anndata(query[:, : query.n_vars // 3].copy(), model)
    # the same preparation works for the backbone model
    assert SCLONGClassifier.prepare_query_anndata(partial, backbone).n_vars == backbone.adata.n_vars
    # genes not prepared: load_query_data says what to run
    with pytest.raises(ValueError, match="prepare_query_anndata"):
        SCLONGClassifier.load_query_data(partial, model)

    # load_query_data: new batches; only the head and the adapters train on the query
    query_model = SCLONGClassifier.load_query_data(prepared, model)
    before = {k: v.detach().clone() for k, v in query_model.module.named_parameters()}
    query_model.train(max_epochs=1, early_stopping=False, **TRAIN)
    after = dict(query_model.module.named_parameters())
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(("lora_" in k or k.startswith("head.")) for k in changed)
    assert model.module.state_dict()["head.2.weight"].shape == after["head.2.weight"].shape
    # a label the reference does not know is refused
    unknown = prepared.copy()
    unknown.obs["cell_line"] = unknown.obs["cell_line"].astype(str).replace("H1975", "H9999")
    with pytest.raises(ScLongInputError, match="does not know"):
        SCLONGClassifier.load_query_data(unknown, model)


def test_bad_input_is_refused_clearly(cellbench_small, backbone):
    adata = cellbench_small[:60].copy()
    with pytest.raises(ScLongInputError, match="labels_key is required"):
        SCLONGClassifier.setup_anndata(adata, layer="sclong")
    with pytest.raises(ScLongInputError, match="not a column of adata.obs"):
        SCLONGClassifier.from_sclong(backbone, adata, labels_key="cell_type")
    single = adata.copy()
    single.obs["one"] = "H1975"
    with pytest.raises(ScLongInputError, match="at least 2"):
        SCLONGClassifier.from_sclong(backbone, single, labels_key="one")
    with pytest.raises(ScLongInputError, match="does not occur"):
        SCLONGClassifier.from_sclong(
            backbone, adata, labels_key="cell_line", unlabeled_category="Unknown"
        )
    with pytest.raises(ValueError, match="mode must be one of"):
        SCLONGClassifier.from_sclong(backbone, adata, labels_key="cell_line", mode="full")
    # unlabelled cells are allowed, and ignored by the loss
    mixed = adata.copy()
    mixed.obs["label"] = mixed.obs["cell_line"].astype(str)
    mixed.obs.loc[mixed.obs_names[:20], "label"] = "Unknown"
    model = SCLONGClassifier.from_sclong(
        backbone, mixed, labels_key="label", unlabeled_category="Unknown"
    )
    assert "Unknown" not in model.classes_ and model.mode == "frozen"
    assert model.class_counts().sum() == mixed.n_obs - 20
    # frozen: only the head trains
    counts = model.module.parameter_counts()
    assert counts["trainable"] == counts["head"]
    before = {k: v.detach().clone() for k, v in model.module.named_parameters()}
    model.train(max_epochs=2, early_stopping=False, **TRAIN)
    after = dict(model.module.named_parameters())
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith("head.") for k in changed)
    assert np.isfinite(model.history["train_loss"].to_numpy(dtype=float)).all()
    # a state saved before the fitted scaling and the OOD score existed still loads
    old = {
        k: v
        for k, v in model.module.state_dict().items()
        if not k.startswith("ood.") and k != "head.0.fitted"
    }
    model.module.load_state_dict(old)


def test_lora_adapters_start_as_identity_and_keep_backbone_keys(backbone):
    network = backbone.module.network
    checksum = backbone_sha256(network)
    from sclong_scverse.module import copy_network

    adapted = copy_network(network)
    names = add_lora(adapted, rank=2)
    config = network.config
    n_layers = config.large_depth + config.mini_depth + config.decoder_depth
    assert len(names) == 4 * n_layers
    assert backbone_sha256(adapted) == checksum  # adapters are not part of the checksum
    assert set(network.state_dict()) <= set(adapted.state_dict())
    x = torch.as_tensor(backbone.adata.layers["sclong"][:4].toarray())
    tokens = backbone.module.to_tokens(x)
    with torch.no_grad():
        expected = network(tokens)["decodings"]
        got = adapted(tokens)["decodings"]
    torch.testing.assert_close(got, expected)
    layer = LoRALinear(8, 4, rank=2)
    with torch.no_grad():
        layer.lora_B.fill_(0.1)
    x = torch.randn(3, 8)
    torch.testing.assert_close(layer(x), x @ layer.merged_weight().t() + layer.bias)
