"""The entropy regularizer: penalty and gradients against a hand computation on a small example.

The default is the authors' released code / the paper's Algorithm 1 (hard margin, raw thresholds, per row,
summed over batch and rows, mean over heads then layers); the other options are ours and tested against loops."""

from __future__ import annotations

import inspect
import math

import pytest
import torch

from interp.core.errors import InterpError
from interp.lines.entropy.model import GPT, GPTConfig
from interp.lines.entropy.regularizer import EntropyRegularizer, entropy

# One layer, two heads, one sequence of T = 3 (causal rows). E_max = log 3, tolerance = 0.2 log 3 = 0.2197.
ROWS = [
    [[1.0, 0.0, 0.0], [0.5, 0.5, 0.0], [1 / 3, 1 / 3, 1 / 3]],  # head 0: H = 0, log 2, log 3
    [[1.0, 0.0, 0.0], [0.9, 0.1, 0.0], [0.6, 0.3, 0.1]],  # head 1
]
E_MAX = math.log(3)
TOL = 0.2 * E_MAX


def _patterns() -> torch.Tensor:
    return torch.tensor([ROWS], dtype=torch.float64).requires_grad_(True)  # [batch 1, heads 2, q 3, k 3]


def _h(row: list[float]) -> float:
    return -sum(p * math.log(p) for p in row if p > 0)


def _reg(**kw) -> EntropyRegularizer:
    """Sigmoid thresholds (ours) with theta = 0.5 and sigmoid(-1) = 0.2689, for the option tests."""
    reg = EntropyRegularizer(1, 2, **{"thresholds": "sigmoid", **kw}).double()
    with torch.no_grad():
        reg.weight.copy_(torch.tensor([[0.0, -1.0]]))
    return reg


def _theta() -> list[float]:
    return [0.5, 1 / (1 + math.e)]


# ---------------------------------------------------------------------------------------------------------
# The default = the released code / Algorithm 1
# ---------------------------------------------------------------------------------------------------------
def test_default_equals_algorithm_1_in_closed_form() -> None:
    """Thresholds 0.5 and 0.1 (raw, as released) on ROWS: every term has a closed form in log 2 and log 3.

    head 0 (theta 0.5, target 0.5 L3; L3 = log 3, tol = 0.2 L3): rows H = 0, log 2, L3 give dev = -0.5 L3,
      log 2 - 0.5 L3 (= 0.144 < tol: inside the band), +0.5 L3 -> 0.25 L3^2 + 0 + 0.25 L3^2.
    head 1 (theta 0.1): rows [1,0,0] dev = -0.1 L3 (inside), [0.5,0.5,0] dev = log 2 - 0.1 L3, uniform
      dev = 0.9 L3 -> (log 2 - 0.1 L3)^2 + 0.81 L3^2.
    penalty = (head 0 + head 1) / 2 heads / 1 layer; d/dtheta_h = sum over outside rows of 2 dev (-L3) / 2.
    """
    l2, l3 = math.log(2), math.log(3)
    rows = [ROWS[0], [[1.0, 0.0, 0.0], [0.5, 0.5, 0.0], [1 / 3, 1 / 3, 1 / 3]]]
    pat = torch.tensor([rows], dtype=torch.float64).requires_grad_(True)
    reg = EntropyRegularizer(1, 2).double()
    with torch.no_grad():
        reg.weight.copy_(torch.tensor([[0.5, 0.1]], dtype=torch.float64))
    penalty = reg.penalty([pat])
    penalty.backward()
    expected = (0.5 * l3**2 + (l2 - 0.1 * l3) ** 2 + 0.81 * l3**2) / 2
    assert penalty.item() == pytest.approx(expected, abs=1e-12)
    assert reg([pat.detach()]).item() == pytest.approx(1e-5 * expected, abs=1e-16)  # lambda = 1e-5
    # head 0's two outside rows pull in opposite directions (-0.5 L3 and +0.5 L3): gradient 0.
    assert reg.weight.grad[0].tolist() == pytest.approx([0.0, -l3 * (l2 - 0.1 * l3 + 0.9 * l3)], abs=1e-12)
    # d/dp of dev^2 / 2 heads = dev * dH/dp = dev * -(log p + 1); head 1's middle row: dev = log 2 - 0.1 L3.
    grad_mid = (l2 - 0.1 * l3) * -(math.log(0.5) + 1)
    assert pat.grad[0, 1, 1, :2].tolist() == pytest.approx([grad_mid, grad_mid], abs=1e-12)
    assert pat.grad[0, 0, 1].abs().max().item() == 0.0  # inside the band: no gradient at all
    assert pat.grad[0, 1, 0].abs().max().item() == 0.0


def _released_formula(patterns: list[torch.Tensor], theta: list[list[float]], context: int | None) -> float:
    """The released `compute_loss` restated as plain loops (Algorithm 1): theta[l][h]; all rows of the batch;
    E_max = log(context or the first layer's key length); log(p + 1e-9) as released."""
    e_max = math.log(context or patterns[0].shape[-1])
    total = 0.0
    for layer, pat in enumerate(patterns):
        batch, heads, q, _ = pat.shape
        layer_sum = 0.0
        for h in range(heads):
            for b in range(batch):
                for i in range(q):
                    ent = -sum(p * math.log(p + 1e-9) for p in pat[b, h, i].tolist())
                    dev = ent - theta[layer][h] * e_max
                    layer_sum += dev**2 if abs(dev) > 0.2 * e_max else 0.0
        total += layer_sum / heads
    return total / len(patterns)


def _random_patterns(n_layers: int, batch: int, heads: int, t: int, seed: int = 0) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    causal = torch.ones(t, t, dtype=torch.bool).tril()
    out = []
    for _ in range(n_layers):
        logits = 3 * torch.randn(batch, heads, t, t, generator=gen, dtype=torch.float64)
        out.append(logits.masked_fill(~causal, float("-inf")).softmax(-1))  # [batch, heads, t, t]
    return out


def test_default_equals_the_released_formula_on_random_patterns() -> None:
    """2 layers x 3 heads, batch 2, T = 6; per-(layer, head) thresholds, and the released example's sharing."""
    patterns = _random_patterns(2, 2, 3, 6)
    theta = [[0.9, 0.5, 0.1], [0.3, 0.7, 0.45]]
    reg = EntropyRegularizer(2, 3).double()
    with torch.no_grad():
        reg.weight.copy_(torch.tensor(theta, dtype=torch.float64))
    value = reg(patterns).item()
    assert value / 1e-5 == pytest.approx(_released_formula(patterns, theta, None), rel=1e-7)
    assert value > 0
    shared = EntropyRegularizer(2, 3, share_thresholds=True, context_size=1024).double()
    assert shared.weight.shape == (1, 3) and shared.theta.shape == (2, 3)
    with torch.no_grad():
        shared.weight.copy_(torch.tensor([theta[0]], dtype=torch.float64))
    ref = _released_formula(patterns, [theta[0], theta[0]], 1024)
    assert shared.penalty(patterns).item() == pytest.approx(ref, rel=1e-7)


def test_default_gradient_matches_finite_differences_of_the_released_formula() -> None:
    patterns = _random_patterns(2, 1, 2, 5, seed=3)
    theta = [[0.6, 0.25], [0.4, 0.8]]  # not 0.2: the one-key first row (H = 0) would sit on the band edge
    reg = EntropyRegularizer(2, 2).double()
    with torch.no_grad():
        reg.weight.copy_(torch.tensor(theta, dtype=torch.float64))
    reg.penalty(patterns).backward()
    eps = 1e-6
    for layer in range(2):
        for h in range(2):
            up = [row[:] for row in theta]
            down = [row[:] for row in theta]
            up[layer][h] += eps
            down[layer][h] -= eps
            numeric = (_released_formula(patterns, up, None) - _released_formula(patterns, down, None)) / (2 * eps)
            assert reg.weight.grad[layer, h].item() == pytest.approx(numeric, rel=1e-5, abs=1e-8)


def test_defaults_are_the_released_code() -> None:
    """Fails if a default drifts from the released code (the margin above all: issue 17)."""
    params = inspect.signature(EntropyRegularizer).parameters
    defaults = {k: p.default for k, p in params.items() if p.default is not inspect.Parameter.empty}
    assert defaults["margin"] == "hard"
    assert defaults["gamma"] == 0.2 and defaults["lam"] == 1e-5
    assert defaults["thresholds"] == "raw" and defaults["context_size"] is None
    assert defaults["per"] == "row" and defaults["reduction"] == "sum"
    # Behaviour, not just the name: one row just outside the band pays the whole dev^2 (a hinge would pay
    # (0.01 tol)^2 = 1e-4 tol^2); one just inside pays nothing.
    t = 4
    tol = 0.2 * math.log(t)
    reg = EntropyRegularizer(1, 1).double()
    for factor, expected in ((1.01, (1.01 * tol) ** 2), (0.99, 0.0)):
        with torch.no_grad():
            reg.weight.fill_(factor * tol / math.log(t))  # H = 0 (one-hot row): dev = -factor * tol
        one_hot = torch.zeros(1, 1, 1, t, dtype=torch.float64)
        one_hot[..., 0] = 1.0
        assert reg.penalty([one_hot]).item() == pytest.approx(expected, abs=1e-12)


# ---------------------------------------------------------------------------------------------------------
# Our options (hinge, sigmoid thresholds, per sequence / head, mean) against hand computations and loops
# ---------------------------------------------------------------------------------------------------------
def test_hinge_sigmoid_penalty_and_gradients_match_hand_computation() -> None:
    reg = _reg(margin="hinge")  # ours: hinge, sigmoid thresholds, per row, summed over rows
    pat = _patterns()
    penalty = reg.penalty([pat[:]])
    penalty.backward()
    hand, d_theta, d_pat = 0.0, [0.0, 0.0], [[[0.0] * 3 for _ in range(3)] for _ in range(2)]
    for h, theta in enumerate(_theta()):
        for i, row in enumerate(ROWS[h]):
            dev = _h(row) - theta * E_MAX
            excess = max(0.0, abs(dev) - TOL)
            hand += excess**2 / 2  # mean over the 2 heads (1 layer)
            g = 2 * excess * math.copysign(1.0, dev) / 2  # d penalty / d dev
            d_theta[h] += g * (-E_MAX) * theta * (1 - theta)  # dev depends on theta = sigmoid(w)
            for j, p in enumerate(row):
                d_pat[h][i][j] = g * -(math.log(p) + 1) if p > 0 else 0.0  # dH/dp = -(log p + 1)
    assert hand > 0.05  # some rows are outside the band …
    assert penalty.item() == pytest.approx(hand, abs=1e-12)
    assert reg.weight.grad[0].tolist() == pytest.approx(d_theta, abs=1e-12)
    # dH/dp is infinite at p = 0 (the masked causal entries); only p > 0 entries have a hand value. Those at
    # p = 0 do not matter when p comes from a softmax, whose Jacobian is 0 there (see the next test).
    positive = pat.detach()[0] > 0
    torch.testing.assert_close(pat.grad[0][positive], torch.tensor(d_pat, dtype=torch.float64)[positive])
    # … and head 0's middle row (H = log 2, target 0.549, |dev| = 0.144 < 0.2197) contributes nothing.
    assert pat.grad[0, 0, 1].abs().max().item() == 0.0
    assert reg([pat]).item() == pytest.approx(1e-5 * hand, abs=1e-15)  # forward = lam * penalty


def _loop_penalty(margin: str, per: str, reduction: str) -> float:
    """A plain-loop restatement of every option combination, for the same example."""
    total = 0.0
    for h, theta in enumerate(_theta()):
        ents = [_h(r) for r in ROWS[h]]
        units = ents if per == "row" else [sum(ents) / 3]  # batch of one: "sequence" and "head" agree
        pens = []
        for e in units:
            dev = e - theta * E_MAX
            if margin == "hinge":
                pens.append(max(0.0, abs(dev) - TOL) ** 2)
            else:
                pens.append(dev**2 if abs(dev) > TOL else 0.0)
        head = sum(pens) if reduction == "sum" else sum(pens) / (3 if per == "row" else 1)
        total += head / 2
    return total


@pytest.mark.parametrize("margin", ["hinge", "hard"])
@pytest.mark.parametrize("per", ["row", "sequence", "head"])
@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_every_option_matches_the_loop(margin: str, per: str, reduction: str) -> None:
    reg = _reg(margin=margin, per=per, reduction=reduction)
    assert reg.penalty([_patterns()]).item() == pytest.approx(_loop_penalty(margin, per, reduction), abs=1e-12)


def test_hard_margin_differs_from_hinge() -> None:
    # The paper's indicator form penalizes the whole deviation once outside the band; the hinge only the excess.
    hard, hinge = _loop_penalty("hard", "row", "sum"), _loop_penalty("hinge", "row", "sum")
    assert hard > hinge > 0


def test_query_mask_and_layers() -> None:
    reg = _reg(margin="hinge")
    pat = _patterns().detach()
    only_last = torch.tensor([[False, False, True]])
    expected = sum(max(0.0, abs(_h(ROWS[h][2]) - t * E_MAX) - TOL) ** 2 for h, t in enumerate(_theta())) / 2
    assert reg.penalty([pat], only_last).item() == pytest.approx(expected, abs=1e-12)
    # A second sequence whose rows are all masked out changes nothing, for every `per`.
    pair, mask = torch.cat([pat, pat.flip(1)]), torch.tensor([[True, True, True], [False, False, False]])
    for per in ("row", "sequence", "head"):
        one = _reg(per=per).penalty([pat]).item()
        assert _reg(per=per).penalty([pair], mask).item() == pytest.approx(one, abs=1e-12)
    two = EntropyRegularizer(2, 2).double()
    # Two identical layers with the same theta: the mean over layers equals one layer's penalty.
    assert two.penalty([pat, pat]).item() == pytest.approx(EntropyRegularizer(1, 2).double().penalty([pat]).item())


def test_threshold_forms_and_context_size() -> None:
    raw, sig = EntropyRegularizer(3, 2, theta_init=0.3), EntropyRegularizer(3, 2, theta_init=0.3, thresholds="sigmoid")
    torch.testing.assert_close(raw.theta, sig.theta)  # same starting target either way
    assert raw.weight.shape == (3, 2) and torch.allclose(raw.weight, torch.tensor(0.3))
    with torch.no_grad():
        raw.weight.fill_(1.7)  # raw thresholds are unconstrained (as released); sigmoid stays in (0, 1)
        sig.weight.fill_(5.0)
    assert raw.theta.max().item() == pytest.approx(1.7) and sig.theta.max().item() < 1
    # context_size fixes E_max = log(context_size) instead of the key length.
    pat = _patterns().detach()
    fixed = EntropyRegularizer(1, 2, context_size=9).double()
    ref = _released_formula([pat], [[0.5, 0.5]], 9)
    assert fixed.penalty([pat]).item() == pytest.approx(ref, rel=1e-7) and ref != _released_formula(
        [pat], [[0.5] * 2], None
    )
    assert "margin=hard" in repr(fixed) and "context_size=9" in repr(fixed)


def test_entropy_gradient_is_finite_at_zero_probabilities() -> None:
    logits = torch.randn(2, 3, 4, 4, requires_grad=True)
    pattern = logits.masked_fill(~torch.ones(4, 4, dtype=torch.bool).tril(), float("-inf")).softmax(-1)
    entropy(pattern).sum().backward()
    assert torch.isfinite(logits.grad).all()
    ref = -torch.special.xlogy(pattern, pattern).sum(-1)
    torch.testing.assert_close(entropy(pattern), ref)


def test_regularizer_moves_entropy_into_the_band() -> None:
    """Minimizing the penalty alone on a small GPT drives it down: the module trains what it should."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny steps: 2 threads on a shared machine ran ~20x slower
    try:
        _minimize_penalty()
    finally:
        torch.set_num_threads(threads)


def _minimize_penalty() -> None:
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=20, n_layer=2, n_head=2, d_model=16, n_ctx=16))
    reg = EntropyRegularizer(2, 2, theta_init=0.2)  # targets 0.2 log T: far below random init's ~uniform
    opt = torch.optim.Adam([*model.parameters(), *reg.parameters()], lr=3e-2)
    x = torch.randint(0, 20, (8, 16))
    first = None
    for _ in range(30):
        penalty = reg.penalty(model(x)[1])
        first = penalty.item() if first is None else first
        opt.zero_grad()
        penalty.backward()
        opt.step()
    assert reg.penalty(model(x)[1]).item() < 0.3 * first


def test_bad_arguments() -> None:
    with pytest.raises(InterpError, match="gamma"):
        EntropyRegularizer(2, 2, gamma=1.5)
    with pytest.raises(InterpError, match="hard, hinge"):
        EntropyRegularizer(2, 2, margin="soft")  # type: ignore[arg-type]
    with pytest.raises(InterpError, match="raw, sigmoid"):
        EntropyRegularizer(2, 2, thresholds="tanh")  # type: ignore[arg-type]
    with pytest.raises(InterpError, match="context_size"):
        EntropyRegularizer(2, 2, context_size=0)
    with pytest.raises(InterpError, match="theta_init"):
        EntropyRegularizer(2, 2, theta_init=1.0)
    reg = EntropyRegularizer(2, 2)
    with pytest.raises(InterpError, match="2 layers"):
        reg.penalty([torch.zeros(1, 2, 3, 3)])
    with pytest.raises(InterpError, match=r"\[batch, 2, q, k\]"):
        reg.penalty([torch.zeros(1, 3, 3, 3)] * 2)
