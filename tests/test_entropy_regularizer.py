"""The entropy regularizer: penalty and gradients against a hand computation on a small example."""

from __future__ import annotations

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
    reg = EntropyRegularizer(1, 2, **kw).double()
    with torch.no_grad():
        reg.theta_logit.copy_(torch.tensor([[0.0, -1.0]]))  # theta = 0.5 and sigmoid(-1) = 0.2689
    return reg


def _theta() -> list[float]:
    return [0.5, 1 / (1 + math.e)]


def test_penalty_and_gradients_match_hand_computation() -> None:
    reg = _reg()  # hinge, per row, summed over rows: the defaults
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
    assert reg.theta_logit.grad[0].tolist() == pytest.approx(d_theta, abs=1e-12)
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
    reg = _reg()
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
    with pytest.raises(InterpError, match="hinge, hard"):
        EntropyRegularizer(2, 2, margin="soft")  # type: ignore[arg-type]
    with pytest.raises(InterpError, match="theta_init"):
        EntropyRegularizer(2, 2, theta_init=1.0)
    reg = EntropyRegularizer(2, 2)
    with pytest.raises(InterpError, match="2 layers"):
        reg.penalty([torch.zeros(1, 2, 3, 3)])
    with pytest.raises(InterpError, match=r"\[batch, 2, q, k\]"):
        reg.penalty([torch.zeros(1, 3, 3, 3)] * 2)
