"""ERCGRPOTrainer (erc_core.integrations.trl) on a tiny model, an in-memory dataset and a toy reward, on the CPU."""

import math

import pytest

pytest.importorskip("trl", reason="TRL is not installed: the [trl] extra (pip install -e '.[trl]') brings it")
pytest.importorskip("datasets", reason="datasets is not installed: the [trl] extra brings it")

import torch  # noqa: E402
from datasets import Dataset  # noqa: E402
from trl import GRPOConfig, GRPOTrainer  # noqa: E402

from erc_core.integrations.trl import ERCGRPOConfig, ERCGRPOTrainer  # noqa: E402
from erc_core.models import char_tokenizer, tiny_model  # noqa: E402

TOK = char_tokenizer("abcdefgh")
DATA = Dataset.from_dict({"prompt": ["abc", "bad", "cafe", "gh"] * 4})


def count_a(completions, **kwargs):
    """Toy verifiable reward: the fraction of 'a' characters in the completion."""
    return [c.count("a") / max(len(c), 1) for c in completions]


def train(trainer_cls, config_cls, tmp_path, **erc):
    model = tiny_model(TOK, hidden=32, layers=1, heads=2, seed=0)
    # num_iterations=2: every generation batch is used for two updates, the second one off-policy
    args = config_cls(output_dir=str(tmp_path), per_device_train_batch_size=8, num_generations=4,
                      max_completion_length=6, num_iterations=2, max_steps=2, learning_rate=3e-2,
                      loss_type="dapo", epsilon=0.2, epsilon_high=0.28, logging_steps=1, report_to="none",
                      use_cpu=True, seed=0, save_strategy="no", disable_tqdm=True, **erc)
    trainer = trainer_cls(model=model, reward_funcs=count_a, args=args, train_dataset=DATA, processing_class=TOK)
    trainer.train()
    return trainer


@pytest.fixture(scope="module")
def plain(tmp_path_factory):
    return train(GRPOTrainer, GRPOConfig, tmp_path_factory.mktemp("plain"))


def test_erc_clipfrac_logged_and_nonzero_off_policy(tmp_path, plain):
    trainer = train(ERCGRPOTrainer, ERCGRPOConfig, tmp_path, erc_low=0.99, erc_high=1.01)
    logs = [h for h in trainer.state.log_history if "loss" in h]
    assert len(logs) == 2
    for h in logs:  # logged with TRL's own metrics
        assert {"erc_clipfrac", "erc_clipfrac_low", "erc_clipfrac_high", "entropy_ratio/mean", "entropy",
                "clip_ratio/region_mean"} <= h.keys()
    # step 1 is the first update on a fresh batch (H = H_old, rho = 1); step 2 reuses it after one update
    assert logs[0]["erc_clipfrac"] == 0.0 and logs[0]["entropy_ratio/mean"] == pytest.approx(1.0, abs=1e-6)
    assert 0.0 < logs[1]["erc_clipfrac"] < 1.0
    assert logs[1]["erc_clipfrac"] == pytest.approx(logs[1]["erc_clipfrac_low"] + logs[1]["erc_clipfrac_high"])
    # the gate changed the update
    p_erc, p_plain = dict(trainer.model.named_parameters()), dict(plain.model.named_parameters())
    assert not all(torch.equal(p_erc[k], p_plain[k]) for k in p_plain)


def test_unbounded_band_equals_plain_grpo(tmp_path, plain):
    trainer = train(ERCGRPOTrainer, ERCGRPOConfig, tmp_path, erc_low=0.0, erc_high=math.inf)
    p_erc, p_plain = dict(trainer.model.named_parameters()), dict(plain.model.named_parameters())
    assert p_erc.keys() == p_plain.keys()
    for name, p in p_plain.items():
        assert torch.equal(p_erc[name], p), name
    logs = [h for h in trainer.state.log_history if "loss" in h]
    assert all(h["erc_clipfrac"] == 0.0 for h in logs)
    assert logs[1]["entropy_ratio/mean"] != 1.0  # the second update was off-policy, yet nothing was gated


@pytest.mark.parametrize("low, high", [(1.0, 2.0), (0.5, 1.0), (-0.1, 1.1), (0.9, float("nan"))])
def test_config_rejects_bad_bands(tmp_path, low, high):
    with pytest.raises(ValueError, match="erc_low"):
        ERCGRPOConfig(output_dir=str(tmp_path), erc_low=low, erc_high=high, report_to="none", use_cpu=True)


def test_trainer_needs_erc_config(tmp_path):
    args = GRPOConfig(output_dir=str(tmp_path), per_device_train_batch_size=4, num_generations=4,
                      report_to="none", use_cpu=True)
    with pytest.raises(TypeError, match="ERCGRPOConfig"):
        ERCGRPOTrainer(model=tiny_model(TOK, hidden=32, layers=1, heads=2), reward_funcs=count_a, args=args,
                       train_dataset=DATA, processing_class=TOK)
