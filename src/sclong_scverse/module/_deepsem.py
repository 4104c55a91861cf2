"""DeepSEM (Shu et al., Nat Comput Sci 2021) as a pure torch module, and its training schedule.

DeepSEM infers a gene regulatory network as the adjacency ``A`` (row = regulator, column =
target) of a structural equation model inside a beta-VAE: each gene's scalar expression goes
through a small per-gene MLP, the gene axis is mixed by ``(I - A^T)`` into the latent noise
``z``, and the decoder maps ``(I - A^T)^{-1} z`` back through another per-gene MLP. ``A`` is
learned with an L1 penalty, in epochs that alternate with the MLPs' epochs. scLong seeds ``A``
with its gene-gene similarity (:func:`gram_seed`); DeepSEM's own start is
:func:`default_adjacency`.

Nothing here reads AnnData: :func:`sclong_scverse.tl.grn` prepares the matrices.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from ..errors import ScLongInputError


@dataclass
class DeepSEMConfig:
    """Hyper-parameters of DeepSEM, with the published defaults.

    Parameters
    ----------
    n_epochs
        Training epochs (DeepSEM's GRN runs use 90-120; fewer are faster and often as good on
        small data, see the GRN page of the documentation).
    n_hidden
        Width of the per-gene encoder and decoder MLPs (128).
    alpha
        Weight of the sparsity penalty ``mean |A|`` (100).
    beta
        Weight of the KL term of the beta-VAE (1).
    lr
        RMSprop learning rate of the MLPs (1e-4); ``A`` learns at ``lr_adj_factor * lr``.
    lr_adj_factor
        Learning-rate factor of the adjacency (0.2).
    gamma
        Per-epoch decay of both learning rates (0.95; ``StepLR(step_size=1)``).
    batch_size
        Cells per step (64).
    k1, k2
        Alternation: of every ``k1 + k2`` epochs, the first ``k1`` update the MLPs (``A``
        frozen), the next ``k2`` update ``A`` (MLPs frozen) (1 and 2).
    """

    n_epochs: int = 90
    n_hidden: int = 128
    alpha: float = 100.0
    beta: float = 1.0
    lr: float = 1e-4
    lr_adj_factor: float = 0.2
    gamma: float = 0.95
    batch_size: int = 64
    k1: int = 1
    k2: int = 2

    def __post_init__(self) -> None:
        for name in ("n_epochs", "n_hidden", "batch_size", "k2"):
            if int(getattr(self, name)) < 1:
                value = getattr(self, name)
                raise ScLongInputError(f"DeepSEM {name} must be a positive integer, got {value}")
        if self.k1 < 0:
            raise ScLongInputError(f"DeepSEM k1 must be >= 0, got {self.k1}")
        for name in ("alpha", "beta", "lr", "lr_adj_factor", "gamma"):
            if not float(getattr(self, name)) >= 0:
                raise ScLongInputError(f"DeepSEM {name} must be >= 0, got {getattr(self, name)}")

    def to_dict(self) -> dict:
        """Plain dictionary of the fields."""
        return asdict(self)


def _mlp(n_in: int, n_hidden: int, n_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(n_in, n_hidden),
        nn.Tanh(),
        nn.Linear(n_hidden, n_hidden),
        nn.Tanh(),
        nn.Linear(n_hidden, n_out),
    )


def default_adjacency(n_genes: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """DeepSEM's own start: every off-diagonal entry ``1/(n-1)`` plus uniform noise in [0, 2e-4).

    Parameters
    ----------
    n_genes
        Number of genes ``n``.
    generator
        Random generator of the noise.

    Returns
    -------
    ``(n, n)`` float32 tensor, diagonal 0.
    """
    noise = torch.rand(n_genes, n_genes, generator=generator) * 2e-4
    adjacency = torch.full((n_genes, n_genes), 1.0 / max(n_genes - 1, 1)) + noise
    adjacency.fill_diagonal_(0.0)
    return adjacency


class GramAccumulator:
    """scLong's DeepSEM seed, accumulated batch by batch over cells (streaming).

    For gene ``g`` let ``v_g`` be its contextual decodings in all cells, concatenated
    (``n_cells x dim`` values). The seed is the Gram matrix of the L1-normalised ``v_g``,
    diagonal set to 0, each row then L1-normalised. Since ``<v_g/|v_g|_1, v_h/|v_h|_1> =
    <v_g, v_h> / (|v_g|_1 |v_h|_1)``, it is enough to accumulate ``sum_cells D D^T`` (genes x
    genes) and the per-gene L1 norms: memory is ``genes x genes`` plus one batch of decodings,
    never ``cells x genes x dim``.

    Parameters
    ----------
    n_genes
        Number of genes.
    device
        Where the sums are kept (the decodings' device).
    """

    def __init__(self, n_genes: int, device: torch.device | str = "cpu"):
        self.gram = torch.zeros(n_genes, n_genes, dtype=torch.float64, device=device)
        self.l1 = torch.zeros(n_genes, dtype=torch.float64, device=device)
        self.n_cells = 0

    def update(self, decodings: torch.Tensor) -> None:
        """Add one batch.

        Parameters
        ----------
        decodings
            ``(batch, n_genes, dim)`` per-gene decodings of a batch of cells.
        """
        batch, n_genes, dim = decodings.shape
        values = decodings.detach().to(self.gram.dtype)
        flat = values.permute(1, 0, 2).reshape(n_genes, batch * dim)
        self.gram += flat @ flat.T
        self.l1 += flat.abs().sum(dim=1)
        self.n_cells += batch

    def seed(self) -> torch.Tensor:
        """The seed adjacency.

        Returns
        -------
        ``(n_genes, n_genes)`` float32, diagonal 0, rows summing (in absolute value) to 1; rows
        and columns of genes whose decodings are all 0 are 0.
        """
        if self.n_cells == 0:
            raise ScLongInputError("no cells were accumulated; nothing to seed DeepSEM with")
        scale = torch.where(self.l1 > 0, 1.0 / self.l1, torch.zeros_like(self.l1))
        seed = self.gram * scale[:, None] * scale[None, :]
        seed.fill_diagonal_(0.0)
        row = seed.abs().sum(dim=1, keepdim=True)
        seed = torch.where(row > 0, seed / row.clamp(min=1e-300), torch.zeros_like(seed))
        return seed.float()


def gram_seed(decoding_batches: Iterable[torch.Tensor], n_genes: int) -> torch.Tensor:
    """The scLong seed of DeepSEM's adjacency from batches of per-gene decodings (streaming).

    Parameters
    ----------
    decoding_batches
        Iterable of ``(batch, n_genes, dim)`` decodings.
    n_genes
        Number of genes.

    Returns
    -------
    See :meth:`GramAccumulator.seed`.
    """
    accumulator: GramAccumulator | None = None
    for batch in decoding_batches:
        if accumulator is None:
            accumulator = GramAccumulator(n_genes, batch.device)
        accumulator.update(batch)
    if accumulator is None:
        raise ScLongInputError("no cells were accumulated; nothing to seed DeepSEM with")
    return accumulator.seed()


class DeepSEM(nn.Module):
    """DeepSEM's beta-VAE with the structural-equation layer (one latent value per gene).

    Parameters
    ----------
    adjacency
        ``(n_genes, n_genes)`` starting adjacency (row = regulator, column = target), e.g.
        :func:`default_adjacency` or scLong's :func:`gram_seed`.
    n_hidden
        Width of the per-gene MLPs.

    Notes
    -----
    Encoder: a per-gene MLP ``1 -> h -> h -> 2`` (tanh) gives ``(mu, log var)`` of each gene,
    then ``[mu, log var] <- (I - A^T) [mu, log var]`` along genes. Decoder: ``z`` is drawn by
    the reparametrisation trick, mapped by ``(I - A^T)^{-1}`` and a per-gene MLP
    ``1 -> h -> h -> 1``. The diagonal of ``A`` is kept at 0. This is DeepSEM with one mixture
    component (``K = 1``, its GRN setting), so the KL term is that of a standard normal prior.
    """

    def __init__(self, adjacency: torch.Tensor, n_hidden: int = 128):
        super().__init__()
        adjacency = torch.as_tensor(adjacency, dtype=torch.float32)
        if adjacency.ndim != 2 or adjacency.shape[0] != adjacency.shape[1]:
            raise ScLongInputError(f"adjacency must be square, got shape {tuple(adjacency.shape)}")
        if not torch.isfinite(adjacency).all():
            raise ScLongInputError("adjacency contains NaN or infinite values")
        self.n_genes = int(adjacency.shape[0])
        self.adj_A = nn.Parameter(adjacency.clone())
        self.encoder = _mlp(1, n_hidden, 2)
        self.decoder = _mlp(1, n_hidden, 1)
        self.register_buffer("off_diagonal", 1.0 - torch.eye(self.n_genes))

    def adjacency(self) -> torch.Tensor:
        """``A`` with its diagonal at 0 (row = regulator, column = target)."""
        return self.adj_A * self.off_diagonal

    def i_minus_a(self) -> torch.Tensor:
        """``I - A``; on the right of a ``(..., genes)`` row: ``x (I - A) = (I - A^T) x``."""
        return torch.eye(self.n_genes, device=self.adj_A.device) - self.adjacency()

    def forward(
        self, x: torch.Tensor, inverse: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """Encode, sample and decode a batch; return the losses.

        Parameters
        ----------
        x
            ``(batch, n_genes)`` standardised expression.
        inverse
            ``(I - A)^{-1}`` computed before (e.g. once per epoch while ``A`` is frozen);
            computed here when ``None``.

        Returns
        -------
        ``reconstruction`` (mean squared error), ``kl`` (mean KL divergence per latent value),
        ``sparsity`` (``mean |A|``) and ``x_hat``.
        """
        m = self.i_minus_a()
        posterior = self.encoder(x.unsqueeze(-1))  # (batch, genes, 2)
        posterior = torch.einsum("bgk,gh->bhk", posterior, m)
        mu, logvar = posterior[..., 0], posterior[..., 1]
        std = torch.exp(0.5 * logvar)
        z = mu + std * torch.randn_like(std) if self.training else mu
        if inverse is None:  # z (I - A)^{-1}, by an LU solve (cheaper than the inverse)
            z_inv = torch.linalg.solve(m, z, left=False)
        else:
            z_inv = z @ inverse
        x_hat = self.decoder(z_inv.unsqueeze(-1)).squeeze(-1)
        reconstruction = torch.mean((x_hat - x) ** 2)
        kl = -0.5 * torch.mean(1 + logvar - mu**2 - logvar.exp())
        sparsity = torch.mean(torch.abs(self.adjacency()))
        return {"reconstruction": reconstruction, "kl": kl, "sparsity": sparsity, "x_hat": x_hat}


def standardize(X: np.ndarray) -> np.ndarray:
    """Z-score every gene over the cells, as DeepSEM prepares its input (constant genes -> 0).

    Parameters
    ----------
    X
        ``(n_cells, n_genes)`` expression.

    Returns
    -------
    ``(n_cells, n_genes)`` float32.
    """
    X = np.asarray(X, dtype=np.float64)
    std = X.std(axis=0)
    out = np.divide(X - X.mean(axis=0), std, out=np.zeros_like(X), where=std > 0)
    return out.astype(np.float32)


def train_deepsem(
    X: np.ndarray,
    adjacency: torch.Tensor | np.ndarray | None = None,
    config: DeepSEMConfig | None = None,
    *,
    seed: int = 0,
    progress_bar: bool = False,
    desc: str = "DeepSEM",
) -> tuple[np.ndarray, dict[str, list[float]]]:
    """Train DeepSEM on expression with its published schedule; return the learned adjacency.

    Schedule (as published): two RMSprop optimisers, one for the MLPs (``lr``) and one for
    ``A`` (``lr * lr_adj_factor``), both decayed by ``gamma`` per epoch; of every ``k1 + k2``
    epochs the first ``k1`` step the MLPs, the next ``k2`` step ``A``. The loss is
    ``reconstruction + beta * KL + alpha * mean|A|``.

    Parameters
    ----------
    X
        ``(n_cells, n_genes)`` expression (log-normalised); standardised per gene here.
    adjacency
        Starting ``A``; ``None``: :func:`default_adjacency` (DeepSEM's own start, with noise
        from ``seed``).
    config
        Hyper-parameters (:class:`DeepSEMConfig` defaults when ``None``).
    seed
        Seed of the starting noise, the MLPs' initialisation, the batches and the latent draws.
    progress_bar
        Show a progress bar over the optimisation steps.
    desc
        Label of the progress bar.

    Returns
    -------
    adjacency
        ``(n_genes, n_genes)`` float32 learned ``A`` (diagonal 0; row = regulator).
    history
        Per-epoch means of ``loss``, ``reconstruction``, ``kl``, ``sparsity``.
    """
    config = config or DeepSEMConfig()
    X = np.asarray(X)
    if X.ndim != 2 or X.shape[0] < 2 or X.shape[1] < 2:
        raise ScLongInputError(f"DeepSEM needs at least 2 cells and 2 genes, got shape {X.shape}")
    if not np.isfinite(X).all():
        raise ScLongInputError("the expression contains NaN or infinite values")
    data = torch.from_numpy(standardize(X))
    n_cells, n_genes = data.shape
    generator = torch.Generator().manual_seed(int(seed))
    if adjacency is None:
        adjacency = default_adjacency(n_genes, generator)
    adjacency = torch.as_tensor(adjacency, dtype=torch.float32)
    if adjacency.shape != (n_genes, n_genes):
        raise ScLongInputError(
            f"the starting adjacency has shape {tuple(adjacency.shape)}, expected ({n_genes}, "
            f"{n_genes})"
        )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        model = DeepSEM(adjacency, config.n_hidden)
        mlp_parameters = [p for name, p in model.named_parameters() if name != "adj_A"]
        optimizer_mlp = torch.optim.RMSprop(mlp_parameters, lr=config.lr)
        optimizer_adj = torch.optim.RMSprop([model.adj_A], lr=config.lr * config.lr_adj_factor)
        base_lrs = {optimizer_mlp: config.lr, optimizer_adj: config.lr * config.lr_adj_factor}
        n_batches = -(-n_cells // config.batch_size)
        total = config.n_epochs * n_batches
        bar = tqdm(total=total, desc=desc, unit="step", disable=not progress_bar)
        keys = ("loss", "reconstruction", "kl", "sparsity")
        history: dict[str, list[float]] = {k: [] for k in keys}
        model.train()
        try:
            for epoch in range(config.n_epochs):
                adjacency_epoch = epoch % (config.k1 + config.k2) >= config.k1
                model.adj_A.requires_grad_(adjacency_epoch)
                for p in mlp_parameters:
                    p.requires_grad_(not adjacency_epoch)
                optimizer = optimizer_adj if adjacency_epoch else optimizer_mlp
                for opt, base in base_lrs.items():  # StepLR(step_size=1, gamma) of both
                    for group in opt.param_groups:
                        group["lr"] = base * config.gamma**epoch
                inverse = None
                if not adjacency_epoch:  # A frozen: one inverse for the whole epoch
                    with torch.no_grad():
                        inverse = torch.linalg.inv(model.i_minus_a())
                order = torch.randperm(n_cells, generator=generator)
                sums = dict.fromkeys(history, 0.0)
                for start in range(0, n_cells, config.batch_size):
                    batch = data[order[start : start + config.batch_size]]
                    optimizer.zero_grad(set_to_none=True)
                    out = model(batch, inverse)
                    loss = (
                        out["reconstruction"]
                        + config.beta * out["kl"]
                        + config.alpha * out["sparsity"]
                    )
                    loss.backward()
                    optimizer.step()
                    for key in ("reconstruction", "kl", "sparsity"):
                        sums[key] += float(out[key].detach()) / n_batches
                    sums["loss"] += float(loss.detach()) / n_batches
                    bar.update(1)
                for key, value in sums.items():
                    history[key].append(value)
                if not np.isfinite(sums["loss"]):
                    raise FloatingPointError(
                        f"DeepSEM diverged at epoch {epoch} (loss {sums['loss']}); lower lr or "
                        "alpha"
                    )
        finally:
            bar.close()
        result = model.adjacency().detach().numpy().astype(np.float32)
    return result, history
