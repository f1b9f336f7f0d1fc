"""DAPO vs DAPO+ERC training-step time, side by side in one process: same model, same rollout batch.

    python benchmarks/bench_train_step.py [--config configs/base.yaml] [--repeats 20] [--set key=value ...]

Each repeat restores the same weights, then times (interleaved, so drift hits both alike) the old pass and the
update phase (updates_per_step optimizer steps) with ERC off and on; generation is shared and timed once per repeat.
Prints the per-phase medians and the step-time ratio ERC / DAPO (goal <= 1.05). As in ``train()``, the old pass
keeps its first micro-batch's forward with its graph and the first update reuses it (``keep_graph=True``), so one
forward is counted in the old pass and not in the update.
"""

import argparse
import copy
import statistics
import time

import numpy as np
import torch

from erc_core.rl.train import (build_model, load_config, make_optimizer, make_task_from, old_pass, parse_set,
                            partition, rollout, seed_everything, update)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="configs/base.yaml")
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--set", nargs="*", default=[])
    args = ap.parse_args()
    base = load_config(args.config, dict(parse_set(args.set), warmstart_steps=0, progress=False))
    cfgs = {"dapo": load_config(base, {"erc": False}), "dapo+erc": load_config(base, {"erc": True})}
    if base.num_threads:  # as train() does
        torch.set_num_threads(base.num_threads)
    seed_everything(base.seed)
    task = make_task_from(base)
    model, tok = build_model(base, task)
    from erc_core.rl.models import warm_start
    warm_start(model, tok, task, steps=100, seed=base.seed)  # non-zero rewards -> non-zero advantages
    state = copy.deepcopy(model.state_dict())
    times = {name: {"old": [], "update": []} for name in cfgs}
    gen = []
    for rep in range(args.repeats):
        model.load_state_dict(state)
        t0 = time.perf_counter()
        ro = rollout(base, model, tok, task, np.random.default_rng(rep), "plain")
        gen.append(time.perf_counter() - t0)
        for name, cfg in (cfgs.items() if rep % 2 == 0 else reversed(cfgs.items())):
            model.load_state_dict(state)
            opt, _ = make_optimizer(cfg, model)
            ro.extra.clear()
            parts = partition(cfg, ro.keep)
            t0 = time.perf_counter()
            old_pass(cfg, model, None, ro, parts, keep_graph=True)  # as train() does
            t1 = time.perf_counter()
            update(cfg, model, opt, ro, parts)
            t2 = time.perf_counter()
            if rep > 0:  # the first repeat warms up allocators and kernels
                times[name]["old"].append(t1 - t0)
                times[name]["update"].append(t2 - t1)
    g = statistics.median(gen[1:])
    print(f"batch {base.batch_size} responses x <= {base.max_new_tokens} tokens, {base.updates_per_step} updates/step, "
          f"{args.repeats - 1} timed repeats, torch threads {torch.get_num_threads()}")
    print(f"{'variant':<10} {'generate':>9} {'old pass':>9} {'update':>9} {'step':>9}   (median seconds)")
    step = {}
    for name, t in times.items():
        o, u = statistics.median(t["old"]), statistics.median(t["update"])
        step[name] = g + o + u
        print(f"{name:<10} {g:9.4f} {o:9.4f} {u:9.4f} {step[name]:9.4f}")
    ratio = step["dapo+erc"] / step["dapo"]
    upd = statistics.median(times["dapo+erc"]["update"]) / statistics.median(times["dapo"]["update"])
    print(f"step-time ratio ERC/DAPO: {ratio:.3f} (update phase alone: {upd:.3f}; goal <= 1.05)")


if __name__ == "__main__":
    main()
