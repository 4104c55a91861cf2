from __future__ import annotations

import copy
import hashlib
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from scvi import REGISTRY_KEYS
from scvi.module.base import BaseModuleClass, LossOutput, auto_move_data
from torch import nn

from ..errors import ScLongInputError
from ..nn import ScLongConfig, ScLongNetwork
from ..nn.lora import ATTENTION_PROJECTIONS, add_lora
from ._module import (
    HEAD_POOLING,
    POOLINGS,
    NoGenerativeModel,
    Pooling,
    VocabularyInputMixin,
    pool_decoded,
)

FineTuneMode = Literal["frozen", "partial", "lora"]
TrainScope = Literal["mode", "head", "adapters"]
#: A pooling name (one of ``module._module.POOLINGS``).
ClassifierPooling = Pooling

FINE_TUNE_MODES = ("frozen", "partial", "lora")
_LORA_NAMES = ("lora_A", "lora_B")
#: Widest pooled representation whose out-of-distribution score uses a full covariance; wider
#: ones (e.g. one value per gene) use a diagonal one.
MAX_FULL_COVARIANCE = 2048


def pooled_width(pooling: str, config: ScLongConfig) -> int:
    """Width of the cell representation a pooling gives (what the head reads).

    Computed by pooling an empty tensor on PyTorch's meta device, so it follows
    :func:`~sclong_scverse.module.pool_decoded` for every pooling without allocating memory.

    Parameters
    ----------
    pooling
        One of ``POOLINGS``.
    config
        The backbone's configuration (``dim``, ``n_genes``).

    Returns
    -------
    The number of features.
    """
    decodings = torch.empty(1, config.n_genes, config.dim, device="meta")
    return int(pool_decoded(decodings, None, pooling).shape[-1])


def _keep_missing_buffers(module: nn.Module, state_dict: dict, prefix: str, names) -> None:
    """Let a state dict saved before buffers ``names`` existed load (they keep their values)."""
    for name in names:
        state_dict.setdefault(prefix + name, getattr(module, name))


def is_adapter_key(name: str) -> bool:
    """Whether a state-dict key is a LoRA adapter weight (``...lora_A`` / ``...lora_B``).

    Parameters
    ----------
    name
        A state-dict key.

    Returns
    -------
    ``True`` for adapter weights.
    """
    return name.rsplit(".", 1)[-1] in _LORA_NAMES


def backbone_sha256(network: nn.Module) -> str:
    """sha256 of a backbone network's weights and buffers, independent of how they are stored.

    The hash runs over the state dict in sorted key order: for each tensor its name, dtype,
    shape and raw bytes (on the CPU, contiguous). Adapter weights (``lora_A``, ``lora_B``) and
    the Performers' redraw counters (``calls_since_last_redraw``, not weights) are left out,
    so a network gives the same checksum before and after adapters are added to it.

    Parameters
    ----------
    network
        The network (e.g. :class:`~sclong_scverse.nn.ScLongNetwork`).

    Returns
    -------
    The hexadecimal digest.
    """
    digest = hashlib.sha256()
    state = network.state_dict()
    for name in sorted(state):
        if is_adapter_key(name) or name.endswith("calls_since_last_redraw"):
            continue
        tensor = state[name].detach().to("cpu").contiguous()
        digest.update(name.encode())
        digest.update(str(tensor.dtype).encode())
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def copy_network(network: nn.Module) -> nn.Module:
    """A deep copy of a network (its cached sparse GO adjacency is rebuilt, not copied).

    Parameters
    ----------
    network
        The network.

    Returns
    -------
    An independent copy with the same weights and buffers.
    """
    caches = {}
    for submodule in network.modules():
        if getattr(submodule, "_adjacency", None) is not None:
            caches[submodule] = submodule._adjacency
            submodule._adjacency = None
    try:
        return copy.deepcopy(network)
    finally:
        for submodule, cache in caches.items():
            submodule._adjacency = cache


def unfrozen_prefixes(config: ScLongConfig, n_layers: int) -> list[str]:
    """Network submodules the ``"partial"`` mode trains: the last ``n_layers`` Performer layers.

    Layers are counted from the network's output: first the decoder's layers (from its last),
    with the decoder's final LayerNorm; beyond the decoder's depth, the last layers of both
    encoders (the large and the mini one run side by side) with the large encoder's output
    projection and norm.

    Parameters
    ----------
    config
        The network configuration.
    n_layers
        How many layers to unfreeze (>= 1).

    Returns
    -------
    Prefixes of network state-dict keys (e.g. ``"decoder.layers.1."``).
    """
    if n_layers < 1:
        raise ScLongInputError(f"n_unfrozen_layers must be >= 1, got {n_layers}.")
    prefixes = ["decoder_norm."]
    n_decoder = min(n_layers, config.decoder_depth)
    prefixes += [
        f"decoder.layers.{i}."
        for i in range(config.decoder_depth - n_decoder, config.decoder_depth)
    ]
    rest = n_layers - config.decoder_depth
    if rest > 0:
        n_large = min(rest, config.large_depth)
        n_mini = min(rest, config.mini_depth)
        prefixes += ["large_out.", "large_out_norm."]
        prefixes += [
            f"large_encoder.layers.{i}."
            for i in range(config.large_depth - n_large, config.large_depth)
        ]
        prefixes += [
            f"mini_encoder.layers.{i}."
            for i in range(config.mini_depth - n_mini, config.mini_depth)
        ]
    return prefixes


class FeatureNorm(nn.BatchNorm1d):
    """Per-feature standardisation of pooled representations (batch norm with running stats).

    Pooled decodings vary little across cells next to their offsets (a large part of every
    gene vector is the gene's identity), so the head standardises each feature over cells;
    LayerNorm (over the features of one cell) does not. Two ways to get the statistics:

    - fitted (:meth:`fit`, what the classifier does when the backbone does not train): mean and
      variance of the training cells' features, fixed from then on, in training as in
      inference (scikit-learn's ``StandardScaler`` fitted on the training cells);
    - otherwise batch statistics in training and running averages in inference (features that
      change while the backbone trains). A training batch of a single cell uses the running
      statistics.

    Parameters
    ----------
    dim
        Number of features.
    """

    def __init__(self, dim: int):
        super().__init__(dim)
        self.register_buffer("fitted", torch.tensor(False))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        _keep_missing_buffers(self, state_dict, prefix, ["fitted"])
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @torch.no_grad()
    def fit(self, features: torch.Tensor) -> None:
        """Fix the statistics to those of ``features`` (the training cells).

        Parameters
        ----------
        features
            ``(n_cells, dim)`` pooled representations of the training cells.
        """
        features = features.to(self.running_mean.device, torch.float64)
        self.running_mean.copy_(features.mean(dim=0))
        self.running_var.copy_(features.var(dim=0, unbiased=False))
        self.fitted.fill_(True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Standardise ``x`` ``(batch, dim)`` per feature.

        Parameters
        ----------
        x
            Pooled representations.

        Returns
        -------
        The standardised (and affinely rescaled) features.
        """
        if bool(self.fitted) or (self.training and x.shape[0] < 2):
            return F.batch_norm(
                x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps
            )
        return super().forward(x)


class ClassDistance(nn.Module):
    """Distance of a cell's pooled representation to the nearest training class (OOD score).

    The Mahalanobis distance of Lee et al. (NeurIPS 2018) on the features the head reads:
    features are standardised with the training cells' mean and standard deviation; each class
    has its mean over its training cells and all classes share one covariance (of the training
    cells around their class mean, Ledoit-Wolf shrunk; diagonal when the representation is
    wider than :data:`MAX_FULL_COVARIANCE`). The score of a cell is
    ``min_c sqrt((z - mu_c)^T S^-1 (z - mu_c))``: large for cells unlike every class the
    classifier was trained on. Unlike the highest class probability it does not depend on the
    head, which can be confident far from its training data.

    Parameters
    ----------
    dim
        Width of the pooled representation.
    n_classes
        Number of classes.
    """

    def __init__(self, dim: int, n_classes: int):
        super().__init__()
        self.full = dim <= MAX_FULL_COVARIANCE
        self.register_buffer("center", torch.zeros(dim))
        self.register_buffer("scale", torch.ones(dim))
        self.register_buffer("class_means", torch.zeros(n_classes, dim))
        self.register_buffer("present", torch.zeros(n_classes, dtype=torch.bool))
        self.register_buffer("precision", torch.eye(dim) if self.full else torch.ones(dim))
        self.register_buffer("fitted", torch.tensor(False))

    _BUFFERS = ("center", "scale", "class_means", "present", "precision", "fitted")

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        _keep_missing_buffers(self, state_dict, prefix, self._BUFFERS)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @torch.no_grad()
    def fit(self, features: torch.Tensor, classes: torch.Tensor) -> None:
        """Fit class means and the shared covariance on training cells.

        Parameters
        ----------
        features
            ``(n_cells, dim)`` pooled representations of the training cells.
        classes
            ``(n_cells,)`` class index of each cell (cells with ``-1`` are left out).
        """
        from sklearn.covariance import ledoit_wolf

        labelled = classes >= 0
        x = features[labelled].detach().to("cpu", torch.float64)
        y = classes[labelled].to("cpu", torch.long)
        if x.shape[0] < 2:
            return
        center = x.mean(dim=0)
        scale = x.std(dim=0, unbiased=False)
        scale = torch.where(scale > 1e-8, scale, torch.ones_like(scale))
        z = (x - center) / scale
        means = torch.zeros(self.class_means.shape, dtype=torch.float64)
        present = torch.zeros(self.present.shape, dtype=torch.bool)
        for k in torch.unique(y).tolist():
            means[k] = z[y == k].mean(dim=0)
            present[k] = True
        residuals = (z - means[y]).numpy()
        if self.full:
            covariance, _ = ledoit_wolf(residuals, assume_centered=True)
            precision = torch.as_tensor(np.linalg.pinv(covariance, hermitian=True))
        else:
            precision = 1.0 / torch.as_tensor((residuals**2).mean(axis=0)).clamp(min=1e-6)
        for name, value in (
            ("center", center),
            ("scale", scale),
            ("class_means", means),
            ("present", present),
            ("precision", precision),
        ):
            buffer = getattr(self, name)
            buffer.copy_(value.to(buffer.device, buffer.dtype))
        self.fitted.fill_(True)

    @torch.no_grad()
    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """The distance of each cell to its nearest class (NaN before :meth:`fit`).

        Parameters
        ----------
        features
            ``(batch, dim)`` pooled representations.

        Returns
        -------
        ``(batch,)`` float32 distances.
        """
        if not bool(self.fitted):
            return torch.full(features.shape[:1], torch.nan, device=features.device)
        z = (features.double() - self.center.double()) / self.scale.double()
        precision = self.precision.double()
        best = torch.full(features.shape[:1], torch.inf, dtype=torch.float64, device=z.device)
        for k in torch.nonzero(self.present).flatten().tolist():
            diff = z - self.class_means[k].double()
            weighted = diff @ precision if self.full else diff * precision
            best = torch.minimum(best, (weighted * diff).sum(dim=1))
        return best.clamp(min=0.0).sqrt().float()


class ScLongClassifierModule(VocabularyInputMixin, NoGenerativeModel, BaseModuleClass):
    """A cell-type classification head on scLong's pooled merged decodings (scvi-tools module).

    The network maps a cell's values to per-gene merged decodings; these are pooled over the
    vocabulary's genes and a head (per-feature standardisation, dropout, linear, or an MLP)
    gives class logits.
    The loss is class-weighted cross-entropy over the labelled cells of the mini-batch
    (unlabelled cells are ignored).

    Parameters
    ----------
    network
        The scLong network (the backbone); adapters are added to it in place for ``"lora"``.
    var_positions
        ``(n_vars,)`` vocabulary position of each registered gene (``-1``: not in the
        vocabulary, ignored).
    label_to_class
        ``(n_label_codes,)`` class index of each registered label code; ``-1`` for the
        unlabelled category.
    n_classes
        Number of classes (>= 2).
    mode
        ``"frozen"`` (head only), ``"partial"`` (head and the last ``n_unfrozen_layers``
        Performer layers, see :func:`unfrozen_prefixes`) or ``"lora"`` (head and low-rank
        adapters on the attention projections, see :func:`~sclong_scverse.nn.lora.add_lora`).
    n_unfrozen_layers
        Layers trained in ``"partial"`` mode.
    lora_rank, lora_alpha, lora_dropout, lora_targets
        Adapter settings (``"lora"`` mode).
    pooling
        Pooling of the decodings over genes (pad token excluded), one of ``POOLINGS``
        (default ``HEAD_POOLING``, ``"max"``; :func:`~sclong_scverse.module.pool_decoded`).
    hidden_dim
        Width of a hidden layer of the head (``None``: a linear head).
    dropout
        Dropout before the head's linear layer(s).
    """

    def __init__(
        self,
        network: ScLongNetwork,
        var_positions: torch.Tensor,
        label_to_class: torch.Tensor,
        n_classes: int,
        *,
        mode: FineTuneMode = "frozen",
        n_unfrozen_layers: int = 1,
        lora_rank: int = 8,
        lora_alpha: float = 16.0,
        lora_dropout: float = 0.0,
        lora_targets: tuple[str, ...] = ATTENTION_PROJECTIONS,
        pooling: ClassifierPooling = HEAD_POOLING,
        hidden_dim: int | None = None,
        dropout: float = 0.1,
    ):
        super().__init__()
        if mode not in FINE_TUNE_MODES:
            raise ScLongInputError(f"mode must be one of {FINE_TUNE_MODES}, not {mode!r}.")
        if pooling not in POOLINGS:
            raise ScLongInputError(f"pooling must be one of {POOLINGS}, not {pooling!r}.")
        if n_classes < 2:
            raise ScLongInputError(f"A classifier needs at least 2 classes, got {n_classes}.")
        self.network = network
        self.mode = mode
        self.n_unfrozen_layers = int(n_unfrozen_layers)
        self.pooling = pooling
        self.n_classes = int(n_classes)
        positions = torch.as_tensor(var_positions, dtype=torch.long)
        if positions.numel() and positions.max() >= network.config.n_genes:
            raise ScLongInputError("var_positions point beyond the vocabulary.")
        self.register_buffer("var_positions", positions)
        self.register_buffer("label_to_class", torch.as_tensor(label_to_class, dtype=torch.long))
        self.register_buffer("class_weights", torch.ones(self.n_classes))
        if mode == "lora":
            add_lora(network, lora_rank, lora_alpha, lora_dropout, lora_targets)
        dim = self.n_features = pooled_width(pooling, network.config)
        #: distance to the training classes (out-of-distribution score), fitted after training
        self.ood = ClassDistance(dim, self.n_classes)
        #: ``True`` while the head trains on cached pooled features (``x`` is then pooled)
        self.reads_pooled = False
        layers: list[nn.Module] = [FeatureNorm(dim), nn.Dropout(dropout)]
        if hidden_dim:
            layers += [nn.Linear(dim, hidden_dim), nn.GELU(), nn.Dropout(dropout)]
            dim = hidden_dim
        layers.append(nn.Linear(dim, self.n_classes))
        self.head = nn.Sequential(*layers)
        self._prefixes = (
            unfrozen_prefixes(network.config, self.n_unfrozen_layers) if mode == "partial" else []
        )
        self.set_trainable("mode")

    # ------------------------------------------------------------------ what trains
    def _is_tuned(self, name: str) -> bool:
        """Whether network key ``name`` belongs to the part fine-tuning changes in this mode."""
        if self.mode == "lora":
            return is_adapter_key(name)
        return any(name.startswith(prefix) for prefix in self._prefixes)

    def set_trainable(self, scope: TrainScope = "mode") -> None:
        """Choose which parameters train.

        Parameters
        ----------
        scope
            ``"mode"``: what the fine-tuning mode trains (head; plus unfrozen layers or
            adapters); ``"head"``: the head only; ``"adapters"``: the head and, in ``"lora"``
            mode, the adapters (query mapping).
        """
        if scope not in ("mode", "head", "adapters"):
            raise ScLongInputError(f"scope must be 'mode', 'head' or 'adapters', not {scope!r}.")
        for name, parameter in self.network.named_parameters():
            if scope == "head":
                parameter.requires_grad_(False)
            elif scope == "adapters":
                parameter.requires_grad_(is_adapter_key(name))
            else:
                parameter.requires_grad_(self._is_tuned(name))
        for parameter in self.head.parameters():
            parameter.requires_grad_(True)
        self._backbone_trains = any(p.requires_grad for p in self.network.parameters())

    def fine_tuned_state_keys(self) -> list[str]:
        """Keys of the module's state dict that differ from the backbone it was built on.

        Everything outside the network (head, buffers of this module) plus, inside it, the
        adapters (``"lora"``) or the unfrozen layers (``"partial"``). Saving these and the
        backbone's checksum is enough to rebuild the fine-tuned model on the same backbone.

        Returns
        -------
        The keys, in state-dict order.
        """
        keys = []
        for name in self.state_dict():
            if not name.startswith("network."):
                keys.append(name)
            elif self._is_tuned(name[len("network.") :]):
                keys.append(name)
        return keys

    def parameter_counts(self) -> dict[str, int]:
        """Numbers of parameters: ``total`` (backbone, adapters, head), ``trainable``, ``head``.

        Returns
        -------
        A dictionary of counts.
        """
        return {
            "total": sum(p.numel() for p in self.parameters()),
            "trainable": sum(p.numel() for p in self.parameters() if p.requires_grad),
            "head": sum(p.numel() for p in self.head.parameters()),
        }

    # ------------------------------------------------------------------ forward
    def pool(
        self,
        decodings: torch.Tensor,
        decoded: torch.Tensor | None = None,
        prediction: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Pool per-gene decodings over the vocabulary's genes (pad token excluded).

        Parameters
        ----------
        decodings
            ``(batch, n_tokens, dim)`` merged decodings.
        decoded
            ``(batch, n_tokens)`` bool, the positions the network decoded (its ``predicted``
            output): only those are pooled. ``None``: all (the published network decodes
            every gene; a network without the low-expression branch only the top set).
        prediction
            ``(batch, n_tokens)`` predicted values (the network's ``prediction``), which
            ``"feature_sum"`` adds per gene.

        Returns
        -------
        ``(batch, width)`` cell representations (:func:`~sclong_scverse.module.pooled_dim`).
        """
        n_genes = self.config.n_genes
        genes = decodings[:, :n_genes].float()
        if decoded is not None and bool(decoded.all()):
            decoded = None
        if decoded is not None:
            decoded = decoded[:, :n_genes]
        if prediction is not None:
            prediction = prediction[:, :n_genes].float()
        return pool_decoded(genes, decoded, self.pooling, prediction=prediction)

    def _get_inference_input(self, tensors: dict[str, torch.Tensor], **kwargs) -> dict:
        return {"x": tensors[REGISTRY_KEYS.X_KEY]}

    @auto_move_data
    def inference(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Class logits of cells.

        Parameters
        ----------
        x
            ``(batch, n_vars)`` log-normalised values in the registered genes' order.

        Returns
        -------
        ``{"embedding": (batch, dim) pooled decodings, "logits": (batch, n_classes)}``. With a
        frozen backbone the network runs without autograd (no activations kept). While
        :attr:`reads_pooled` is set, ``x`` is taken to be the pooled decodings already
        (``(batch, n_features)``, cached by the model when the backbone does not train) and
        the network is not run.
        """
        if self.reads_pooled:
            if x.shape[-1] != self.n_features:
                raise ScLongInputError(
                    f"Expected cached pooled features of width {self.n_features}, got "
                    f"{x.shape[-1]}."
                )
            embedding = x.float()
            return {"embedding": embedding, "logits": self.head(embedding)}
        tokens = self.to_tokens(x.float())
        if self._backbone_trains and torch.is_grad_enabled():
            outputs = self.network(tokens)
        else:
            with torch.no_grad():
                outputs = self.network(tokens)
        embedding = self.pool(
            outputs["decodings"], outputs.get("predicted"), outputs.get("prediction")
        )
        return {"embedding": embedding, "logits": self.head(embedding)}

    def loss(self, tensors, inference_outputs, generative_outputs, **kwargs) -> LossOutput:
        """Class-weighted cross-entropy over the labelled cells of the mini-batch.

        Parameters
        ----------
        tensors
            The mini-batch (its registered label codes).
        inference_outputs
            Output of :meth:`inference` (``logits``).
        generative_outputs
            Output of :meth:`generative` (empty).
        **kwargs
            Ignored.

        Returns
        -------
        :class:`scvi.module.base.LossOutput`: ``loss`` = sum over labelled cells of
        ``w[y] * CE`` divided by the sum of their ``w[y]`` (0 for a batch without labelled
        cells), the per-cell terms as ``reconstruction_loss``, and ``accuracy`` (labelled cells)
        as an extra metric.
        """
        logits = inference_outputs["logits"]
        codes = tensors[REGISTRY_KEYS.LABELS_KEY].reshape(-1).long()
        target = self.label_to_class[codes]
        labelled = target >= 0
        safe_target = target.clamp(min=0)
        per_cell = F.cross_entropy(logits, safe_target, reduction="none")
        weights = self.class_weights[safe_target] * labelled
        loss = (per_cell * weights).sum() / weights.sum().clamp(min=1e-12)
        correct = (logits.argmax(dim=1) == target) & labelled
        accuracy = correct.sum() / labelled.sum().clamp(min=1)
        return LossOutput(
            loss=loss,
            reconstruction_loss=per_cell * labelled,
            n_obs_minibatch=logits.shape[0],
            extra_metrics={"accuracy": accuracy.detach().float()},
        )
