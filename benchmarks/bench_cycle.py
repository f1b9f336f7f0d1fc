"""One full RL cycle, erc_core vs TRL's GRPOTrainer, on the same work, side by side in one process.

    python benchmarks/bench_cycle.py [--model tiny|smollm2] [--repeats 10] [--threads 1] [--set key=value ...]

A cycle is what a user waits for between two generations: sample ``prompts x group`` completions, score them,
run the old-policy pass, then ``ppo_epochs`` optimizer updates on the whole batch (one mini-batch). Variants:

* ``erc_core DAPO`` / ``erc_core DAPO+ERC``: ``erc_core.rl.train.rl_step``, the step ``train()`` runs: rollout
  (HF ``generate``, rewards, GRPO advantages), old pass, updates (``erc`` off / on);
* ``TRL GRPO`` / ``TRL+ERC``: TRL's own inner loop for the ``num_iterations = ppo_epochs`` optimizer steps that
  reuse one generation: ``training_step`` (its first call generates, scores and runs TRL's old pass in
  ``_generate_and_score_completions``) + ``_clip_grad_norm`` + ``_get_grad_norm`` + ``optimizer.step`` +
  ``zero_grad``, for ``trl.GRPOTrainer`` and ``erc_core.integrations.trl.ERCGRPOTrainer``.

Equal work: the same model and weights (restored before every cycle, untimed), the same prompts (cycle i draws the
same problems on both sides; TRL receives erc_core's formatted prompt strings), the same sampling (temperature,
full distribution: top_k 0 / top_p 1), the same completion length on both sides (``min_new_tokens =
max_new_tokens``: nobody stops early, every completion has exactly ``max_new_tokens`` tokens), the same number of
updates per generation on the whole batch, fp32, the same AdamW (``torch.optim.AdamW``, TRL ``optim=adamw_torch``),
lr / clip / grad clip, no SFT / KL / entropy terms (``sft_coef=0``), no gradient checkpointing. The shapes each
side processed are printed (sequences, prompt width, completion tokens) so the equality can be checked.

Phases: ``rollout`` (generation, decoding, rewards, advantages), ``old pass``, ``updates``. For TRL, the old pass
is the time spent in ``_get_per_token_logps_and_entropies`` inside ``_generate_and_score_completions`` and the
rollout the rest of that call. Timing: ``--threads`` torch threads (1 by default), ``--warmup`` untimed rounds,
then ``--repeats`` rounds; each round runs one cycle of every variant in a rotating order (drift hits all alike),
``gc.collect()`` before each (untimed). Medians per phase, and the ratio TRL / erc_core of the cycle time, median
over the rounds of the per-round ratios.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import dataclasses
import gc
import os
import platform
import statistics
import time

import torch

import erc_core.rl.train as T
from erc_core.rl.config import load_config
from erc_core.rl.models import num_params
from erc_core.rl.tasks import format_prompt
from trl_common import add_common_args, base_config, cpu_name, trl_classes, trl_trainers


def forced_length_generation_config(tok, max_new_tokens: int, temperature: float, greedy: bool = False):
    """erc_core's generation config plus ``min_new_tokens = max_new_tokens`` (every completion full length)."""
    gen = _ORIGINAL_GENERATION_CONFIG(tok, max_new_tokens, temperature, greedy)
    gen.min_new_tokens = max_new_tokens
    return gen


_ORIGINAL_GENERATION_CONFIG = T.generation_config


class PhaseClock:
    """Wraps a TRL trainer's ``_generate_and_score_completions`` and ``_get_per_token_logps_and_entropies`` to
    time its rollout and its old pass (the no-grad calls made inside the first)."""

    def __init__(self, trainer):
        self.rollout = self.old = 0.0
        self._inside = False
        gen, score = trainer._generate_and_score_completions, trainer._get_per_token_logps_and_entropies

        def timed_generate(*a, **k):
            t0, self._inside = time.perf_counter(), True
            try:
                return gen(*a, **k)
            finally:
                self._inside = False
                self.rollout += time.perf_counter() - t0

        def timed_score(*a, **k):
            if not self._inside:
                return score(*a, **k)
            t0 = time.perf_counter()
            try:
                return score(*a, **k)
            finally:
                self.old += time.perf_counter() - t0

        trainer._generate_and_score_completions = timed_generate
        trainer._get_per_token_logps_and_entropies = timed_score

    def take(self) -> tuple[float, float]:
        """(rollout without the old pass, old pass) since the last call, in seconds."""
        out = (self.rollout - self.old, self.old)
        self.rollout = self.old = 0.0
        return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="tiny", help="tiny (configs/base.yaml's tiny Llama) or smollm2")
    add_common_args(ap, repeats=10, warmup=2)
    ap.add_argument("--prompts", type=int, default=8, help="prompts per cycle")
    ap.add_argument("--group", type=int, default=8, help="completions per prompt")
    ap.add_argument("--tokens", type=int, default=8, help="completion length (forced on both sides)")
    ap.add_argument("--updates", type=int, default=4, help="optimizer updates per generation (whole batch)")
    args = ap.parse_args()

    trl_classes()  # exits here without TRL
    import transformers
    import trl

    base = base_config(args, model=args.model, num_threads=0, prompts_per_step=args.prompts, group_size=args.group,
                       max_new_tokens=args.tokens, mini_batch_size=args.prompts * args.group, micro_batch_size=0,
                       ppo_epochs=args.updates)
    cfgs = {"erc_core DAPO": load_config(base, {"erc": False}),
            "erc_core DAPO+ERC": load_config(base, {"erc": True})}
    T.generation_config = forced_length_generation_config  # erc_core.rl.train.generate looks it up at call time

    # ---- the shared model, weights and prompts
    shared = T.setup(load_config(base, {"warmstart_steps": args.warm_start if args.model == "tiny" else 0}))
    task, model, tok, style = shared.task, shared.model, shared.tok, shared.style
    state = copy.deepcopy(model.state_dict())
    rounds = args.warmup + args.repeats
    examples = [task.sample(T.seed_step(base, i), base.prompts_per_step) for i in range(rounds)]  # as rl_step(i)
    prompts = [[format_prompt(e, tok, style) for e in exs] for exs in examples]
    lookup = {p: e for ps, exs in zip(prompts, examples) for p, e in zip(ps, exs)}

    def reward(completions, prompts, **kw):
        return [float(task.reward(c, lookup[p])) for c, p in zip(completions, prompts)]

    flat = [p for ps in prompts for p in ps]
    # one generation reused for ppo_epochs updates on the whole batch, completions of exactly max_new_tokens
    trainers = trl_trainers(model, tok, flat, reward, base, "bench_cycle_",
                            per_device_train_batch_size=base.batch_size, steps_per_generation=1,
                            num_iterations=base.ppo_epochs, shuffle_dataset=False, top_k=0, top_p=1.0,
                            generation_kwargs={"min_new_tokens": base.max_new_tokens})
    if args.threads:
        torch.set_num_threads(args.threads)  # in case anything above changed it
    clocks = {name: PhaseClock(tr) for name, tr in trainers.items()}
    ec_runs = {name: dataclasses.replace(shared, cfg=cfg, model=copy.deepcopy(model)) for name, cfg in cfgs.items()}
    shapes: dict[str, tuple] = {}

    def cycle_erc_core(name: str, i: int) -> tuple[float, float, float]:
        run = ec_runs[name]
        run.model.load_state_dict(state)
        run.opt, run.sched = T.make_optimizer(run.cfg, run.model)
        gc.collect()
        res = T.rl_step(run, i)
        ro, rec = res.rollout, res.record
        shapes[name] = (tuple(ro.input_ids.shape), int(ro.response_mask.sum()))
        return rec["time_generate"], rec["time_old"], rec["time_update"]

    def cycle_trl(name: str, i: int) -> tuple[float, float, float]:
        tr = trainers[name]
        m = tr.model_wrapped
        tr.model.load_state_dict(state)
        tr._step, tr._buffered_inputs = 0, None  # the cycle's first training_step generates
        tr.current_gradient_accumulation_steps = 1
        tr.accelerator.gradient_state._set_sync_gradients(True)
        batch = [{"prompt": p} for p in prompts[i] for _ in range(base.group_size)]
        T.seed_step(base, i)
        clocks[name].take()
        gc.collect()
        t0 = time.perf_counter()
        for _ in range(base.ppo_epochs):
            tr.training_step(m, batch, None)
            grad_norm = tr._clip_grad_norm(m) if tr.args.max_grad_norm > 0 else None
            tr._get_grad_norm(m, grad_norm=grad_norm)
            tr.optimizer.step()
            m.zero_grad()
        total = time.perf_counter() - t0
        gen, old = clocks[name].take()
        inp = tr._buffered_inputs[0]
        n_prompt = inp["prompt_ids"].shape[1]
        shapes[name] = ((inp["prompt_ids"].shape[0], n_prompt + inp["completion_ids"].shape[1]),
                        int(inp["completion_mask"].sum()))
        return gen, old, total - gen - old

    runners = {**{n: cycle_erc_core for n in cfgs}, **{n: cycle_trl for n in trainers}}
    names = list(runners)
    times = {n: [] for n in names}
    t_start = time.perf_counter()
    for i in range(rounds):
        k = i % len(names)
        for name in names[k:] + names[:k]:
            phases = runners[name](name, i)
            if i >= args.warmup:
                times[name].append(phases)
    t_bench = time.perf_counter() - t_start

    # ---- report
    print(f"date {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}, torch {torch.__version__}, "
          f"trl {trl.__version__}, transformers {transformers.__version__}, python {platform.python_version()}")
    print(f"cpu {cpu_name()} ({os.cpu_count()} logical cores, load avg {os.getloadavg()[0]:.2f} at the end), "
          f"torch threads {torch.get_num_threads()}")
    print(f"model {args.model}: {num_params(model):,} params, vocab {len(tok)}, fp32; cycle: {base.prompts_per_step} "
          f"prompts x {base.group_size} completions of exactly {base.max_new_tokens} tokens, {base.ppo_epochs} "
          f"updates on the whole batch; {args.repeats} timed rounds after {args.warmup} warm-up, rotating order, "
          f"benchmark loop {t_bench:.1f} s")
    print("shapes of the last cycle (sequences x prompt+completion width, completion tokens): "
          + "; ".join(f"{n} {s[0][0]}x{s[0][1]}, {s[1]}" for n, s in shapes.items()))
    print("\n| variant | rollout | old pass | updates | cycle (ms, median) | TRL / erc_core (same ERC setting) |")
    print("|---|---:|---:|---:|---:|---:|")
    cycle = {n: [sum(p) for p in v] for n, v in times.items()}
    pair = {"TRL GRPO": "erc_core DAPO", "TRL+ERC": "erc_core DAPO+ERC"}
    for n in names:
        med = [statistics.median(p[j] for p in times[n]) * 1e3 for j in range(3)]
        ratio = ""
        if n in pair:
            r = [a / b for a, b in zip(cycle[n], cycle[pair[n]])]
            ratio = f"{statistics.median(r):.2f} (min {min(r):.2f}, max {max(r):.2f})"
        print(f"| {n} | {med[0]:.1f} | {med[1]:.1f} | {med[2]:.1f} | {statistics.median(cycle[n]) * 1e3:.1f} | "
              f"{ratio} |")


if __name__ == "__main__":
    main()
