"""erc_dapo / erc_gppo in verl's policy-loss registry (erc_core.integrations.verl), called the way verl's actor
calls a policy loss (verl 0.9.1, ``verl.workers.utils.losses.ppo_loss`` with the ERC patch)."""

import math
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

pytest.importorskip("verl.trainer.ppo.core_algos", reason="verl is not importable: the [verl] extra plus "
                    "`pip install --no-deps verl==0.9.1` (scripts/env.sh does both) bring it")

import torch  # noqa: E402
import verl  # noqa: E402
from verl.trainer.ppo.core_algos import get_policy_loss_fn  # noqa: E402
from verl.workers.config import ActorConfig  # noqa: E402

from erc_core.integrations import verl as erc_verl  # noqa: E402
from erc_core.losses import policy_loss  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
AGG_MODES = ["token-mean", "token-sum", "seq-mean-token-sum", "seq-mean-token-mean", "seq-mean-token-sum-norm"]


@dataclass
class PatchedActorConfig(ActorConfig):
    """verl's ActorConfig with the two fields that the ERC patch adds (the installed verl is not patched)."""

    erc_low: float = 0.95
    erc_high: float = 1.05


def actor_config(**kw):
    base = dict(strategy="fsdp", rollout_n=4, ppo_mini_batch_size=4, ppo_micro_batch_size_per_gpu=2,
                clip_ratio_low=0.2, clip_ratio_high=0.28, clip_ratio_c=10.0)
    base.update(kw)
    return PatchedActorConfig(**base)


def batch(seed=0, b=6, t=9):
    g = torch.Generator().manual_seed(seed)
    old_logp = -torch.rand(b, t, generator=g, dtype=torch.float64) * 3
    logp = (old_logp + 0.3 * torch.randn(b, t, generator=g, dtype=torch.float64)).requires_grad_()
    old_ent = torch.rand(b, t, generator=g, dtype=torch.float64) * 2 + 0.1
    ent = old_ent * (1 + 0.2 * torch.randn(b, t, generator=g, dtype=torch.float64))
    adv = torch.randn(b, 1, generator=g, dtype=torch.float64).expand(b, t).contiguous()
    mask = torch.rand(b, t, generator=g) < 0.8
    mask[0] = False  # one fully padded row
    return old_logp, logp, ent.abs(), old_ent, adv, mask


def call_like_verl(name, config, old_logp, logp, ent, old_ent, adv, mask, agg="token-mean"):
    """The keyword call of verl's ppo_loss (verl/workers/utils/losses.py), with the patch's entropy kwargs."""
    fn = get_policy_loss_fn(name)
    return fn(old_log_prob=old_logp, log_prob=logp, advantages=adv, response_mask=mask, loss_agg_mode=agg,
              config=config, rollout_is_weights=None, entropy=ent, old_entropy=old_ent)


def test_registered_under_verl_names():
    assert get_policy_loss_fn("erc_dapo") is erc_verl.compute_policy_loss_erc_dapo
    assert get_policy_loss_fn("erc_gppo") is erc_verl.compute_policy_loss_erc_gppo
    erc_verl.register()  # idempotent
    assert get_policy_loss_fn("erc_dapo") is erc_verl.compute_policy_loss_erc_dapo


@pytest.mark.parametrize("mode, clip_high", [("dapo", 0.28), ("gppo", 0.2)])
def test_same_loss_and_gradients_as_erc_core(mode, clip_high):
    old_logp, logp, ent, old_ent, adv, mask = batch()
    config = actor_config(clip_ratio_high=clip_high, erc_low=0.9, erc_high=1.1)
    loss, metrics = call_like_verl(f"erc_{mode}", config, old_logp, logp, ent, old_ent, adv, mask)
    (grad,) = torch.autograd.grad(loss, logp)
    ref, stats = policy_loss(logp, old_logp, adv, mask, entropy=ent, old_entropy=old_ent, mode=mode, clip_low=0.2,
                             clip_high=clip_high, clip_c=10.0, erc_bounds=(0.9, 1.1), agg="token-mean")
    (ref_grad,) = torch.autograd.grad(ref, logp)
    assert torch.equal(loss, ref) and torch.equal(grad, ref_grad)
    assert 0.0 < metrics["actor/erc_clipfrac"] < 1.0
    assert metrics["actor/erc_clipfrac"] == stats["erc_clipfrac"]
    assert metrics["actor/pg_clipfrac"] == stats["ppo_clipfrac"]
    assert (grad[~mask] == 0).all()


@pytest.mark.parametrize("agg", AGG_MODES)
@pytest.mark.parametrize("global_info", [{}, {"dp_size": 2, "batch_num_tokens": 70, "global_batch_size": 12,
                                              "loss_scale_factor": 16}])
def test_unbounded_band_equals_verl_vanilla(agg, global_info):
    """With the band (0, inf) erc_dapo is verl's own PPO loss: same config keys, same aggregation over the global
    batch (dp_size, batch_num_tokens, global_batch_size, loss_scale_factor), same metrics."""
    old_logp, logp, ent, old_ent, adv, mask = batch(seed=1)
    config = actor_config(erc_low=0.0, erc_high=math.inf)
    config.global_batch_info.update(global_info)
    loss, metrics = call_like_verl("erc_dapo", config, old_logp, logp, ent, old_ent, adv, mask, agg)
    (grad,) = torch.autograd.grad(loss, logp)
    ref, ref_metrics = get_policy_loss_fn("vanilla")(old_log_prob=old_logp, log_prob=logp, advantages=adv,
                                                     response_mask=mask, loss_agg_mode=agg, config=config)
    (ref_grad,) = torch.autograd.grad(ref, logp)
    torch.testing.assert_close(loss, ref, rtol=1e-7, atol=1e-12)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-7, atol=1e-12)
    for key in ("actor/pg_clipfrac", "actor/pg_clipfrac_lower", "actor/ppo_kl"):
        assert metrics[key] == pytest.approx(ref_metrics[key], rel=1e-6, abs=1e-9), key
    assert metrics["actor/erc_clipfrac"] == 0.0


def test_official_fork_key_names():
    from omegaconf import OmegaConf

    old_logp, logp, ent, old_ent, adv, mask = batch(seed=2)
    fork = OmegaConf.create({"clip_ratio": 0.2, "clip_ratio_low": 0.2, "clip_ratio_high": 0.2, "clip_ratio_c": 10.0,
                             "entropy_mask_low": 0.8, "entropy_mask_high": 1.2, "global_batch_info": {}})
    assert erc_verl.erc_bounds_from_config(fork) == (0.8, 1.2)
    loss, _ = call_like_verl("erc_gppo", fork, old_logp, logp, ent, old_ent, adv, mask)
    ref, _ = policy_loss(logp, old_logp, adv, mask, entropy=ent, old_entropy=old_ent, mode="gppo", clip_low=0.2,
                         clip_high=0.2, clip_c=10.0, erc_bounds=(0.8, 1.2))
    assert torch.equal(loss, ref)


def test_unpatched_actor_gets_a_pointer_to_the_patch():
    old_logp, logp, ent, old_ent, adv, mask = batch()
    with pytest.raises(ValueError, match="erc-old-entropy.patch"):
        get_policy_loss_fn("erc_dapo")(old_log_prob=old_logp, log_prob=logp, advantages=adv, response_mask=mask,
                                       loss_agg_mode="token-mean", config=actor_config())


@pytest.mark.skipif(shutil.which("patch") is None, reason="the `patch` program is not installed")
def test_trainer_patch_applies_to_installed_verl():
    if verl.__version__ != "0.9.1":
        pytest.skip(f"the patch is made for verl 0.9.1, installed: {verl.__version__}")
    site = Path(verl.__file__).resolve().parents[1]
    patch = ROOT / erc_verl.PATCH
    out = subprocess.run(["patch", "-p1", "--dry-run", "-i", str(patch)], cwd=site, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
