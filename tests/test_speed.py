"""The trainer's hot-path shortcuts compute the same numbers as the plain path: policy_loss / logprobs_and_entropy
without value checks and with tensor stats, the old pass's forward reused by the first update, batched decoding."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch

import erc_core.rl.train as T
from erc_core.rl.config import load_config
from erc_core.entropy import entropy_from_logits, logprobs_and_entropy
from erc_core.losses import POLICY_LOSSES, policy_loss, stats_to_floats

FAST = dict(arith_max_operand=9, eval_size=20, tiny_hidden=32, tiny_layers=1, tiny_heads=2, warmstart_steps=0,
            prompts_per_step=4, group_size=4, max_new_tokens=4, mini_batch_size=8, ppo_epochs=2, progress=False,
            erc=True)


def loss_inputs(seed: int, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    b, t = 5, 7
    lp = (-torch.rand(b, t, generator=g, dtype=dtype) * 3).requires_grad_(True)
    old = lp.detach() + 0.3 * torch.randn(b, t, generator=g, dtype=dtype)
    adv = torch.randn(b, generator=g, dtype=dtype)
    mask = torch.rand(b, t, generator=g) < 0.8
    h = (torch.rand(b, t, generator=g, dtype=dtype) * 2).requires_grad_(True)
    h_old = h.detach() * (1 + 0.1 * torch.randn(b, t, generator=g, dtype=dtype))
    return lp, old, adv, mask, h, h_old


@pytest.mark.parametrize("mode", sorted(POLICY_LOSSES))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_policy_loss_fast_path_is_the_same(mode, dtype):
    results = []
    for fast in (False, True):
        lp, old, adv, mask, h, h_old = loss_inputs(0, dtype)
        torch.manual_seed(1)  # clip_cov draws at random
        loss, stats = policy_loss(lp, old, adv, mask, entropy=h, old_entropy=h_old, mode=mode,
                                  validate=not fast, stats_as_tensors=fast)
        loss.backward()
        if fast:
            assert all(isinstance(v, torch.Tensor) and v.ndim == 0 and not v.requires_grad for v in stats.values())
            stats = stats_to_floats(stats)
        assert all(isinstance(v, float) for v in stats.values())
        results.append((loss.detach(), lp.grad, stats))
    (l0, g0, s0), (l1, g1, s1) = results
    assert torch.equal(l0, l1) and torch.equal(g0, g1)
    assert s0 == s1 and s0["erc_clipfrac"] > 0  # the gate did something in this batch


def test_policy_loss_without_value_checks():
    lp, old, adv, mask, h, h_old = loss_inputs(2)
    bad = old.clone()
    bad[0, 0] = float("nan")
    with pytest.raises(ValueError, match="old_log_prob contains NaN"):
        policy_loss(lp, bad, adv, mask, entropy=h, old_entropy=h_old)
    loss, _ = policy_loss(lp, bad, adv, torch.ones_like(mask), entropy=h, old_entropy=h_old, validate=False)
    assert math.isnan(loss.item())  # no check, and the NaN reaches the loss a trainer checks
    with pytest.raises(ValueError, match="shape"):  # checks that need no sync stay
        policy_loss(lp, old[:, :3], adv, mask, entropy=h, old_entropy=h_old, validate=False)


def test_stats_to_floats_is_exact_and_keeps_order():
    x = torch.tensor(0.1, dtype=torch.float32)
    out = stats_to_floats({"b": x, "a": 2, "c": torch.tensor(1 / 3, dtype=torch.float64)})
    assert list(out) == ["b", "a", "c"] and out == {"b": float(x), "a": 2.0, "c": 1 / 3}
    assert stats_to_floats({}) == {}


@pytest.mark.parametrize("fused", [False, None])
def test_logprobs_and_entropy_without_value_checks_is_the_same(fused):
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(6, 5, 4100 if fused is None else 50, generator=g) * 3
    logits[0, 0, :7] = -math.inf  # masked vocabulary entries are valid input
    tokens = torch.randint(7, logits.shape[-1], logits.shape[:-1], generator=g)
    out = []
    for validate in (True, False):
        x = logits.clone().requires_grad_(True)
        lp, h = logprobs_and_entropy(x, tokens, temperature=0.7, fused=fused, validate=validate)
        (lp.sum() + 0.5 * h.sum()).backward()
        out.append((lp.detach(), h.detach(), x.grad))
    assert all(torch.equal(a, b) for a, b in zip(*out))
    assert torch.equal(entropy_from_logits(logits, validate=False), entropy_from_logits(logits))


def test_logprobs_and_entropy_nan_raises_only_when_validating():
    logits = torch.randn(3, 20)
    logits[1, 4] = float("nan")
    tokens = torch.zeros(3, dtype=torch.long)
    with pytest.raises(ValueError, match="NaN"):
        logprobs_and_entropy(logits, tokens, fused=False)
    lp, h = logprobs_and_entropy(logits, tokens, fused=False, validate=False)
    assert torch.isnan(h[1]) and torch.isfinite(h[[0, 2]]).all()


# ------------------------------------------------------------------------------------------ the trainer's step
def step_setup(**over):
    cfg = load_config(dict(FAST, **over))
    T.seed_everything(cfg.seed)
    task = T.make_task_from(cfg)
    model, tok = T.build_model(cfg, task)
    from erc_core.rl.models import warm_start
    warm_start(model, tok, task, steps=30, batch_size=16, seed=0)
    ro = T.rollout(cfg, model, tok, task, np.random.default_rng(0), "plain")
    return cfg, model, tok, ro


def run_update(cfg, model, ro, keep_graph: bool, tamper: bool = False):
    m = copy.deepcopy(model)
    opt, _ = T.make_optimizer(cfg, m)
    ro = copy.copy(ro)
    ro.old_logp = ro.old_entropy = ro.ref_logp = None
    parts = T.partition(cfg, ro.keep)
    T.old_pass(cfg, m, None, ro, parts, keep_graph=keep_graph)
    kept = ro.first_forward
    if tamper:  # the weights change between the old pass and the update: the kept forward must not be used
        with torch.no_grad():
            next(m.parameters()).mul_(1.01)
    stats, last_ent = T.update(cfg, m, opt, ro, parts)
    assert ro.first_forward is None  # used at most once, then dropped
    return kept, stats, last_ent, [p.detach().clone() for p in m.parameters()]


@pytest.mark.parametrize("over", [dict(), dict(micro_batch_size=4), dict(erc=False, agg="seq-mean-token-mean")])
def test_old_pass_forward_reused_by_first_update_gives_the_same_step(over):
    cfg, model, _, ro = step_setup(**over)
    kept, *fast = run_update(cfg, model, ro, keep_graph=True)
    none, *plain = run_update(cfg, model, ro, keep_graph=False)
    assert kept is not None and kept[3].requires_grad and none is None
    assert fast[0] == plain[0] and torch.equal(fast[1], plain[1])
    assert all(torch.equal(a, b) for a, b in zip(fast[2], plain[2]))


def test_kept_forward_is_not_used_after_the_weights_changed():
    cfg, model, _, ro = step_setup()
    *_, tampered = run_update(cfg, model, ro, keep_graph=True, tamper=True)
    m = copy.deepcopy(model)
    opt, _ = T.make_optimizer(cfg, m)
    ro2 = copy.copy(ro)
    ro2.old_logp = ro2.old_entropy = ro2.ref_logp = None
    parts = T.partition(cfg, ro2.keep)
    T.old_pass(cfg, m, None, ro2, parts)
    with torch.no_grad():
        next(m.parameters()).mul_(1.01)
    T.update(cfg, m, opt, ro2, parts)
    assert all(torch.equal(a, b) for a, b in zip(tampered, m.parameters()))


def test_update_raises_on_a_non_finite_loss():
    cfg, model, _, ro = step_setup()
    ro.advantages = ro.advantages.clone()
    ro.advantages[0] = float("nan")
    parts = T.partition(cfg, ro.keep)
    T.old_pass(cfg, model, None, ro, parts, keep_graph=True)
    opt, _ = T.make_optimizer(cfg, model)
    with pytest.raises(FloatingPointError, match="NaN or inf"):
        T.update(cfg, model, opt, ro, parts)


def test_generate_decodes_every_row_as_decode_does():
    cfg, model, tok, _ = step_setup(prompts_per_step=6, group_size=6, max_new_tokens=5, mini_batch_size=6)
    prompts = [f"{a}+{b}=" for a in range(3) for b in range(2) for _ in range(6)]
    gen = T.generate(model, tok, prompts, cfg.max_new_tokens)
    texts = gen.texts
    assert texts == [tok.decode(r[m], skip_special_tokens=True) for r, m in zip(gen.responses, gen.response_mask)]
    ref_ids, ref_mask = T.encode_prompts(tok, prompts)
    assert torch.equal(gen.prompt_ids, ref_ids) and torch.equal(gen.prompt_mask, ref_mask)
    assert len(set(texts)) < len(texts)  # equal responses were decoded once
