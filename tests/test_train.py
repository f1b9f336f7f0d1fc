"""The training loop: config validation, the ERC invariants end to end, determinism, resume, learning."""

import dataclasses
import math
import os
import time
from pathlib import Path

import pytest
import torch
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

import erc_core.rl.train as tr
from erc_core.rl.config import Config, ConfigError, config_keys, load_config, parse_set
from erc_core.rl.train import TIMING_KEYS, CheckpointError, RunLockedError, main, read_jsonl, train

ROOT = Path(__file__).resolve().parents[1]

# a run that takes a few seconds: a very small model on small sums
FAST = dict(arith_max_operand=9, arith_ops="+", eval_size=20, eval_every=2, tiny_hidden=32, tiny_layers=1,
            tiny_heads=2, warmstart_steps=100, prompts_per_step=4, group_size=4, max_new_tokens=4, mini_batch_size=4,
            steps=4, save_every=2, log_tokens_every=1, progress=False, lr=3e-4, warmup_steps=1)


def strip(records):
    return [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in records]


# ------------------------------------------------------------------------------------------ config
def test_base_yaml_lists_the_defaults():
    base = yaml.safe_load((ROOT / "configs/base.yaml").read_text())
    assert base == dataclasses.asdict(Config())


@pytest.mark.parametrize("path", sorted((ROOT / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_presets_load(path):
    cfg = load_config(path)
    assert cfg.updates_per_step >= 1


@pytest.mark.parametrize("overrides, key, allowed", [
    (dict(erc_low=1.2), "erc_low", "0 <= erc_low < 1"),
    (dict(erc_high=0.9), "erc_high", "erc_high > 1"),
    (dict(mini_batch_size=48), "mini_batch_size", "divisor of prompts_per_step x group_size = 256"),
    (dict(micro_batch_size=5), "micro_batch_size", "divisor of mini_batch_size"),
    (dict(loss_mode="ppo"), "loss_mode", "['dapo', 'gppo', 'clip_cov', 'kl_cov', 'dppo_tv', 'dppo_kl']"),
    (dict(clip_cov_ratio=0.0), "clip_cov_ratio", "0 < value <= 1"),
    (dict(clip_cov_lb=6.0), "clip_cov_ub", "clip_cov_ub > clip_cov_lb"),
    (dict(group_size=1), "group_size", ">= 2"),
    (dict(lr=-1.0), "lr", "> 0"),
    (dict(steps="ten"), "steps", "type int"),
    (dict(clip_low=1.0), "clip_low", "0 <= clip_low < 1"),
    (dict(overlong_buffer=99), "overlong_buffer", "max_new_tokens"),
])
def test_bad_config_values_name_the_key(overrides, key, allowed):
    with pytest.raises(ConfigError) as err:
        load_config(None, overrides)
    assert repr(key) in str(err.value) and allowed in str(err.value)


def test_unknown_key_is_rejected_with_a_hint(tmp_path):
    with pytest.raises(ConfigError, match="unknown config key 'erc_lo'.*did you mean 'erc_low'"):
        load_config(None, {"erc_lo": 0.9})
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"base: {ROOT / 'configs/base.yaml'}\nlearning_rate: 0.1\n")
    with pytest.raises(ConfigError, match="learning_rate"):
        load_config(cfg)


def test_yaml_inheritance_and_set_parsing(tmp_path):
    child = tmp_path / "child.yaml"
    child.write_text(f"base: {ROOT / 'configs/base.yaml'}\nerc: true\nlr: 2.0e-4\n")
    cfg = load_config(child, parse_set(["steps=7", "erc_high=1.1", "arith_ops=+"]))
    assert (cfg.erc, cfg.lr, cfg.steps, cfg.erc_high, cfg.arith_ops) == (True, 2e-4, 7, 1.1, "+")
    assert isinstance(load_config(None, {"lr": 1}).lr, float)
    assert load_config(None, parse_set(["lr=3e-4"])).lr == 3e-4  # YAML 1.1 reads 3e-4 as a string


def test_num_threads_is_restored(tmp_path):
    before = torch.get_num_threads()
    recs = train(dict(FAST, steps=1, num_threads=1), tmp_path)
    assert recs[0]["torch_threads"] == 1 and torch.get_num_threads() == before


def test_bad_config_fails_before_any_compute(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(tr, "build_model", lambda *a, **k: pytest.fail("a model was built for a bad config"))
    with pytest.raises(ConfigError, match="erc_low"):
        train(dict(FAST, erc_low=2.0), tmp_path / "run")
    assert not (tmp_path / "run").exists()
    assert main(["--config", str(ROOT / "configs/base.yaml"), "--out", str(tmp_path / "r2"),
                 "--set", "mini_batch_size=7"]) == 2
    assert "mini_batch_size" in capsys.readouterr().err and not (tmp_path / "r2").exists()


# ------------------------------------------------------------------------------------------ ERC end to end
def test_erc_bites_only_off_policy(tmp_path):
    """Several updates per rollout: the gate fires. One update on one mini-batch: rho == 1 exactly, nothing gated."""
    off = train(dict(FAST, erc=True), tmp_path / "off")
    rl = [r for r in off if r["step"] > 0]
    assert rl[0]["updates_per_step"] == 4
    for r in rl:
        assert all(math.isfinite(r[k]) for k in ("loss", "pg_loss", "grad_norm", "entropy_mean", "ppo_kl"))
    assert max(r["erc_clipfrac"] for r in rl) > 0.01
    assert max(r["erc_clipfrac_last"] for r in rl) > 0.01

    on = train(dict(FAST, erc=True, mini_batch_size=16), tmp_path / "on")
    rl = [r for r in on if r["step"] > 0]
    assert rl[0]["updates_per_step"] == 1
    for r in rl:
        assert r["erc_clipfrac"] == 0.0 and r["ratio_outside_frac"] == 0.0
        assert r["entropy_ratio_mean"] == 1.0 and r["ppo_kl"] == 0.0 and r["ppo_clipfrac"] == 0.0
    tokens = [yaml.safe_load(ln) for ln in (tmp_path / "on/tokens.jsonl").read_text().splitlines()]
    assert tokens and all(t["rho"] == 1.0 and not t["gated"] for t in tokens)


@pytest.mark.parametrize("variant", [
    dict(loss_mode="gppo", clip_high=0.2, erc=True), dict(entropy_penalty_coef=0.1), dict(entropy_coef=0.01),
    dict(kl_coef=0.01), dict(sft_coef=0.1, dynamic_sampling=True), dict(overlong_buffer=2, micro_batch_size=2),
    dict(loss_mode="clip_cov", clip_cov_ratio=0.2, clip_cov_lb=-5.0), dict(loss_mode="kl_cov", kl_cov_ratio=0.2),
    dict(loss_mode="kl_cov", kl_cov_ratio=0.2, erc=True),
    dict(loss_mode="dppo_tv", clip_low=0.02, clip_high=0.02, erc=True), dict(loss_mode="dppo_kl", clip_low=1e-3,
                                                                          clip_high=1e-3),
])
def test_variants_run(tmp_path, variant):
    recs = train(dict(FAST, steps=2, **variant), tmp_path)
    rl = [r for r in recs if r["step"] > 0]
    assert len(rl) == 2 and all(math.isfinite(r.get("loss", 0.0)) for r in rl)
    if variant.get("loss_mode") == "clip_cov":
        assert max(r["cov_clipfrac"] for r in rl) > 0      # the covariance clip acted
    if variant.get("loss_mode") == "kl_cov":
        assert max(r["cov_klfrac"] for r in rl) > 0
    if variant.get("loss_mode", "").startswith("dppo"):
        assert max(r["ppo_clipfrac"] for r in rl) > 0  # the trust region masked some tokens
    if "kl_coef" in variant:
        assert all(r["kl_ref"] >= 0 for r in rl) and max(r["kl_ref"] for r in rl) > 0


def test_outputs_and_token_records(tmp_path):
    train(dict(FAST, erc=True, steps=2), tmp_path)
    assert (tmp_path / "checkpoint.pt").exists() and (tmp_path / "config.yaml").exists()
    assert not list(tmp_path.glob("*.tmp"))
    tokens = [yaml.safe_load(ln) for ln in (tmp_path / "tokens.jsonl").read_text().splitlines()]
    assert tokens
    for t in tokens:
        assert set(t) >= {"step", "token", "old_entropy", "entropy", "rho", "gated", "advantage"}
        assert t["gated"] == (not 0.95 < t["rho"] < 1.05) and t["advantage"] != 0


# ------------------------------------------------------------------------------------------ reproducibility
def test_same_seed_same_metrics(tmp_path):
    a = train(dict(FAST, erc=True, steps=3), tmp_path / "a")
    b = train(dict(FAST, erc=True, steps=3), tmp_path / "b")
    assert strip(a) == strip(b)
    c = train(dict(FAST, erc=True, steps=3, seed=1), tmp_path / "c")
    assert strip(a) != strip(c)


def test_resume_equals_uninterrupted(tmp_path):
    cfg = dict(FAST, erc=True, steps=6, save_every=1, kl_coef=0.01)
    full = train(cfg, tmp_path / "full")
    part = train(cfg, tmp_path / "part", stop_at=3)
    assert [r["step"] for r in part] == [0, 1, 2, 3]
    resumed = train(cfg, tmp_path / "part", resume=True)
    assert [r["step"] for r in resumed] == list(range(7))
    assert strip(resumed) == strip(full)
    assert (tmp_path / "part/tokens.jsonl").read_text().count("\n") == \
        (tmp_path / "full/tokens.jsonl").read_text().count("\n")


def test_setup_and_rl_step_are_the_training_loop(tmp_path):
    """setup + rl_step, called by hand as the replay and the benchmarks do, give train()'s step records; the hooks
    see every update, with its mini-batch and statistics, in order."""
    cfg = load_config(dict(FAST, erc=True, steps=3, ppo_epochs=2, mini_batch_size=8, kl_coef=0.01))
    records = train(cfg, tmp_path / "run")
    run = tr.setup(cfg)
    assert run.warmstart_losses[-1] == records[0]["warmstart_loss"] and run.ref_model is not None
    seen, stats = [], []
    for step in (1, 2, 3):
        res = tr.rl_step(run, step, tr.Hooks(before_update=lambda ro, mini: seen.append(torch.cat(mini)),
                                             after_update=stats.append))
        want = {k: v for k, v in records[step].items() if k not in TIMING_KEYS and k != "eval_acc"}
        assert {k: v for k, v in res.record.items() if k not in TIMING_KEYS} == want
        assert run.step == step and res.last_entropy.shape == res.rollout.response_mask.shape
    assert len(seen) == len(stats) == 3 * cfg.updates_per_step
    assert sorted(torch.cat(seen[:2]).tolist()) == list(range(cfg.batch_size))  # an epoch covers the batch
    last = stats[-cfg.updates_per_step:]
    assert sum(s["erc_clipfrac"] for s in last) / len(last) == pytest.approx(records[3]["erc_clipfrac"], abs=1e-12)


@pytest.mark.parametrize("kw, name", [(dict(max_new_tokens=0), "max_new_tokens"),
                                      (dict(max_new_tokens=2, temperature=0.0), "temperature"),
                                      (dict(max_new_tokens=2, temperature=math.nan), "temperature")])
def test_generate_names_a_bad_argument(kw, name):
    from erc_core.rl.models import char_tokenizer, tiny_model

    tok = char_tokenizer("0123456789+=")
    with pytest.raises(ValueError, match=name):
        tr.generate(tiny_model(tok, hidden=16, layers=1, heads=2), tok, ["1+1="], **kw)


# ------------------------------------------------------------------------------------------ learning
def test_rl_improves_reward(tmp_path):
    """From a weak warm start, RL raises the mean sampled reward (numbers computed here, fixed seed)."""
    recs = train(dict(FAST, erc=True, **LEARN), tmp_path)
    rewards = [r["reward_mean"] for r in recs if r["step"] > 0]
    k = len(rewards) // 4
    start, end = sum(rewards[:k]) / k, sum(rewards[-k:]) / k
    print(f"reward first quarter {start:.3f} -> last quarter {end:.3f}")
    assert end > start + 0.15


LEARN = dict(arith_max_operand=4, eval_size=5, warmstart_steps=100, steps=60, prompts_per_step=8, group_size=8,
             mini_batch_size=16, lr=1e-3, eval_every=20, save_every=0, log_tokens_every=0)


# ------------------------------------------------------------------------------------------ reliability
class _RunsCode:
    """Unpickling this runs a command (what a crafted checkpoint does)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        import os

        return os.system, (f"touch {self.marker}",)


def test_crafted_checkpoint_is_refused_and_runs_no_code(tmp_path):
    cfg = dict(FAST, steps=2, save_every=1)
    train(cfg, tmp_path, stop_at=1)
    marker = tmp_path / "pwned"
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=True)  # our own checkpoint is plain data
    state["payload"] = _RunsCode(marker)
    torch.save(state, tmp_path / "checkpoint.pt")
    with pytest.raises(CheckpointError, match="NOT loaded.*weights_only=True"):
        train(cfg, tmp_path, resume=True)
    assert not marker.exists()


def test_torn_last_line_is_dropped_and_resume_continues(tmp_path):
    cfg = dict(FAST, steps=4, save_every=1)
    full = train(cfg, tmp_path / "full")
    part = tmp_path / "part"
    train(cfg, part, stop_at=2)
    for name in ("metrics.jsonl", "tokens.jsonl"):  # a kill in the middle of step 3's append
        with open(part / name, "a") as f:
            f.write('{"step": 3, "reward_mean": 0.')
    with pytest.warns(RuntimeWarning, match="torn last line"):
        assert [r["step"] for r in read_jsonl(part / "metrics.jsonl")] == [0, 1, 2]
    with pytest.warns(RuntimeWarning, match="torn last line"):
        resumed = train(cfg, part, resume=True)
    assert strip(resumed) == strip(full)
    assert (part / "tokens.jsonl").read_text().count("\n") == (tmp_path / "full/tokens.jsonl").read_text().count("\n")


def test_corrupt_line_in_the_middle_names_file_and_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 0}\n{"step": 1, oops\n{"step": 2}\n')
    with pytest.raises(ValueError, match=r"metrics.jsonl, line 2"):
        read_jsonl(path)


def test_resume_refuses_a_changed_config_and_extends_steps(tmp_path, capsys):
    cfg = dict(FAST, steps=4, save_every=1)
    full = train(cfg, tmp_path / "full")
    run = tmp_path / "run"
    train(dict(cfg, steps=2), run)
    for change in (dict(lr=0.01), dict(seed=1, erc=True), dict(tiny_hidden=64)):
        with pytest.raises(ConfigError) as err:
            train(dict(cfg, steps=2, **change), run, resume=True)
        assert all(repr(k) in str(err.value) for k in change), err.value
    assert yaml.safe_load((run / "config.yaml").read_text())["lr"] == cfg["lr"]
    preset = tmp_path / "c.yaml"
    preset.write_text(yaml.safe_dump(dict(cfg, steps=2)))
    assert main(["--config", str(preset), "--out", str(run), "--resume", "--set", "lr=0.01"]) == 2
    assert "'lr'" in capsys.readouterr().err
    # extending steps is the one allowed change; the run then matches a 4-step run but for step 2's evaluation
    assert main(["--config", str(preset), "--out", str(run), "--resume", "--set", "steps=4"]) == 0
    ext = read_jsonl(run / "metrics.jsonl")
    assert yaml.safe_load((run / "config.yaml").read_text())["steps"] == 4
    drop = set(TIMING_KEYS) | {"eval_acc"}
    assert [{k: v for k, v in r.items() if k not in drop} for r in ext] == \
        [{k: v for k, v in r.items() if k not in drop} for r in full]
    with pytest.raises(ConfigError, match="'steps'.*checkpoint is at step 4"):
        train(dict(cfg, steps=3), run, resume=True)


def test_one_trainer_per_folder_and_no_silent_wipe(tmp_path, capsys):
    import fcntl

    run = tmp_path / "run"
    train(dict(FAST, steps=1), run)
    with pytest.raises(ConfigError, match="already holds a run.*overwrite"):
        train(dict(FAST, steps=1), run)
    assert main(["--config", str(ROOT / "configs/base.yaml"), "--out", str(run), "--set", "steps=1"]) == 2
    assert "--overwrite" in capsys.readouterr().err
    before = (run / "metrics.jsonl").read_text()
    with open(run / "train.lock", "a") as held:  # another trainer writing this folder
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(RunLockedError, match="in use"):
            train(dict(FAST, steps=1), run, overwrite=True)
        with pytest.raises(RunLockedError):
            train(dict(FAST, steps=2), run, resume=True)
    assert (run / "metrics.jsonl").read_text() == before
    recs = train(dict(FAST, steps=1, seed=3), run, overwrite=True)
    assert [r["step"] for r in recs] == [0, 1] and yaml.safe_load((run / "config.yaml").read_text())["seed"] == 3


def test_second_trainer_process_fails_at_once(tmp_path, capsys):
    """A real trainer process runs on the folder; a second trainer (the CLI's ``main``, in this process) on the
    same folder exits 2 at once naming the lock, and the first keeps running."""
    import subprocess
    import sys

    preset = tmp_path / "c.yaml"
    preset.write_text(yaml.safe_dump(dict(FAST, steps=100000, eval_every=100000, save_every=0,
                                          log_tokens_every=0)))
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    args = ["--config", str(preset), "--out", str(tmp_path / "run")]
    first = subprocess.Popen([sys.executable, "-m", "erc_core.rl.train", *args], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 300
        while not (tmp_path / "run/metrics.jsonl").exists():
            assert first.poll() is None and time.time() < deadline
            time.sleep(0.2)
        assert main([*args, "--resume"]) == 2
        err = capsys.readouterr().err
        assert "in use" in err and "train.lock" in err, err
        assert first.poll() is None
    finally:
        first.kill()
        first.wait()


@pytest.mark.parametrize("overrides, key, allowed", [
    (dict(num_threads=100000), "num_threads", "0 (leave as is) or 1.."),
    (dict(seed=-1), "seed", "[0, 2**32 - 1"),
    (dict(seed=2 ** 70), "seed", "[0, 2**32 - 1"),
    (dict(tiny_heads=3), "tiny_heads", "divisor of tiny_hidden = 32"),
    (dict(tiny_hidden=6, tiny_heads=2), "tiny_heads", "even head size"),
    (dict(clip_cov_lb=math.nan), "clip_cov_lb", "not NaN"),
    (dict(lr=math.nan), "lr", "not NaN"),
    (dict(eval_size=100000), "eval_size", "1..99: the task has 100 distinct problems"),
    (dict(eval_size=100000, task="countdown", countdown_numbers=2, countdown_max_number=3), "eval_size",
     "1..31: the task has 32 distinct problems"),
    (dict(prompts_per_step=10 ** 7), "prompts_per_step", "<= 65536 responses per step"),
])
def test_more_bad_values_name_the_key_before_the_folder_exists(tmp_path, overrides, key, allowed):
    with pytest.raises(ConfigError) as err:
        train(dict(FAST, **overrides), tmp_path / "run")
    assert repr(key) in str(err.value) and allowed in str(err.value), err.value
    assert not (tmp_path / "run").exists()


def test_countdown_problem_space_is_exact():
    """The count of distinct prompts agrees with what the task generates (every one is reachable)."""
    import numpy as np

    from erc_core.rl.tasks import make_task
    from erc_core.rl.config import problem_space

    cfg = Config(task="countdown", countdown_numbers=2, countdown_max_number=3, eval_size=9)
    task = make_task("countdown", n_numbers=2, max_number=3, eval_size=1)
    rng = np.random.default_rng(0)
    seen = {task.generate(rng).prompt for _ in range(20000)}
    assert problem_space(cfg) == len(seen) == 32


def test_config_file_errors_name_the_file(tmp_path):
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    a.write_text("base: b.yaml\nlr: 0.1\n")
    b.write_text("base: a.yaml\n")
    with pytest.raises(ConfigError, match="'base' forms a cycle.*a.yaml.*b.yaml.*a.yaml"):
        load_config(a)
    b.write_text("base: [a.yaml]\n")
    with pytest.raises(ConfigError, match="'base' in .*b.yaml must be a file name"):
        load_config(a)
    b.write_text("lr: [0.1\n")
    with pytest.raises(ConfigError, match="b.yaml is not valid YAML"):
        load_config(a)
    with pytest.raises(ConfigError, match="missing.yaml does not exist"):
        load_config(tmp_path / "missing.yaml")


# ------------------------------------------------------------------------------------------ the step record's means
def _rollout(mask, keep, old_entropy):
    """A Rollout holding only what rollout_metrics reads."""
    b = len(keep)
    z = torch.zeros(b)
    return tr.Rollout(input_ids=None, attention_mask=None, responses=None, response_mask=mask, texts=[],
                      rewards=torch.arange(b, dtype=torch.float32) % 2, scores=z, advantages=z, keep=keep,
                      truncated=mask[:, -1].clone(), old_entropy=old_entropy)


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_rollout_metrics_cover_the_tokens_they_name(data):
    """entropy_mean is the mean old entropy over the kept responses' tokens (dropped rows hold 0: the old pass never
    scores them), response_len / truncated_frac / reward_mean are over all responses."""
    b, r = data.draw(st.integers(2, 6)), data.draw(st.integers(1, 5))
    lens = data.draw(st.lists(st.integers(1, r), min_size=b, max_size=b))
    keep = torch.tensor(data.draw(st.lists(st.booleans(), min_size=b, max_size=b)))
    mask = torch.arange(r)[None, :] < torch.tensor(lens)[:, None]
    ent = torch.tensor(data.draw(st.lists(st.floats(0.0, 3.0, width=32), min_size=b * r, max_size=b * r))).view(b, r)
    ent = ent * keep[:, None]  # as old_pass leaves it
    m = tr.rollout_metrics(_rollout(mask, keep, ent))
    kept_vals = [float(ent[i, t]) for i in range(b) if keep[i] for t in range(lens[i])]
    if kept_vals:
        assert m["entropy_mean"] == pytest.approx(sum(kept_vals) / len(kept_vals), rel=1e-6, abs=1e-7)
    else:
        assert "entropy_mean" not in m
    assert m["response_len"] == pytest.approx(sum(lens) / b)
    assert m["truncated_frac"] == pytest.approx(sum(n == r for n in lens) / b)
    assert m["kept_frac"] == pytest.approx(float(keep.float().mean()))
    assert set(m) <= set(tr.STEP_METRICS)


def test_step_record_means_are_over_the_tokens_they_claim(tmp_path, monkeypatch):
    """End to end, with dynamic sampling dropping groups, micro-batches and a per-sequence agg: every per-token stat
    of the record equals the mean over exactly the tokens it covers, recomputed from the tensors policy_loss saw
    (pooled per update, then averaged over updates); entropy_mean equals the mean old entropy of the trained-on
    tokens; grad_norm_clipped <= min(grad_norm, grad_clip) and grad_clip_frac is the share of clipped updates."""
    seen, updates = [], []
    real_loss, real_clip = tr.policy_loss, tr.clip_gradients

    def spy_loss(logp, old_logp, adv, mask, **kw):
        seen.append((logp.detach(), old_logp, mask.bool(), kw["entropy"].detach(), kw["old_entropy"]))
        return real_loss(logp, old_logp, adv, mask, **kw)

    def spy_clip(model, max_norm):
        out = real_clip(model, max_norm)
        updates.append((list(seen), out))
        seen.clear()
        return out

    monkeypatch.setattr(tr, "policy_loss", spy_loss)
    monkeypatch.setattr(tr, "clip_gradients", spy_clip)
    cfg = dict(FAST, erc=True, dynamic_sampling=True, agg="seq-mean-token-mean", micro_batch_size=2, ppo_epochs=2,
               steps=3, prompts_per_step=6, seed=1, grad_clip=0.5)
    recs = []
    real_update = tr.update

    def spy_update(*a, **k):
        updates.clear()
        out = real_update(*a, **k)
        recs.append(list(updates))
        return out

    monkeypatch.setattr(tr, "update", spy_update)
    metrics = [r for r in tr.train(cfg, tmp_path) if r["step"] > 0]
    assert any(0 < r["kept_frac"] < 1 for r in metrics)  # dynamic sampling dropped some groups, not all
    checked = 0
    for rec, ups in zip(metrics, recs):
        if not ups:
            assert "erc_clipfrac" not in rec and "entropy_mean" not in rec
            continue
        per_update = []
        for micros, clip in ups:
            cat = lambda j: torch.cat([mc[j][mc[2]] for mc in micros])  # noqa: E731 (pooled over the update)
            logp, old_logp, ent, old_ent = cat(0), cat(1), cat(3), cat(4)
            rho = (ent + 1e-8) / (old_ent + 1e-8)
            per_update.append(dict(ppo_kl=float((old_logp - logp).double().mean()),
                                   erc_clipfrac=float(((rho <= 0.95) | (rho >= 1.05)).double().mean()),
                                   entropy_ratio_mean=float(rho.double().mean()), old_ent_mean=float(old_ent.mean()),
                                   **clip))
        for k in ("ppo_kl", "erc_clipfrac", "entropy_ratio_mean", "grad_norm", "grad_norm_clipped", "grad_clip_frac"):
            assert rec[k] == pytest.approx(sum(u[k] for u in per_update) / len(per_update), rel=1e-5, abs=1e-6), k
        assert rec["ratio_outside_frac"] == pytest.approx(rec["erc_clipfrac"], abs=1e-6)
        n_per_epoch = len(ups) // cfg["ppo_epochs"]
        first_epoch = [mc for micros, _ in ups[:n_per_epoch] for mc in micros]
        old_all = torch.cat([mc[4][mc[2]] for mc in first_epoch])
        assert rec["entropy_mean"] == pytest.approx(float(old_all.double().mean()), rel=1e-5)
        for _, clip in ups:
            assert clip["grad_norm_clipped"] <= min(clip["grad_norm"], cfg["grad_clip"]) * (1 + 1e-5)
            assert clip["grad_clip_frac"] == float(clip["grad_norm"] > cfg["grad_clip"])
        checked += 1
    assert checked >= 2


def test_progress_bar_only_on_a_terminal(tmp_path, monkeypatch):
    """progress=True draws a bar on a terminal only: a log file (non-tty stderr) gets none of its refreshes."""
    import io
    import sys

    class Stream(io.StringIO):
        def __init__(self, tty: bool):
            super().__init__()
            self.tty = tty

        def isatty(self) -> bool:
            return self.tty

    drawn = {}
    for tty in (True, False):
        monkeypatch.setattr(sys, "stderr", Stream(tty))
        train(dict(FAST, steps=2, eval_every=100, progress=True), tmp_path / f"run{tty}")
        drawn[tty] = sys.stderr.getvalue()
    assert "it/s" in drawn[True] or "s/it" in drawn[True], drawn[True][-500:]  # the bar, on a terminal
    assert "it/s" not in drawn[False] and "s/it" not in drawn[False] and "%|" not in drawn[False], drawn[False]


def test_every_config_key_is_documented_in_help_and_api(capsys):
    """Each Config field has a description (its comment in Config), shown by --help and in Config's docstring."""
    keys = config_keys()
    assert [k for k, _, _ in keys] == [f.name for f in dataclasses.fields(Config)]
    assert all(desc for _, _, desc in keys), [k for k, _, desc in keys if not desc]
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert all(f"  {k} (default {d}): {desc}" in out for k, d, desc in keys)
    assert all(f"``{k}``" in Config.__doc__ for k, _, _ in keys)
