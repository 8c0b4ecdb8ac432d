"""Random-feature attention (RFA) and the two-layer random-feature MLP, as PyTorch modules.

Random-feature attention (Fu, Guo, Bai, Mei, "What can a Single Attention Layer Learn? A Study Through the
Random Features Lens", NeurIPS 2023). Input: a query token x_0 in R^d and N key tokens x_1..x_N in R^d.
With bias=True every token gets a constant coordinate appended, x~ = [x; 1] (d' = d + 1), so attention scores
and values can carry offsets; with bias=False, x~ = x (d' = d). Head m has a FROZEN random query-key matrix

    W_m = qk_mean * [I_d, 0; 0, 0] + qk_std * G_m,     G_m entries iid N(0, 1)    (W_m is d' x d')

(the mean acts on the token block only, never on the bias coordinate) and attention weights over the keys

    "relu":    a_{m,i} = ReLU(x~_0^T W_m x~_i) / N
    "softmax": a_{m,i} = softmax_i(x~_0^T W_m x~_i)

The output is f(x_0, X) = sum_m sum_i a_{m,i} <v_m, x~_i> + b with TRAINABLE values v_m in R^{d'} and intercept b.
It is linear in the M * d' features phi_m = sum_i a_{m,i} x~_i, so fitting v is a ridge problem (closed form).
Scale: the defaults suit unit-norm tokens (x_0^T G x_i ~ N(0, 1) then); with bias=True and qk_std=0.5 the
random part of a score has variance 0.25 * |x~_0|^2 |x~_i|^2 = 1. For the paper's "non-zero mean" sampling use
qk_mean ~ sqrt(d): then qk_mean * <x_0, x_i> has the same O(1) scale for unit-norm tokens in d dimensions.

Random-feature MLP (the baseline): the tokens are concatenated into z = [x_0, x_1, ..., x_N] in R^D,
D = (N + 1) d, and f(z) = sum_k v_k sigma(<w_k, z> + c_k) + b with frozen w_k ~ N(0, weight_std^2 / D * I),
c_k ~ N(0, bias_std^2) and trainable v, b. With as many features K as RFA has (M * d') the two models have the
same number of trainable weights: "equal feature counts".
"""

from __future__ import annotations

from typing import Literal, get_args

import numpy as np
import torch
from torch import nn

from interp.core.errors import InterpError
from interp.lines.rfa.ridge import ridge

AttentionKind = Literal["relu", "softmax"]
ATTENTION_KINDS: tuple[str, ...] = get_args(AttentionKind)
ActivationKind = Literal["relu", "tanh", "cos"]
ACTIVATIONS: tuple[str, ...] = get_args(ActivationKind)
_CHUNK = 1024  # rows per chunk when computing features: bounds the [rows, M, N] score tensor


def augment(x: torch.Tensor, bias: bool) -> torch.Tensor:
    """x: [..., d] -> [..., d + 1] with a trailing 1 when bias, else x itself."""
    return torch.cat([x, torch.ones_like(x[..., :1])], -1) if bias else x


def draw_qk(
    n_heads: int, dim: int, qk_mean: float, qk_std: float, bias: bool, generator: torch.Generator
) -> torch.Tensor:
    """The frozen query-key matrices W_m: [n_heads, d', d'] float64 (see the module docstring)."""
    width = dim + int(bias)
    qk = qk_std * torch.randn(n_heads, width, width, generator=generator, dtype=torch.float64)
    qk[:, :dim, :dim] += qk_mean * torch.eye(dim, dtype=torch.float64)
    return qk


def rfa_features(
    x0: torch.Tensor, keys: torch.Tensor, qk: torch.Tensor, attention: AttentionKind = "relu", bias: bool = True
) -> torch.Tensor:
    """phi_m = sum_i a_{m,i} x~_i for every head: x0 [B, d], keys [B, N, d], qk [M, d', d'] -> [B, M * d']."""
    if attention not in ATTENTION_KINDS:
        raise InterpError(f"Unknown attention {attention!r}; choose one of: {', '.join(ATTENTION_KINDS)}.")
    chunks = []
    for start in range(0, x0.shape[0], _CHUNK):
        q = augment(x0[start : start + _CHUNK], bias)  # [b, d']
        k = augment(keys[start : start + _CHUNK], bias)  # [b, N, d']
        qw = torch.einsum("bd,mde->bme", q, qk)  # x~_0^T W_m: [b, M, d']
        scores = torch.einsum("bme,bne->bmn", qw, k)  # x~_0^T W_m x~_i: [b, M, N]
        weights = torch.relu(scores) / k.shape[1] if attention == "relu" else torch.softmax(scores, -1)
        chunks.append(torch.einsum("bmn,bne->bme", weights, k).flatten(1))  # [b, M * d']
    return torch.cat(chunks) if chunks else x0.new_zeros(0, qk.shape[0] * qk.shape[1])


def activation(name: ActivationKind, pre: torch.Tensor) -> torch.Tensor:
    if name == "relu":
        return torch.relu(pre)
    if name == "tanh":
        return torch.tanh(pre)
    if name == "cos":
        return torch.cos(pre)
    raise InterpError(f"Unknown activation {name!r}; choose one of: {', '.join(ACTIVATIONS)}.")


def mlp_features(z: torch.Tensor, weight: torch.Tensor, offset: torch.Tensor, act: ActivationKind) -> torch.Tensor:
    """sigma(<w_k, z> + c_k): z [B, D], weight [K, D], offset [K] -> [B, K]."""
    return activation(act, z @ weight.T + offset)


def draw_mlp(
    in_dim: int, n_features: int, weight_std: float, bias_std: float, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Frozen first-layer weights [K, D] ~ N(0, weight_std^2 / D) and offsets [K] ~ N(0, bias_std^2)."""
    weight = torch.randn(n_features, in_dim, generator=generator, dtype=torch.float64) * (weight_std / in_dim**0.5)
    offset = torch.randn(n_features, generator=generator, dtype=torch.float64) * bias_std
    return weight, offset


def flatten_tokens(x0: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """[B, d] and [B, N, d] -> [B, (N + 1) d], query first: the layout the scikit-learn estimators take."""
    return torch.cat([x0, keys.flatten(1)], 1)


# ---------------------------------------------------------------------------------------------------------
# Modules: frozen random first layer (buffers), trainable linear readout (parameters)
# ---------------------------------------------------------------------------------------------------------
class _RandomFeatureModel(nn.Module):
    """Shared readout: f = features @ value + intercept, fitted in closed form or by gradient descent."""

    value: nn.Parameter  # [n_features]
    intercept: nn.Parameter  # []

    def _init_readout(self, n_features: int) -> None:
        self.value = nn.Parameter(torch.zeros(n_features, dtype=torch.float64))
        self.intercept = nn.Parameter(torch.zeros((), dtype=torch.float64))

    def features(self, x0: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:  # [B, n_features]
        raise NotImplementedError

    def forward(self, x0: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        """x0 [B, d], keys [B, N, d] -> predictions [B]."""
        return self.features(x0, keys) @ self.value + self.intercept

    def fit_ridge(self, x0: torch.Tensor, keys: torch.Tensor, y: torch.Tensor, alpha: float = 1e-3) -> float:
        """Set value and intercept to the closed-form ridge solution; returns the training MSE."""
        with torch.no_grad():
            phi = self.features(x0, keys).numpy()
            sol = ridge(phi, y.double().numpy(), alpha)
            self.value.copy_(torch.from_numpy(sol.coef))
            self.intercept.fill_(float(sol.intercept))
            return float(((self(x0, keys) - y) ** 2).mean())

    def fit_gradient(
        self, x0: torch.Tensor, keys: torch.Tensor, y: torch.Tensor, alpha: float = 1e-3, max_iter: int = 500
    ) -> float:
        """Train value and intercept by L-BFGS on the same objective, sum (y - f)^2 + alpha ||value||^2.

        Only the readout has gradients: the random first layer is a buffer, so it stays frozen."""
        with torch.no_grad():
            phi = self.features(x0, keys)
        y = y.double()
        opt = torch.optim.LBFGS(
            [self.value, self.intercept],
            lr=1.0,
            max_iter=max_iter,
            tolerance_grad=1e-12,
            tolerance_change=1e-15,
            history_size=50,
            line_search_fn="strong_wolfe",
        )

        def closure() -> torch.Tensor:
            opt.zero_grad()
            loss = ((phi @ self.value + self.intercept - y) ** 2).sum() + alpha * (self.value**2).sum()
            loss.backward()
            return loss

        opt.step(closure)
        with torch.no_grad():
            return float(((phi @ self.value + self.intercept - y) ** 2).mean())


class RandomFeatureAttention(_RandomFeatureModel):
    """M-head attention with frozen random query-key matrices and trainable values (module docstring)."""

    qk: torch.Tensor  # [M, d', d'], a buffer: frozen

    def __init__(
        self,
        dim: int,
        n_heads: int,
        attention: AttentionKind = "relu",
        qk_mean: float = 0.0,
        qk_std: float = 0.5,
        bias: bool = True,
        seed: int = 0,
        qk: torch.Tensor | None = None,
    ) -> None:
        super().__init__()
        if dim < 1 or n_heads < 1:
            raise InterpError(f"dim and n_heads must be >= 1, got dim={dim}, n_heads={n_heads}.")
        if attention not in ATTENTION_KINDS:
            raise InterpError(f"Unknown attention {attention!r}; choose one of: {', '.join(ATTENTION_KINDS)}.")
        self.dim, self.n_heads, self.attention, self.bias = dim, n_heads, attention, bias
        if qk is None:
            qk = draw_qk(n_heads, dim, qk_mean, qk_std, bias, torch.Generator().manual_seed(seed))
        width = dim + int(bias)
        if tuple(qk.shape) != (n_heads, width, width):
            raise InterpError(f"qk must be [{n_heads}, {width}, {width}], got {tuple(qk.shape)}.")
        self.register_buffer("qk", qk.double())
        self._init_readout(n_heads * width)

    def features(self, x0: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        return rfa_features(x0.double(), keys.double(), self.qk, self.attention, self.bias)


class RandomFeatureMLP(_RandomFeatureModel):
    """Two-layer network on the concatenated tokens with a frozen random first layer (module docstring)."""

    weight: torch.Tensor  # [K, D], frozen
    offset: torch.Tensor  # [K], frozen

    def __init__(
        self,
        in_dim: int,
        n_features: int,
        activation: ActivationKind = "relu",
        weight_std: float = 1.0,
        bias_std: float = 1.0,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if in_dim < 1 or n_features < 1:
            raise InterpError(f"in_dim and n_features must be >= 1, got {in_dim}, {n_features}.")
        if activation not in ACTIVATIONS:
            raise InterpError(f"Unknown activation {activation!r}; choose one of: {', '.join(ACTIVATIONS)}.")
        self.in_dim, self.activation = in_dim, activation
        weight, offset = draw_mlp(in_dim, n_features, weight_std, bias_std, torch.Generator().manual_seed(seed))
        self.register_buffer("weight", weight)
        self.register_buffer("offset", offset)
        self._init_readout(n_features)

    def features(self, x0: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        z = flatten_tokens(x0.double(), keys.double())
        if z.shape[1] != self.in_dim:
            raise InterpError(f"The tokens flatten to {z.shape[1]} numbers; this MLP takes {self.in_dim}.")
        return mlp_features(z, self.weight, self.offset, self.activation)


def as_tensor(x: np.ndarray) -> torch.Tensor:
    """float64 tensor from any array (copied: read-only or memory-mapped arrays are fine)."""
    return torch.tensor(np.asarray(x, dtype=np.float64))
