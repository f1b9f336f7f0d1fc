"""One policy-update step: erc_core's trainer vs TRL's GRPOTrainer (and our ERCGRPOTrainer), one process.

    python benchmarks/bench_trl.py [--config configs/base.yaml] [--repeats 200] [--threads 1] [--set key=value ...]

What is compared: the time of ONE optimizer update on ONE mini-batch of completions that already exist
(generation, rewards, advantages and the old-policy pass are done before timing and are not timed), for

* ``erc_core DAPO`` / ``erc_core DAPO+ERC``: ``erc_core.rl.train.update(cfg, model, opt, ro, parts)`` with one
  mini-batch = one micro-batch and ``ppo_epochs=1``, i.e. exactly one AdamW step (``erc`` off / on);
* ``TRL GRPO`` / ``TRL+ERC``: TRL 1.x's own update path for one optimizer step, as ``Trainer``'s inner loop runs it:
  ``trainer.training_step(model, inputs)`` + ``trainer._clip_grad_norm(model)`` + ``trainer._get_grad_norm`` +
  ``trainer.optimizer.step()`` + ``model.zero_grad()`` (``trl.GRPOTrainer`` / ``ERCGRPOTrainer``).

Same model, same weights, same batch. One tiny causal LM is built from the erc_core config (``configs/base.yaml``:
the 83k-parameter tiny Llama, character vocabulary), warm-started 100 supervised steps so that rewards and
advantages are not all zero, and its ``state_dict`` is loaded into every variant's own copy of the model before
EVERY timed update (untimed), so each update starts from identical weights. erc_core's ``rollout`` samples
``mini_batch_size`` responses (``prompts_per_step = mini_batch_size / group_size`` prompts x ``group_size``) and
``old_pass`` scores them. TRL's ``inputs`` dict is the one TRL itself builds: each TRL trainer is run for one step
(``trainer.train()`` with ``max_steps=1``: its own generation via ``_generate_and_score_completions``, optimizer
creation, accelerator setup), and its buffered batch is then reused with its token tensors replaced by erc_core's
rollout (``prompt_ids``/``prompt_mask`` = the left-padded prompts, ``completion_ids``/``completion_mask`` = the
responses and response mask, ``advantages`` = erc_core's GRPO advantages, ``num_items_in_batch`` = response tokens)
and TRL's old-policy pass rerun on them (``_get_per_token_logps_and_entropies`` under no_grad, which gives TRL's
``old_per_token_logps`` and the ``old_per_token_entropies`` that ``ERCGRPOTrainer`` keeps). So all four variants
update on the same token ids, masks, shape (B sequences x P prompt + R completion tokens) and advantages.

Which weights: first, one untimed update of every variant at the rollout weights (on-policy, every ratio 1) prints
its loss: the four must agree (all are -token-mean(A)), a check that both frameworks see the same batch with the same
normalisation. The timed updates then start from weights ``--offpolicy-updates`` (3) erc_core DAPO updates past the
rollout policy, as every update of a step but the first: ratios differ from 1, ERC gates some tokens (both ERC
variants print their ``erc_clipfrac``, which agree), and the losses printed again must still agree. (TRL scores
left-padded rows with arange position ids, erc_core with mask-derived ones; with RoPE only relative positions
matter, so the values agree anyway.) The work per update does not depend on how many tokens are gated.

What each timed region includes:

* erc_core (``update``): ``zero_grad``; ONE forward of the model with ``logits_to_keep = R + 1`` (the LM head only
  on the completion positions); ``logprobs_and_entropy`` (one fp32 pass over the (B, R, V) logits giving log-probs
  AND the full-vocabulary entropy of every token, under autograd); ``policy_loss`` (DAPO: decoupled clip
  ``clip_low``/``clip_high``, dual clip ``clip_c``, log-ratio clamp, token-mean; with ``erc`` the ERC gate
  ``where(keep, loss, loss.detach())``); the would-be-gated fraction (``erc_mask``, computed ERC on or off) and the
  ``.item()`` stats; backward; ``clip_grad_norm_`` (+ ``float``); ``AdamW.step`` (``torch.optim.AdamW``).
  ``sft_coef`` is set to 0 (TRL has no SFT term), ``kl_coef`` and ``entropy_coef`` are 0 as in base.yaml.
* TRL (``training_step`` etc.): ``model.train()``; ``_prepare_inputs`` (TRL's buffered-batch branch: indexing, no
  generation; ``trainer._step`` is reset untimed before each update so TRL never regenerates); ``compute_loss``:
  ONE forward through TRL's fused LM head (``add_fused_lm_head``: the backbone on all P + R positions, then a
  chunked custom autograd function (``trl.kernels.ChunkedLogProbFunction``, torch tiles on a CPU) that projects the
  hidden states through the LM head and returns log-probs AND the temperature-scaled full-vocabulary entropy, and
  whose backward recomputes each tile's logits; on a CPU it scores every position, prompt ones included, then
  masks), TRL's DAPO loss (two-sided clip ``epsilon``/``epsilon_high``, no dual clip, ``loss_type="dapo"``,
  ``beta=0``) and its metrics (entropy mean, clip ratios: ``accelerator.reduce``/``gather`` + ``.item()``);
  ``accelerator.backward``; ``_clip_grad_norm`` (``accelerator.clip_grad_norm_``); ``optimizer.step`` (TRL's
  ``AcceleratedOptimizer`` around the ``--trl-optim`` optimizer, by default ``adamw_torch`` = the same
  ``torch.optim.AdamW`` implementation erc_core uses; TRL's own default is ``adamw_torch_fused``);
  ``model.zero_grad()``. With ``ERCGRPOTrainer`` also the gate: ``erc_mask`` on (H, H_old), ``apply_erc_gate`` on the
  log-probs and its four metrics (one ``accelerator.reduce`` + four ``.item()``).
* Neither side steps an LR scheduler, runs callbacks, logs, or saves inside the timed region.

TRL is configured to match erc_core on the CPU: ``bf16=False`` (fp32, like erc_core on the CPU; TRL's default
would autocast to bf16), ``gradient_checkpointing=False`` (TRL's default is True: it recomputes the forward in
backward; erc_core does not checkpoint), the same lr / weight decay / betas / eps / grad clip / temperature /
clip range, ``num_iterations=2`` (so TRL runs its old-policy pass and ERCGRPOTrainer has old entropies).

Timing: ``--threads`` torch threads (1 by default: on a loaded 2-core box 2 threads make these small ops 10-30x
slower), ``--warmup`` untimed rounds, then ``--repeats`` timed rounds; every round times each variant once, in a
rotating order (drift hits all alike), with ``time.perf_counter``; ``gc.collect()`` runs before each timed update
(untimed, after ``gc.freeze()`` of everything built during setup) so no collection lands inside one. The table
shows the median and the interquartile range in ms per update step, and ratios of medians.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import gc
import os
import platform
import statistics
import time

import numpy as np
import torch

from erc_core.rl.models import num_params, warm_start
from erc_core.rl.tasks import format_prompt
from erc_core.rl.config import load_config
from erc_core.rl.train import (build_model, make_optimizer, make_task_from, old_pass,
                            partition, rollout, seed_everything, update)
from trl_common import add_common_args, base_config, cpu_name, trl_classes, trl_trainers


def trl_inputs(trainer, ro, n_prompt: int) -> dict:
    """TRL's own buffered batch with erc_core's rollout tensors put in, and TRL's old pass rerun on them."""
    from erc_core.integrations.trl import OLD_ENTROPY_KEY

    src = trainer._buffered_inputs[0]
    inputs = dict(src)
    dev = src["prompt_ids"].device
    inputs["prompt_ids"] = ro.input_ids[:, :n_prompt].to(dev, src["prompt_ids"].dtype)
    inputs["prompt_mask"] = ro.attention_mask[:, :n_prompt].to(dev, src["prompt_mask"].dtype)
    inputs["completion_ids"] = ro.responses.to(dev, src["completion_ids"].dtype)
    inputs["completion_mask"] = ro.response_mask.to(dev, src["completion_mask"].dtype)
    inputs["advantages"] = ro.advantages.to(dev, src["advantages"].dtype)
    inputs["num_items_in_batch"] = ro.response_mask.sum().to(dev, src["num_items_in_batch"].dtype)
    unknown = {k for k, v in inputs.items() if torch.is_tensor(v) and v.dim() > 0 and v.shape[0] != len(ro.responses)
               and k not in ("num_items_in_batch",)}
    if unknown:
        raise RuntimeError(f"TRL's batch has per-sample fields this benchmark does not replace: {sorted(unknown)}")
    ids = torch.cat([inputs["prompt_ids"], inputs["completion_ids"]], 1)
    mask = torch.cat([inputs["prompt_mask"], inputs["completion_mask"]], 1)
    with torch.no_grad():
        logp, ent, _ = trainer._get_per_token_logps_and_entropies(
            trainer.model, ids, mask, ro.responses.shape[1], compute_entropy=True)
    inputs["old_per_token_logps"] = logp
    inputs[OLD_ENTROPY_KEY] = ent
    return inputs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_args(ap, repeats=200, warmup=10)
    ap.add_argument("--offpolicy-updates", type=int, default=3,
                    help="untimed erc_core DAPO updates on the batch before the timed one (0 = time on-policy)")
    ap.add_argument("--trl-optim", default="adamw_torch", help="TRL's optim (TRL's default: adamw_torch_fused)")
    args = ap.parse_args()

    trl_classes()  # exits here without TRL
    import trl
    import transformers

    base = base_config(args)
    base = load_config(base, dict(prompts_per_step=base.mini_batch_size // base.group_size, ppo_epochs=1,
                                  micro_batch_size=0))
    cfgs = {"erc_core DAPO": load_config(base, {"erc": False}), "erc_core DAPO+ERC": load_config(base, {"erc": True})}

    # ---- the shared model, weights and batch
    seed_everything(base.seed)
    task = make_task_from(base)
    model, tok = build_model(base, task)
    if args.warm_start:
        warm_start(model, tok, task, steps=args.warm_start, seed=base.seed)
    state = copy.deepcopy(model.state_dict())
    rng = np.random.default_rng([base.seed, 1])
    ro = rollout(base, model, tok, task, rng, "plain")
    parts = partition(base, ro.keep)
    assert len(parts) == 1 and len(parts[0]) == 1, parts  # one mini-batch, one micro-batch: one optimizer step
    old_pass(base, model, None, ro, parts)
    n_prompt = ro.input_ids.shape[1] - ro.responses.shape[1]
    b, r = ro.responses.shape

    # ---- TRL trainers, each on its own copy of the same model
    # the rollout's prompts (task.sample is deterministic in the rng: the same problems rollout drew)
    exs = {format_prompt(e, tok, "plain"): e for e in task.sample(np.random.default_rng([base.seed, 1]),
                                                                  base.prompts_per_step)}
    prompt_list = list(exs)

    def reward(completions, prompts, **kw):
        return [float(task.reward(c, exs[p])) if p in exs else 0.0 for c, p in zip(completions, prompts)]

    trainers = trl_trainers(model, tok, prompt_list, reward, base, "bench_trl_",
                            per_device_train_batch_size=base.mini_batch_size, num_iterations=2, optim=args.trl_optim)
    if args.threads:
        torch.set_num_threads(args.threads)  # in case anything above changed it
    for t in trainers.values():
        t.model.load_state_dict(state)
    inputs = trl_inputs(trainers["TRL GRPO"], ro, n_prompt)

    # ---- the timed steps: each restores `weights` (untimed), then times one update
    ec_models = {name: copy.deepcopy(model) for name in cfgs}
    ec_opts = {name: make_optimizer(cfg, ec_models[name])[0] for name, cfg in cfgs.items()}
    last: dict[str, dict] = {}

    def step_erc_core(name, weights):
        m = ec_models[name]
        m.load_state_dict(weights)
        gc.collect()
        t0 = time.perf_counter()
        stats, _ = update(cfgs[name], m, ec_opts[name], ro, parts)
        dt = time.perf_counter() - t0
        last[name] = dict(loss=stats["pg_loss"], erc_clipfrac=stats["erc_clipfrac"] if cfgs[name].erc else None)
        return dt

    def step_trl(name, weights):
        tr = trainers[name]
        m = tr.model_wrapped  # what Trainer's loop passes to training_step (the model itself on one CPU process)
        tr.model.load_state_dict(weights)
        tr._step, tr._buffered_inputs = 1, [inputs]  # TRL's reuse branch of _prepare_inputs: no regeneration
        tr.current_gradient_accumulation_steps = 1
        tr.accelerator.gradient_state._set_sync_gradients(True)
        gc.collect()
        t0 = time.perf_counter()
        loss = tr.training_step(m, inputs, None)
        grad_norm = None
        if tr.args.max_grad_norm > 0:
            grad_norm = tr._clip_grad_norm(m)
        tr._get_grad_norm(m, grad_norm=grad_norm)
        tr.optimizer.step()
        m.zero_grad()
        dt = time.perf_counter() - t0
        erc = tr._metrics["train"].get("erc_clipfrac")
        last[name] = dict(loss=float(loss), erc_clipfrac=erc[-1] if erc else None)
        return dt

    runners = {**{n: step_erc_core for n in cfgs}, **{n: step_trl for n in trainers}}
    names = list(runners)
    # check: one update of every variant at the rollout weights (on-policy, every ratio 1): equal losses
    for name in names:
        runners[name](name, state)
    check = {n: last[n]["loss"] for n in names}
    # the timed updates start from weights a few updates past the rollout policy (off-policy, as every update of
    # a step but the first), so ratios differ from 1 and ERC gates some tokens; the work done is the same anyway
    weights = state
    if args.offpolicy_updates:
        m = copy.deepcopy(model)
        m.load_state_dict(state)
        opt = make_optimizer(cfgs["erc_core DAPO"], m)[0]
        for _ in range(args.offpolicy_updates):
            update(cfgs["erc_core DAPO"], m, opt, ro, parts)
        weights = copy.deepcopy(m.state_dict())
    gc.collect()
    gc.freeze()  # everything built so far is long-lived: keep the per-update gc.collect() cheap
    times = {n: [] for n in names}
    t_start = time.perf_counter()
    for rep in range(args.warmup + args.repeats):
        k = rep % len(names)
        for name in names[k:] + names[:k]:
            dt = runners[name](name, weights)
            if rep >= args.warmup:
                times[name].append(dt)
    t_bench = time.perf_counter() - t_start

    # ---- report
    med = {n: statistics.median(v) * 1e3 for n, v in times.items()}
    q = {n: np.percentile(np.array(v) * 1e3, [25, 75]) for n, v in times.items()}
    within = {"erc_core DAPO": "erc_core DAPO", "erc_core DAPO+ERC": "erc_core DAPO", "TRL GRPO": "TRL GRPO",
              "TRL+ERC": "TRL GRPO"}
    ref = med["erc_core DAPO"]
    n_tok = int(ro.response_mask.sum())
    print(f"date {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}, torch {torch.__version__}, "
          f"trl {trl.__version__}, transformers {transformers.__version__}, python {platform.python_version()}")
    print(f"cpu {cpu_name()} ({os.cpu_count()} logical cores, load avg {os.getloadavg()[0]:.2f}), "
          f"torch threads {torch.get_num_threads()}")
    print(f"model: tiny {base.tiny_arch}, hidden {base.tiny_hidden}, {base.tiny_layers} layers, vocab {len(tok)}, "
          f"{num_params(model):,} params, fp32; batch: B={b} sequences ({base.prompts_per_step} prompts x "
          f"{base.group_size}), P={n_prompt} prompt + R={r} completion tokens, {n_tok} response tokens")
    print("check, loss of one update at the rollout weights (on-policy; must agree): "
          + ", ".join(f"{n} {v:.6f}" for n, v in check.items()))
    print(f"timed updates start {args.offpolicy_updates} erc_core DAPO updates past the rollout policy: loss "
          + ", ".join(f"{n} {last[n]['loss']:.6f}" for n in names) + "; erc_clipfrac "
          + ", ".join(f"{n} {last[n]['erc_clipfrac']:.4f}" for n in names if last[n]["erc_clipfrac"] is not None)
          + " (must agree)")
    print(f"{args.repeats} timed rounds after {args.warmup} warm-up rounds, rotating order; "
          f"benchmark loop {t_bench:.1f} s; TRL optimizer {args.trl_optim}\n")
    print("| variant | ms / update step (median) | IQR (ms) | vs erc_core DAPO | ERC / no ERC |")
    print("|---|---:|---:|---:|---:|")
    for n in names:
        erc_ratio = "" if within[n] == n else f"{med[n] / med[within[n]]:.3f}"
        print(f"| {n} | {med[n]:.2f} | {q[n][0]:.2f} - {q[n][1]:.2f} | {med[n] / ref:.2f} | {erc_ratio} |")


if __name__ == "__main__":
    main()
