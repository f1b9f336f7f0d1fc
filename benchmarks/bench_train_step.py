"""DAPO vs DAPO+ERC training-step time, side by side in one process: same model, same rollout batch.

    python benchmarks/bench_train_step.py [--config configs/base.yaml] [--repeats 20] [--set key=value ...]

Each repeat restores the same weights (the config's model, warm-started 100 supervised steps), then runs one RL
step (``erc_core.rl.train.rl_step``, as ``train()`` does) with ERC off and on, interleaved so that drift hits both
alike; both sample the same batch (same weights, same step seed). Prints the per-phase medians (generation, old
pass, update phase = updates_per_step optimizer steps) and the step-time ratio ERC / DAPO (goal <= 1.05). As in
``train()``, the old pass keeps its first micro-batch's forward with its graph and the first update reuses it, so
one forward is counted in the old pass and not in the update.
"""

import argparse
import copy
import statistics

import torch

from erc_core.rl.config import load_config, parse_set
from erc_core.rl.train import make_optimizer, rl_step, setup

PHASES = {"generate": "time_generate", "old pass": "time_old", "update": "time_update"}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="configs/base.yaml")
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--set", nargs="*", default=[])
    args = ap.parse_args()
    # warm start: non-zero rewards -> non-zero advantages
    base = load_config(args.config, dict(parse_set(args.set), warmstart_steps=100, progress=False))
    cfgs = {"dapo": load_config(base, {"erc": False}), "dapo+erc": load_config(base, {"erc": True})}
    if base.num_threads:  # as train() does
        torch.set_num_threads(base.num_threads)
    runs = {name: setup(cfg) for name, cfg in cfgs.items()}  # the same seed: the same warm-started weights
    state = copy.deepcopy(runs["dapo"].model.state_dict())
    times = {name: {k: [] for k in PHASES} for name in cfgs}
    for rep in range(args.repeats):
        for name in (list(cfgs) if rep % 2 == 0 else list(cfgs)[::-1]):
            run = runs[name]
            run.model.load_state_dict(state)
            run.opt, run.sched = make_optimizer(run.cfg, run.model)
            rec = rl_step(run, rep + 1).record
            if rep > 0:  # the first repeat warms up allocators and kernels
                for k, key in PHASES.items():
                    times[name][k].append(rec[key])
    print(f"batch {base.batch_size} responses x <= {base.max_new_tokens} tokens, {base.updates_per_step} updates/step, "
          f"{args.repeats - 1} timed repeats, torch threads {torch.get_num_threads()}")
    print(f"{'variant':<10} {'generate':>9} {'old pass':>9} {'update':>9} {'step':>9}   (median seconds)")
    step = {}
    for name, t in times.items():
        g, o, u = (statistics.median(t[k]) for k in PHASES)
        step[name] = g + o + u
        print(f"{name:<10} {g:9.4f} {o:9.4f} {u:9.4f} {step[name]:9.4f}")
    ratio = step["dapo+erc"] / step["dapo"]
    upd = statistics.median(times["dapo+erc"]["update"]) / statistics.median(times["dapo"]["update"])
    print(f"step-time ratio ERC/DAPO: {ratio:.3f} (update phase alone: {upd:.3f}; goal <= 1.05)")


if __name__ == "__main__":
    main()
