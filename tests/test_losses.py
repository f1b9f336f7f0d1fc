"""Policy losses: hand-worked reference values per branch, gradients, ERC-gate properties, input validation."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from erc_core.losses import (AGG_MODES, POLICY_LOSSES, agg_loss, entropy_ratio, entropy_ratio_penalty, erc_mask,
                             kl_penalty, policy_loss)

MODES = sorted(POLICY_LOSSES)

D = torch.float64


def one_token(ratio: float, adv: float, **kw):
    """Loss and d loss / d log_prob for a single response token with the given importance ratio and advantage."""
    old = torch.zeros(1, 1, dtype=D)
    lp = torch.full((1, 1), math.log(ratio), dtype=D, requires_grad=True)
    kw.setdefault("erc_bounds", None)
    loss, stats = policy_loss(lp, old, torch.full((1, 1), adv, dtype=D), torch.ones(1, 1, dtype=D), **kw)
    loss.backward()
    return loss.item(), lp.grad.item(), stats


# ------------------------------------------------------------------ hand-worked values: DAPO (0.2 / 0.28, c = 10)
@pytest.mark.parametrize("ratio, adv, value, grad, clipfrac, lower", [
    (1.5, 1.0, -1.28, 0.0, 1.0, 0.0),     # A > 0, r above 1 + 0.28: clipped, no gradient
    (1.1, 1.0, -1.1, -1.1, 0.0, 0.0),     # inside the range: d(-A r)/d logp = -A r
    (0.5, 1.0, -0.5, -0.5, 0.0, 0.0),     # A > 0, r below 1 - 0.2: NOT clipped (pessimistic max)
    (0.5, -1.0, 0.8, 0.0, 1.0, 0.0),      # A < 0, r below 1 - 0.2: clipped
    (1.5, -1.0, 1.5, 1.5, 0.0, 0.0),      # A < 0, r above 1 + 0.28: not clipped, below the dual-clip cap
    (20.0, -1.0, 10.0, 0.0, 0.0, 1.0),    # A < 0, r > c: dual clip caps the loss at -A c = 10
    (20.0, 2.0, -2.56, 0.0, 1.0, 0.0),    # dual clip never applies to A > 0
])
def test_dapo_reference_values(ratio, adv, value, grad, clipfrac, lower):
    v, g, s = one_token(ratio, adv, mode="dapo", clip_low=0.2, clip_high=0.28, clip_c=10.0)
    assert v == pytest.approx(value, abs=1e-12)
    assert g == pytest.approx(grad, abs=1e-12)
    assert s["ppo_clipfrac"] == clipfrac
    assert s["ppo_clipfrac_lower"] == lower


# ------------------------------------------------------------------ hand-worked values: GPPO (0.2 / 0.2, c = 10)
@pytest.mark.parametrize("ratio, adv, value, grad", [
    (1.5, 1.0, -1.2, -1.2),    # value clipped to 1.2, gradient kept and scaled: -A (1 + eps) r / sg(r) -> -1.2
    (1.1, 1.0, -1.1, -1.1),    # inside: identical to PPO
    (0.5, -1.0, 0.8, 0.8),     # A < 0 below the range: value 0.8, gradient -A (1 - eps) = 0.8 (PPO: 0)
    (0.5, 1.0, -0.5, -0.5),    # not clipped (pessimistic max keeps -A r)
    (20.0, -1.0, 10.0, 0.0),   # dual clip: constant -A c, no gradient, exactly as the official gppo_erc
])
def test_gppo_reference_values(ratio, adv, value, grad):
    v, g, _ = one_token(ratio, adv, mode="gppo", clip_low=0.2, clip_high=0.2, clip_c=10.0)
    assert v == pytest.approx(value, abs=1e-12)
    assert g == pytest.approx(grad, abs=1e-12)


# ------------------------------------------------------------------ hand-worked values: DPPO (arXiv 2602.04879)
def one_prob(p_old: float, p: float, adv: float, mode: str, delta: float, clip_c: float = 20.0):
    """Loss, d loss / d log_prob and stats for one token whose sampled-token probability moves p_old -> p."""
    old = torch.full((1, 1), math.log(p_old), dtype=D)
    lp = torch.full((1, 1), math.log(p), dtype=D, requires_grad=True)
    loss, stats = policy_loss(lp, old, torch.full((1, 1), adv, dtype=D), torch.ones(1, 1, dtype=D), mode=mode,
                              clip_low=delta, clip_high=delta, clip_c=clip_c, erc_bounds=None)
    loss.backward()
    return loss.item(), lp.grad.item(), stats


def bkl(p_old: float, p: float) -> float:
    """Binary KL between Bernoulli(p_old) and Bernoulli(p), by hand."""
    return p_old * math.log(p_old / p) + (1 - p_old) * math.log((1 - p_old) / (1 - p))


@pytest.mark.parametrize("p_old, p, adv, trusted", [
    (0.5, 0.6, 1.0, True),     # A > 0, rise 0.1 <= 0.15: trusted, gradient -A r = -1.2
    (0.5, 0.7, 1.0, False),    # A > 0, rise 0.2 > 0.15: masked (value 0, no gradient)
    (0.5, 0.3, 1.0, True),     # A > 0, a fall is never masked
    (0.5, 0.3, -1.0, False),   # A < 0, fall 0.2 > 0.15: masked
    (0.5, 0.7, -1.0, True),    # A < 0, a rise is never masked
    (0.99, 0.8, -1.0, False),  # high-probability token: r = 0.81 is inside DAPO's [0.8, 1.28], DPPO masks it
    (1e-4, 1e-3, 1.0, True),   # rare token: r = 10 (PPO clips it), |p - p_old| ~ 1e-3: trusted
    (0.5, 0.5, 0.0, True),     # A = 0 takes the A <= 0 branch; loss and gradient 0
])
def test_dppo_tv_reference_values(p_old, p, adv, trusted):
    v, g, s = one_prob(p_old, p, adv, "dppo_tv", 0.15)
    r = p / p_old
    assert v == pytest.approx(-adv * r * math.log(p) if trusted else 0.0, rel=1e-12, abs=1e-12)
    assert g == pytest.approx(-adv * r if trusted else 0.0, rel=1e-12, abs=1e-12)
    assert s["ppo_clipfrac"] == (0.0 if trusted else 1.0) and s["ppo_clipfrac_lower"] == 0.0


@pytest.mark.parametrize("p_old, p, adv, trusted", [
    (0.5, 0.6, 1.0, True),     # binary KL 0.0204 <= 0.05
    (0.5, 0.7, 1.0, False),    # binary KL 0.0872 > 0.05 and p rose: masked
    (0.5, 0.3, 1.0, True),     # KL 0.0872 but p fell: trusted for A > 0
    (0.5, 0.3, -1.0, False),   # KL 0.0872 and p fell: masked for A < 0
    (0.5, 0.7, -1.0, True),    # p rose: trusted for A < 0
    (0.99, 0.8, -1.0, False),  # KL 0.1283: masked
    (0.5, 0.55, -1.0, True),   # KL 0.0050 <= 0.05, p rose
])
def test_dppo_kl_reference_values(p_old, p, adv, trusted):
    assert (bkl(p_old, p) <= 0.05 or (p <= p_old if adv > 0 else p >= p_old)) == trusted  # the table is right
    v, g, s = one_prob(p_old, p, adv, "dppo_kl", 0.05)
    r = p / p_old
    assert v == pytest.approx(-adv * r * math.log(p) if trusted else 0.0, rel=1e-12, abs=1e-12)
    assert g == pytest.approx(-adv * r if trusted else 0.0, rel=1e-12, abs=1e-12)
    assert s["ppo_clipfrac"] == (0.0 if trusted else 1.0)


@pytest.mark.parametrize("mode", ["dppo_tv", "dppo_kl"])
def test_dppo_truncates_the_ratio_at_clip_c(mode):
    """Truncated importance sampling instead of a dual clip: r = 100 on a trusted rare token; the gradient weight is
    min(r, c) = 20 (value -A 20 log p), for either sign of A; counted in ppo_clipfrac_lower."""
    for adv in (1.0, -1.0):
        v, g, s = one_prob(1e-5, 1e-3, adv, mode, 0.15 if mode == "dppo_tv" else 0.05, clip_c=20.0)
        assert v == pytest.approx(-adv * 20.0 * math.log(1e-3), rel=1e-12)
        assert g == pytest.approx(-adv * 20.0, rel=1e-12)
        assert s["ppo_clipfrac"] == 0.0 and s["ppo_clipfrac_lower"] == 1.0


@pytest.mark.parametrize("mode", ["dppo_tv", "dppo_kl"])
def test_dppo_matches_verl(mode):
    """Same loss, gradients and clip fractions as verl's own dppo_tv / dppo_kl (verl 0.9.1), token-mean."""
    core_algos = pytest.importorskip("verl.trainer.ppo.core_algos")
    from verl.workers.config import ActorConfig

    g = torch.Generator().manual_seed(3)
    old = -torch.rand(5, 7, dtype=D, generator=g) * 2
    lp = (old + 0.5 * torch.randn(5, 7, dtype=D, generator=g)).clamp(max=-1e-3).requires_grad_()
    adv = torch.randn(5, 7, dtype=D, generator=g)
    mask = torch.rand(5, 7, generator=g) < 0.8
    delta = 0.15 if mode == "dppo_tv" else 0.05
    cfg = ActorConfig(strategy="fsdp", rollout_n=4, ppo_mini_batch_size=4, ppo_micro_batch_size_per_gpu=2,
                      clip_ratio_low=delta, clip_ratio_high=delta, clip_ratio_c=1.5)
    ref, metrics = core_algos.get_policy_loss_fn(mode)(old_log_prob=old, log_prob=lp, advantages=adv,
                                                       response_mask=mask, loss_agg_mode="token-mean", config=cfg)
    (ref_grad,) = torch.autograd.grad(ref, lp)
    loss, stats = policy_loss(lp, old, adv, mask, mode=mode, clip_low=delta, clip_high=delta, clip_c=1.5,
                              erc_bounds=None)
    (grad,) = torch.autograd.grad(loss, lp)
    torch.testing.assert_close(loss, ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-12, atol=1e-12)
    assert 0 < stats["ppo_clipfrac"] < 1 and 0 < stats["ppo_clipfrac_lower"] < 1  # every branch was exercised
    assert stats["ppo_clipfrac"] == pytest.approx(metrics["actor/pg_clipfrac"])
    assert stats["ppo_clipfrac_lower"] == pytest.approx(metrics["actor/pg_clipfrac_lower"])
    assert stats["ppo_kl"] == pytest.approx(metrics["actor/ppo_kl"])


def test_log_ratio_is_clamped_to_20():
    v, g, s = one_token(math.exp(30.0), 1.0, clip_high=1e12)  # huge clip_high: the clamp at 20 is what bounds it
    assert v == pytest.approx(-math.exp(20.0), rel=1e-12)
    assert g == 0.0  # clamp blocks the gradient, as torch.clamp in the official code
    assert s["ppo_kl"] == pytest.approx(-20.0)


# ------------------------------------------------------------------ hand-worked values: the ERC gate
def erc_case(h_new: float, h_old: float, bounds=(0.95, 1.05)):
    lp = torch.full((1, 1), math.log(1.1), dtype=D, requires_grad=True)
    args = (lp, torch.zeros(1, 1, dtype=D), torch.ones(1, 1, dtype=D), torch.ones(1, 1, dtype=D))
    ent, old_ent = torch.full((1, 1), h_new, dtype=D), torch.full((1, 1), h_old, dtype=D)
    loss, stats = policy_loss(*args, entropy=ent, old_entropy=old_ent, erc_bounds=bounds)
    loss.backward()
    return loss.item(), lp.grad.item(), stats


@pytest.mark.parametrize("h_new, h_old, kept, side", [
    (1.04, 1.0, True, None), (0.96, 1.0, True, None),
    (1.06, 1.0, False, "high"), (0.94, 1.0, False, "low"),
    (0.0, 0.0, True, None),                       # (0 + 1e-8) / (0 + 1e-8) = 1: deterministic tokens stay in band
    (1e-3, 0.0, False, "high"),                   # entropy appearing where there was none is out of band
])
def test_erc_gate_reference(h_new, h_old, kept, side):
    v, g, s = erc_case(h_new, h_old)
    assert v == pytest.approx(-1.1, abs=1e-12)          # the value never changes
    assert g == pytest.approx(-1.1 if kept else 0.0, abs=1e-12)
    assert s["erc_clipfrac"] == (0.0 if kept else 1.0)
    assert s["erc_clipfrac_high"] == (1.0 if side == "high" else 0.0)
    assert s["erc_clipfrac_low"] == (1.0 if side == "low" else 0.0)
    assert s["entropy_ratio_mean"] == pytest.approx((h_new + 1e-8) / (h_old + 1e-8))


def test_erc_bounds_are_strict():
    mask = torch.ones(1, 1)
    h, h_old = torch.tensor([[1.3]], dtype=D), torch.tensor([[1.2]], dtype=D)
    rho = float(entropy_ratio(h, h_old))  # > 1
    assert not erc_mask(h, h_old, mask, (0.5, rho)).item()                        # rho == high: gated
    assert erc_mask(h, h_old, mask, (0.5, math.nextafter(rho, 2.0))).item()       # just above: kept
    rho = float(entropy_ratio(h_old, h))  # < 1
    assert not erc_mask(h_old, h, mask, (rho, 2.0)).item()                        # rho == low: gated
    assert erc_mask(h_old, h, mask, (math.nextafter(rho, 0.0), 2.0)).item()       # just below: kept


def test_erc_mask_excludes_non_response_tokens():
    h = torch.ones(2, 3)
    assert erc_mask(h, h, torch.tensor([[1, 1, 0], [0, 0, 0]]), (0.9, 1.1)).tolist() == [
        [True, True, False], [False, False, False]]


def test_token_mean_divides_by_all_response_tokens():
    """4 response tokens, 2 gated: the loss is the sum of all 4 / 4, the gradient only flows through the 2 kept."""
    lp = torch.zeros(1, 5, dtype=D, requires_grad=True)
    adv = torch.tensor([[1.0, 2.0, 3.0, 4.0, 5.0]], dtype=D)
    mask = torch.tensor([[1, 1, 1, 1, 0]], dtype=D)
    old_h = torch.ones(1, 5, dtype=D)
    h = torch.tensor([[1.0, 1.2, 1.0, 0.5, 1.0]], dtype=D)
    loss, s = policy_loss(lp, torch.zeros(1, 5, dtype=D), adv, mask, entropy=h, old_entropy=old_h)
    loss.backward()
    assert loss.item() == pytest.approx(-(1 + 2 + 3 + 4) / 4)
    assert lp.grad.tolist() == [[-0.25, 0.0, -0.75, 0.0, 0.0]]
    assert s["erc_clipfrac"] == 0.5 and s["erc_clipfrac_high"] == 0.25 and s["erc_clipfrac_low"] == 0.25


# ------------------------------------------------------------------ aggregation modes (verl's meanings)
LOSS = torch.tensor([[1.0, 2.0, 3.0, 9.0], [4.0, 5.0, 6.0, 9.0], [7.0, 7.0, 7.0, 7.0]], dtype=D)
MASK = torch.tensor([[1, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0]], dtype=D)


@pytest.mark.parametrize("agg, expected", [
    ("token-mean", (1 + 2 + 4) / 3),
    ("seq-mean-token-sum", (3 + 4 + 0) / 3),            # every sequence counts, empty ones as 0
    ("seq-mean-token-mean", (1.5 + 4.0) / 2),           # only sequences with response tokens
    ("seq-mean-token-sum-norm", (1 + 2 + 4) / 4),       # divided by T = 4
])
def test_agg_reference_values(agg, expected):
    assert agg_loss(LOSS, MASK, agg).item() == pytest.approx(expected)


@pytest.mark.parametrize("agg", AGG_MODES)
@pytest.mark.parametrize("mode", MODES)
def test_all_zero_mask_gives_zero_loss_and_zero_grad(agg, mode):
    lp = torch.randn(3, 4, dtype=D, requires_grad=True)
    ent = torch.rand(3, 4, dtype=D)
    loss, stats = policy_loss(lp, torch.randn(3, 4, dtype=D), torch.randn(3, 4, dtype=D), torch.zeros(3, 4),
                              entropy=ent, old_entropy=2 * ent, mode=mode, agg=agg, mode_options=options(mode))
    loss.backward()
    assert loss.item() == 0.0 and torch.count_nonzero(lp.grad) == 0
    assert all(math.isfinite(v) for v in stats.values())


# ------------------------------------------------------------------ gradients in float64
@pytest.mark.parametrize("mode", ["dapo", "gppo", "clip_cov", "kl_cov"])
@pytest.mark.parametrize("agg", AGG_MODES)
def test_gradcheck_policy_loss(mode, agg):
    g = torch.Generator().manual_seed(0)
    old = torch.randn(3, 5, dtype=D, generator=g)
    lp = (old + 0.4 * torch.randn(3, 5, dtype=D, generator=g)).requires_grad_()
    adv = torch.randn(3, 5, dtype=D, generator=g)
    mask = (torch.rand(3, 5, generator=g) > 0.2).to(D)
    h_old = torch.rand(3, 5, dtype=D, generator=g) + 0.5
    h = h_old * (1 + 0.1 * torch.randn(3, 5, dtype=D, generator=g))

    def loss(x, erc_bounds):
        return policy_loss(x, old, adv, mask, entropy=h, old_entropy=h_old, mode=mode, agg=agg,
                           clip_high=0.2 if mode == "gppo" else 0.28, erc_bounds=erc_bounds,
                           mode_options=options(mode))[0]

    # Finite differences see every token's VALUE move, but two kinds of token have a gradient that is not the
    # derivative of the value on purpose: ERC-gated tokens (stopped) and, in GPPO, clipped tokens (preserved and
    # scaled; their values are checked by hand above). Perturb only the other tokens: there analytic == numerical.
    ratio = torch.exp(lp.detach() - old)
    free = mask.bool()
    if mode == "gppo":
        free &= (ratio > 0.8) & (ratio < 1.2)
    base = lp.detach().clone()  # not a view: gradcheck perturbs lp in place
    assert torch.autograd.gradcheck(lambda y: loss(torch.where(free, y, base), None), (lp,), eps=1e-7, atol=1e-8)
    keep = free & erc_mask(h, h_old, mask, (0.95, 1.05))
    assert 0 < keep.sum() < free.sum()
    assert torch.autograd.gradcheck(lambda y: loss(torch.where(keep, y, base), (0.95, 1.05)), (lp,),
                                    eps=1e-7, atol=1e-8)


@pytest.mark.parametrize("mode", ["dppo_tv", "dppo_kl"])
@pytest.mark.parametrize("agg", AGG_MODES)
def test_gradcheck_dppo(mode, agg):
    """DPPO's loss is a surrogate (-A sg(min(r, c)) log p) whose VALUE is not the objective; its gradient on a trusted
    token with r < c must be the PPO policy gradient, the derivative of -A r. So the function checked below has the
    value of the unclipped surrogate -A r (DAPO with an unbounded range) and DPPO's autograd gradient; only trusted
    tokens with r < c are perturbed (masked tokens: value and gradient 0, and truncated ones are checked by hand
    above), with and without the ERC gate on top."""
    g = torch.Generator().manual_seed(4)
    old = -torch.rand(3, 5, dtype=D, generator=g) * 3 - 0.1
    lp = (old + 0.4 * torch.randn(3, 5, dtype=D, generator=g)).clamp(max=-0.05).requires_grad_()
    adv = torch.randn(3, 5, dtype=D, generator=g)
    mask = (torch.rand(3, 5, generator=g) > 0.2).to(D)
    h_old = torch.rand(3, 5, dtype=D, generator=g) + 0.5
    h = h_old * (1 + 0.1 * torch.randn(3, 5, dtype=D, generator=g))
    delta, clip_c = (0.15 if mode == "dppo_tv" else 0.05), 1.3

    def dppo(x, bounds):
        return policy_loss(x, old, adv, mask, entropy=h, old_entropy=h_old, mode=mode, agg=agg, clip_low=delta,
                           clip_high=delta, clip_c=clip_c, erc_bounds=bounds)

    def surrogate(x, bounds):  # value -A r aggregated, gradient DPPO's
        pg = policy_loss(x, old, adv, mask, entropy=h, old_entropy=h_old, mode="dapo", agg=agg, clip_low=1 - 1e-12,
                         clip_high=1e12, clip_c=math.inf, erc_bounds=None)[0]
        loss = dppo(x, bounds)[0]
        return loss + (pg - loss).detach()

    p, p_old = torch.exp(lp.detach()), torch.exp(old)
    if mode == "dppo_tv":
        trusted = torch.where(adv > 0, p - p_old <= delta, p - p_old >= -delta)
    else:
        kl = p_old * (old - lp.detach()) + (1 - p_old) * torch.log((1 - p_old) / (1 - p))
        trusted = torch.where(adv > 0, (kl <= delta) | (p <= p_old), (kl <= delta) | (p >= p_old))
    free = mask.bool() & trusted & (p / p_old < clip_c)
    untrusted = mask.bool() & ~trusted
    assert free.sum() >= 5 and untrusted.sum() >= 1 and (mask.bool() & (p / p_old > clip_c)).sum() >= 1
    (grad,) = torch.autograd.grad(dppo(lp, None)[0], lp)
    assert torch.count_nonzero(grad[untrusted]) == 0  # cut by design
    base = lp.detach().clone()
    assert torch.autograd.gradcheck(lambda y: surrogate(torch.where(free, y, base), None), (lp,), eps=1e-7, atol=1e-8)
    keep = free & erc_mask(h, h_old, mask, (0.95, 1.05))
    assert 0 < keep.sum() < free.sum()
    assert torch.autograd.gradcheck(lambda y: surrogate(torch.where(keep, y, base), (0.95, 1.05)), (lp,), eps=1e-7,
                                    atol=1e-8)


def test_gradcheck_entropy_ratio_penalty():
    g = torch.Generator().manual_seed(1)
    h_old = torch.rand(2, 6, dtype=D, generator=g) + 0.5
    h = (h_old * 1.4).requires_grad_()   # batch ratio 1.4: outside (0.9, 1.1), the penalty is active
    mask = torch.ones(2, 6, dtype=D)
    assert torch.autograd.gradcheck(lambda x: entropy_ratio_penalty(x, h_old, mask), (h,))


# ------------------------------------------------------------------ properties
@st.composite
def batches(draw):
    b, t = draw(st.integers(1, 4)), draw(st.integers(1, 6))
    seed = draw(st.integers(0, 2**31 - 1))
    g = torch.Generator().manual_seed(seed)
    old = torch.randn(b, t, dtype=D, generator=g)
    lp = old + draw(st.floats(0.0, 1.0)) * torch.randn(b, t, dtype=D, generator=g)
    adv = torch.randn(b, t, dtype=D, generator=g)
    mask = (torch.rand(b, t, generator=g) > 0.3).to(D)
    h_old = torch.rand(b, t, dtype=D, generator=g) * 3
    h = h_old * torch.exp(0.1 * torch.randn(b, t, dtype=D, generator=g))
    mode = draw(st.sampled_from(MODES))
    agg = draw(st.sampled_from(AGG_MODES))
    low = draw(st.floats(0.0, 0.99))
    high = draw(st.floats(1.01, 3.0))
    return dict(lp=lp, old=old, adv=adv, mask=mask, h=h, h_old=h_old, mode=mode, agg=agg, bounds=(low, high))


def options(mode: str) -> dict:
    """Mode options with large covariance fractions so the cov modes act, and a fresh fixed-seed generator."""
    if mode == "clip_cov":
        return dict(clip_cov_ratio=0.3, clip_cov_lb=-1.0, clip_cov_ub=5.0, generator=torch.Generator().manual_seed(0))
    if mode == "kl_cov":
        return dict(kl_cov_ratio=0.3, ppo_kl_coef=1.0)
    return {}


def loss_and_token_grads(c, bounds):
    lp = c["lp"].clone().requires_grad_()
    loss, stats = policy_loss(lp, c["old"], c["adv"], c["mask"], entropy=c["h"], old_entropy=c["h_old"],
                              mode=c["mode"], agg=c["agg"], erc_bounds=bounds, mode_options=options(c["mode"]))
    loss.backward()
    return loss.detach(), lp.grad, stats


@settings(max_examples=60, deadline=None)
@given(batches())
def test_erc_changes_only_gradients_exactly_on_gated_tokens(c):
    base_loss, base_grad, _ = loss_and_token_grads(c, None)
    erc_loss, erc_grad, stats = loss_and_token_grads(c, c["bounds"])
    keep = erc_mask(c["h"], c["h_old"], c["mask"], c["bounds"])
    assert torch.equal(erc_loss, base_loss)                       # the value is untouched
    assert torch.count_nonzero(erc_grad[~keep]) == 0              # gated tokens: exactly zero gradient
    assert torch.equal(erc_grad[keep], base_grad[keep])           # kept tokens: exactly the base gradient
    n = c["mask"].sum().item()
    expected = ((~keep) & c["mask"].bool()).sum().item() / n if n else 0.0
    assert stats["erc_clipfrac"] == pytest.approx(expected)


@settings(max_examples=30, deadline=None)
@given(batches())
def test_unbounded_band_equals_no_gate(c):
    a = loss_and_token_grads(c, None)
    b = loss_and_token_grads(c, (0.0, math.inf))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


@settings(max_examples=30, deadline=None)
@given(batches())
def test_on_policy_nothing_is_gated(c):
    c = dict(c, lp=c["old"].clone(), h=c["h_old"].clone())
    base_loss, base_grad, _ = loss_and_token_grads(c, None)
    loss, grad, stats = loss_and_token_grads(c, c["bounds"])
    assert stats["erc_clipfrac"] == 0.0 and stats["ppo_clipfrac"] == 0.0
    assert torch.equal(loss, base_loss) and torch.equal(grad, base_grad)


# ------------------------------------------------------------------ Clip-Cov / KL-Cov (hand-worked)
# one sequence, 4 response tokens: A = [2, 0, 0, -2], logp = [-1, -2, -3, -2] -> means 0 and -2,
# covariances (A - 0)(logp + 2) = [2, 0, 0, 0]: token 0 is the only one in (1, 5) and the largest.
COV_ADV = torch.tensor([[2.0, 0.0, 0.0, -2.0]], dtype=D)
COV_LOGP = torch.tensor([[-1.0, -2.0, -3.0, -2.0]], dtype=D)


def test_clip_cov_reference():
    lp = COV_LOGP.clone().requires_grad_()
    loss, s = policy_loss(lp, COV_LOGP, COV_ADV, torch.ones(1, 4), erc_bounds=None, mode="clip_cov",
                          mode_options=dict(clip_cov_ratio=1e-4, clip_cov_lb=1.0, clip_cov_ub=5.0))
    loss.backward()
    assert loss.item() == pytest.approx((0 + 0 + 0 + 2) / 4)   # token 0's loss is multiplied by 0
    assert lp.grad.tolist() == [[0.0, 0.0, 0.0, 0.5]]
    assert s["cov_clipfrac"] == 0.25 and s["ppo_clipfrac"] == 0.0


def test_clip_cov_spares_ratio_clipped_tokens_and_is_seeded():
    old = COV_LOGP.clone()
    old[0, 0] -= 1.0                                            # token 0: ratio e > 1.28 with A > 0 -> clipped
    opts = dict(clip_cov_ratio=1e-4, clip_cov_lb=1.0, clip_cov_ub=5.0)
    _, s = policy_loss(COV_LOGP, old, COV_ADV, torch.ones(1, 4), erc_bounds=None, mode="clip_cov", mode_options=opts)
    assert s["cov_clipfrac"] == 0.0 and s["ppo_clipfrac"] == 0.25  # its only candidate was already clipped
    g = torch.Generator().manual_seed(0)
    lp = torch.randn(8, 16, dtype=D, generator=g)
    adv = torch.randn(8, 16, dtype=D, generator=g)
    opts = dict(clip_cov_ratio=0.1, clip_cov_lb=-10.0, clip_cov_ub=10.0)
    runs = [policy_loss(lp, lp, adv, torch.ones(8, 16), erc_bounds=None, mode="clip_cov",
                        mode_options=dict(opts, generator=torch.Generator().manual_seed(s)))[0] for s in (1, 1, 2)]
    assert runs[0] == runs[1] and runs[0] != runs[2]


def test_kl_cov_reference():
    lp = COV_LOGP.clone().requires_grad_()
    old = COV_LOGP.clone()
    old[0, 0] -= 0.1                                            # token 0: log-ratio 0.1
    loss, s = policy_loss(lp, old, COV_ADV, torch.ones(1, 4), erc_bounds=None, mode="kl_cov",
                          mode_options=dict(kl_cov_ratio=1e-4, ppo_kl_coef=1.0))
    loss.backward()
    r = math.exp(0.1)
    assert loss.item() == pytest.approx((-2 * r + 0.1 + 0 + 0 + 2) / 4)  # no ratio clip anywhere
    assert lp.grad[0, 0].item() == pytest.approx((-2 * r + 1.0) / 4)      # d/dlogp of -A r + |log r|
    assert lp.grad[0, 3].item() == pytest.approx(0.5)
    assert s["cov_klfrac"] == 0.25


def test_unknown_mode_options():
    with pytest.raises(ValueError, match="mode_options"):
        policy_loss(*args(), erc_bounds=None, mode="dapo", mode_options={"clip_cov_ratio": 0.1})
    with pytest.raises(ValueError, match="clip_cov_ratio"):
        policy_loss(*args(), erc_bounds=None, mode="clip_cov", mode_options={"clip_cov_ratio": 0.0})
    with pytest.raises(ValueError, match="ppo_kl_coef"):
        policy_loss(*args(), erc_bounds=None, mode="kl_cov", mode_options={"ppo_kl_coef": -1.0})


@settings(max_examples=30, deadline=None)
@given(batches())
def test_sequence_advantages_broadcast(c):
    adv_seq = c["adv"][:, 0]
    a = policy_loss(c["lp"], c["old"], adv_seq, c["mask"], erc_bounds=None, mode=c["mode"], agg=c["agg"],
                    mode_options=options(c["mode"]))[0]
    b = policy_loss(c["lp"], c["old"], adv_seq[:, None].expand_as(c["lp"]), c["mask"], erc_bounds=None,
                    mode=c["mode"], agg=c["agg"], mode_options=options(c["mode"]))[0]
    assert torch.equal(a, b)


# ------------------------------------------------------------------ the quoted penalty form (not ERC)
def test_penalty_is_zero_inside_band_and_quadratic_outside():
    h_old = torch.ones(2, 4, dtype=D)
    mask = torch.ones(2, 4, dtype=D)
    assert entropy_ratio_penalty(h_old * 1.05, h_old, mask).item() == 0.0
    # batch-mean ratio 1.3 -> 0.1 * (1.3 - 1.1)^2
    assert entropy_ratio_penalty(h_old * 1.3, h_old, mask).item() == pytest.approx(0.1 * 0.2**2)
    # per-token ratios far out of band but batch mean in band: the penalty does not bind (unlike ERC)
    h = torch.tensor([[0.5, 1.5, 0.5, 1.5]] * 2, dtype=D)
    assert entropy_ratio_penalty(h, h_old, mask).item() == 0.0
    assert erc_mask(h, h_old, mask, (0.9, 1.1)).sum() == 0


def test_kl_penalty_kinds():
    lp = torch.tensor([[-1.0, -2.0]], dtype=D)
    ref = torch.tensor([[-1.5, -2.0]], dtype=D)
    assert kl_penalty(lp, ref, "kl").tolist() == [[0.5, 0.0]]
    assert kl_penalty(lp, ref, "mse").tolist() == [[0.125, 0.0]]
    k3 = kl_penalty(lp, ref, "low_var_kl")
    assert k3[0, 0].item() == pytest.approx(math.exp(-0.5) + 0.5 - 1) and k3[0, 1].item() == 0.0


# ------------------------------------------------------------------ validation: clear errors naming the argument
def args(b=2, t=3):
    x = torch.zeros(b, t)
    return x, x.clone(), torch.ones(b, t), torch.ones(b, t)


@pytest.mark.parametrize("bounds", [(0.95, 1.0), (1.0, 1.05), (-0.1, 1.1), (1.1, 0.9), (0.9,), "x", (0.9, math.nan)])
def test_bad_erc_bounds(bounds):
    with pytest.raises(ValueError, match="erc_bounds"):
        policy_loss(*args(), entropy=torch.ones(2, 3), old_entropy=torch.ones(2, 3), erc_bounds=bounds)


@pytest.mark.parametrize("kw, name", [
    (dict(clip_low=-0.1), "clip_low"), (dict(clip_low=1.0), "clip_low"), (dict(clip_high=-0.01), "clip_high"),
    (dict(clip_high=math.nan), "clip_high"), (dict(clip_c=1.0), "clip_c"), (dict(mode="ppo2"), "mode"),
    (dict(agg="mean"), "agg"),
])
def test_bad_clip_and_mode(kw, name):
    with pytest.raises(ValueError, match=name):
        policy_loss(*args(), erc_bounds=None, **kw)


def test_missing_entropy_with_erc():
    with pytest.raises(ValueError, match="entropy"):
        policy_loss(*args())


@pytest.mark.parametrize("which", ["old_log_prob", "advantages", "response_mask", "entropy"])
def test_shape_mismatch(which):
    a = dict(zip(["log_prob", "old_log_prob", "advantages", "response_mask"], args()))
    kw = dict(entropy=torch.ones(2, 3), old_entropy=torch.ones(2, 3))
    if which == "entropy":
        kw["entropy"] = torch.ones(3, 2)
    else:
        a[which] = torch.zeros(2, 4)
    with pytest.raises(ValueError, match=which):
        policy_loss(a["log_prob"], a["old_log_prob"], a["advantages"], a["response_mask"], **kw)


@pytest.mark.parametrize("which", ["log_prob", "old_log_prob", "advantages", "old_entropy"])
@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_non_finite_inputs(which, bad):
    a = dict(zip(["log_prob", "old_log_prob", "advantages", "response_mask"], args()))
    kw = dict(entropy=torch.ones(2, 3), old_entropy=torch.ones(2, 3))
    target = kw if which == "old_entropy" else a
    target[which] = target[which].clone()
    target[which][0, 1] = bad
    with pytest.raises(ValueError, match=f"{which} contains NaN or inf"):
        policy_loss(a["log_prob"], a["old_log_prob"], a["advantages"], a["response_mask"], **kw)


def test_bad_penalty_and_kl_args():
    h = torch.ones(1, 2)
    with pytest.raises(ValueError, match="coef"):
        entropy_ratio_penalty(h, h, h, coef=-1.0)
    with pytest.raises(ValueError, match="bounds"):
        entropy_ratio_penalty(h, h, h, bounds=(1.1, 0.9))
    with pytest.raises(ValueError, match="kind"):
        kl_penalty(h, h, "k4")


# ----------------------------------------------------------------------------------------------- bad inputs (issue 16)
def _inputs(dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    logp = (-torch.rand(4, 6, generator=g, dtype=torch.float64) * 3).to(dtype)
    old = (logp.double() + torch.randn(4, 6, generator=g, dtype=torch.float64) * 0.3).clamp(max=0).to(dtype)
    old[0, 0] = -40.0  # log-ratio clamped at +20: exp(20) overflows float16
    adv = torch.randn(4, generator=g, dtype=torch.float64).to(dtype)
    h = (torch.rand(4, 6, generator=g, dtype=torch.float64) + 0.1).to(dtype)
    h_old = (h.double() * (1 + 0.1 * torch.randn(4, 6, generator=g, dtype=torch.float64))).clamp(min=0).to(dtype)
    mask = torch.ones(4, 6, dtype=torch.bool)
    return logp, old, adv, mask, h, h_old


@pytest.mark.parametrize("mode", ["dapo", "gppo"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_inputs_are_computed_in_float32(mode, dtype):
    """fp16 used to give a silent NaN loss (exp(20) overflows); now the loss equals the float32 one on the same
    (rounded) values, and the gradient reaches the half-precision log-probs."""
    logp, old, adv, mask, h, h_old = _inputs(dtype)
    logp.requires_grad_(True)
    kw = dict(mode=mode, clip_high=0.28 if mode == "dapo" else 0.2)
    loss, stats = policy_loss(logp, old, adv, mask, entropy=h, old_entropy=h_old, **kw)
    ref, ref_stats = policy_loss(logp.detach().float(), old.float(), adv.float(), mask, entropy=h.float(),
                                 old_entropy=h_old.float(), **kw)
    assert loss.dtype == torch.float32 and torch.isfinite(loss) and loss.item() == ref.item()
    assert stats == ref_stats
    loss.backward()
    assert logp.grad.dtype == dtype and bool(torch.isfinite(logp.grad.float()).all())


def test_integer_log_probs_are_rejected():
    logp, old, adv, mask, h, h_old = _inputs()
    with pytest.raises(TypeError, match="log_prob must be a floating-point tensor"):
        policy_loss(logp.round().long(), old, adv, mask, erc_bounds=None)
    with pytest.raises(TypeError, match="old_log_prob must be a floating-point tensor"):
        policy_loss(logp, old.round().int(), adv, mask, erc_bounds=None)


def test_negative_entropies_are_rejected():
    logp, old, adv, mask, h, h_old = _inputs()
    with pytest.raises(ValueError, match="old_entropy must be >= 0"):
        policy_loss(logp, old, adv, mask, entropy=h, old_entropy=h_old - 2.0)
    with pytest.raises(ValueError, match="entropy must be >= 0"):
        entropy_ratio_penalty(-h, h_old, mask)
    # a kernel's rounding just below 0 (lse - <p, z>) is not an error, and gives a finite ratio mean
    h_old[0, 0] = -1e-7
    _, stats = policy_loss(logp, old, adv, mask, entropy=h, old_entropy=h_old)
    assert math.isfinite(stats["entropy_ratio_mean"])


@pytest.mark.parametrize("mode, key", [("kl_cov", "kl_cov_ratio"), ("clip_cov", "clip_cov_ratio")])
def test_cov_ratio_above_one_is_a_clear_error(mode, key):
    logp, old, adv, mask, h, h_old = _inputs()
    with pytest.raises(ValueError, match=rf"{key} must be in \(0, 1\]"):
        policy_loss(logp, old, adv, mask, erc_bounds=None, mode=mode, mode_options={key: 2.0})
