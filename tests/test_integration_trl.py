"""ERCGRPOTrainer (erc_core.integrations.trl) on a tiny model, an in-memory dataset and a toy reward, on the CPU."""

import math

import pytest

pytest.importorskip("trl", reason="TRL is not installed: the [trl] extra (pip install -e '.[trl]') brings it")
pytest.importorskip("datasets", reason="datasets is not installed: the [trl] extra brings it")

import torch  # noqa: E402
from datasets import Dataset  # noqa: E402
from trl import GRPOConfig, GRPOTrainer  # noqa: E402

from erc_core.integrations.trl import ERCGRPOConfig, ERCGRPOTrainer  # noqa: E402
from erc_core.rl.models import char_tokenizer, tiny_model  # noqa: E402

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


def test_trl_version_is_checked_against_the_pinned_range():
    import re
    from pathlib import Path

    from erc_core.integrations import trl as erc_trl

    pyproject = (Path(__file__).resolve().parents[1] / "pyproject.toml").read_text()
    pinned = re.search(r'^trl = \["trl([^"]+)"', pyproject, re.M).group(1)
    assert erc_trl.TRL_VERSIONS == pinned
    erc_trl.check_trl_version("1.16.2")
    for bad in ("1.15.0", "1.17.0", "2.0.0"):
        with pytest.raises(ImportError, match=rf"trl>=1\.16,<1\.17.*trl {re.escape(bad)} is installed"):
            erc_trl.check_trl_version(bad)


def test_missing_old_entropies_raise_instead_of_plain_grpo(tmp_path):
    """If the old pass runs (num_iterations=2) but its entropies are not captured, training stops with a clear
    error rather than quietly dropping the gate."""
    model = tiny_model(TOK, hidden=32, layers=1, heads=2, seed=0)
    args = ERCGRPOConfig(output_dir=str(tmp_path), per_device_train_batch_size=8, num_generations=4,
                         max_completion_length=6, num_iterations=2, max_steps=1, learning_rate=3e-2,
                         loss_type="dapo", report_to="none", use_cpu=True, seed=0, save_strategy="no",
                         disable_tqdm=True)
    trainer = ERCGRPOTrainer(model=model, reward_funcs=count_a, args=args, train_dataset=DATA, processing_class=TOK)
    # a scoring path that never hands the old entropies to the plug-in (as a TRL version with other hooks would)
    trainer._get_per_token_logps_and_entropies = (
        lambda *a, **k: GRPOTrainer._get_per_token_logps_and_entropies(trainer, *a, **k))
    with pytest.raises(RuntimeError, match="no old entropies were captured"):
        trainer.train()
    logps = torch.zeros(2, 3)
    inputs = {"completion_mask": torch.ones(2, 3), "old_per_token_logps": torch.zeros(2, 3)}
    with pytest.raises(RuntimeError, match="old_per_token_entropies"):
        trainer._erc_gate(logps, torch.ones(2, 3), inputs)
