"""erc_dapo / erc_gppo in verl's policy-loss registry (erc_core.integrations.verl), called the way verl's actor
calls a policy loss (verl 0.9.1, ``verl.workers.utils.losses.ppo_loss`` with the ERC patch)."""

import importlib.util
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


def metric_value(metric) -> float:
    """The one value of a verl ``Metric`` (ppo_loss wraps each policy-loss metric in one)."""
    (value,) = metric.values
    return float(value)


def patched_losses(tmp_path):
    """verl 0.9.1's ``verl/workers/utils/losses.py`` with the ERC patch applied (in a copy), imported as a module."""
    if shutil.which("patch") is None:
        pytest.skip("the `patch` program is not installed")
    if verl.__version__ != "0.9.1":
        pytest.skip(f"the patch is made for verl 0.9.1, installed: {verl.__version__}")
    site = Path(verl.__file__).resolve().parents[1]
    for rel in ("verl/workers/utils/losses.py", "verl/workers/config/actor.py", "verl/trainer/ppo/ray_trainer.py"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(site / rel, tmp_path / rel)
    out = subprocess.run(["patch", "-p1", "-i", str(ROOT / erc_verl.PATCH)], cwd=tmp_path, capture_output=True,
                         text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    spec = importlib.util.spec_from_file_location("patched_verl_losses", tmp_path / "verl/workers/utils/losses.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def tensordict_batch(seed=0, b=4, prompt=3, resp=5):
    """A padded verl actor batch as the engine hands it to ppo_loss: prompts/responses/attention_mask, the
    old pass's ``old_log_probs`` and ``old_entropys`` (kept by the patched trainer), advantages, and the model
    output for the packed tokens (``log_probs`` / ``entropy`` of every non-padding token, (total_nnz,)).
    Returns the batch, the model output and the response-aligned (B, R) tensors for the reference."""
    from tensordict import TensorDict
    from verl.utils import tensordict_utils as tu

    g = torch.Generator().manual_seed(seed)
    lens = torch.tensor([5, 2, 4, 1])[:b]
    resp_mask = (torch.arange(resp)[None] < lens[:, None])
    attn = torch.cat([torch.ones(b, prompt, dtype=torch.long), resp_mask.long()], 1)
    nnz = int(attn.sum())
    logp_flat = (-torch.rand(nnz, generator=g, dtype=torch.float64) * 3).requires_grad_()
    ent_flat = torch.rand(nnz, generator=g, dtype=torch.float64) * 2 + 0.1
    # response-aligned views (verl shifts by one: the response token t is predicted at position P + t - 1)
    offsets = attn.sum(1).cumsum(0)
    idx = torch.zeros(b, resp, dtype=torch.long)
    for i in range(b):
        start = int(offsets[i]) - int(lens[i]) - 1
        idx[i, :int(lens[i])] = torch.arange(start, start + int(lens[i]))
    logp = torch.where(resp_mask, logp_flat[idx], torch.zeros((), dtype=torch.float64))
    ent = torch.where(resp_mask, ent_flat[idx], torch.zeros((), dtype=torch.float64)).detach()
    old_logp = (logp.detach() + 0.3 * torch.randn(b, resp, generator=g, dtype=torch.float64)) * resp_mask
    old_ent = (ent * (1 + 0.2 * torch.randn(b, resp, generator=g, dtype=torch.float64))).abs() * resp_mask
    adv = torch.randn(b, 1, generator=g, dtype=torch.float64).expand(b, resp) * resp_mask
    td = TensorDict(dict(prompts=torch.ones(b, prompt, dtype=torch.long),
                         responses=torch.ones(b, resp, dtype=torch.long),
                         attention_mask=attn, response_mask=resp_mask.long(), old_log_probs=old_logp,
                         old_entropys=old_ent, advantages=adv), batch_size=[b])
    tu.assign_non_tensor(td, dp_size=1, batch_num_tokens=int(resp_mask.sum()), global_batch_size=b)
    model_output = {"log_probs": logp_flat, "entropy": ent_flat}
    return td, model_output, dict(logp=logp, ent=ent, old_logp=old_logp, old_ent=old_ent, adv=adv, mask=resp_mask)


@pytest.mark.parametrize("loss_mode, clip_high", [("erc_dapo", 0.28), ("erc_gppo", 0.2)])
def test_patched_ppo_loss_on_a_tensordict_batch(tmp_path, loss_mode, clip_high):
    """verl's own ppo_loss, patched, on a real TensorDict batch: it must pick the kept old entropies out of the
    batch and the current ones out of the model output, align both with the responses, and hand them to the ERC
    loss; the result equals erc_core's policy_loss on tensors aligned by hand, the gate acts (some tokens gated),
    and without old entropies in the batch the loss points to the patch."""
    from verl.workers.config import PolicyLossConfig

    losses = patched_losses(tmp_path)
    td, model_output, ref = tensordict_batch()
    config = actor_config(clip_ratio_high=clip_high, erc_low=0.9, erc_high=1.1, calculate_entropy=True,
                          entropy_coeff=0.0, policy_loss=PolicyLossConfig(loss_mode=loss_mode))
    loss, metrics = losses.ppo_loss(config, model_output, td)
    (grad,) = torch.autograd.grad(loss, model_output["log_probs"])
    expected, stats = policy_loss(ref["logp"], ref["old_logp"], ref["adv"], ref["mask"], entropy=ref["ent"],
                                  old_entropy=ref["old_ent"], mode=loss_mode[4:], clip_low=0.2, clip_high=clip_high,
                                  clip_c=10.0, erc_bounds=(0.9, 1.1), agg="token-mean")
    (expected_grad,) = torch.autograd.grad(expected, model_output["log_probs"])
    torch.testing.assert_close(loss, expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(grad, expected_grad, rtol=1e-12, atol=1e-12)
    gated = metric_value(metrics["actor/erc_clipfrac"])
    assert gated == pytest.approx(stats["erc_clipfrac"]) and 0.0 < gated < 1.0

    td_same, out_same, ref_same = tensordict_batch()
    td_same["old_entropys"] = ref_same["ent"].clone()        # H_old = H: nothing may be gated
    _, m_same = losses.ppo_loss(config, out_same, td_same)
    assert metric_value(m_same["actor/erc_clipfrac"]) == 0.0

    td_old, out_old, _ = tensordict_batch()
    del td_old["old_entropys"]                                # an unpatched trainer drops them
    with pytest.raises(ValueError, match="erc-old-entropy.patch"):
        losses.ppo_loss(config, out_old, td_old)


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
