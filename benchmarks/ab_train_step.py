"""One RL training step of two erc_core checkouts, interleaved in ONE process: before/after figures of a change.

    git worktree add /tmp/before <commit>       # or any other checkout of this repository
    python benchmarks/ab_train_step.py --before /tmp/before [--repeats 32] [--clock cpu] [--set key=value ...]

The checkout this file belongs to ("after") and the one given ("before", imported under another package name) run
the same RL step in turn, A B B A ...: ``rl_step`` (rollout, old pass, updates) on the same tiny model
(warm-started 100 supervised steps, its weights restored before every step) with the same step seed, with
``configs/base.yaml`` (ERC on by default) plus ``--set`` overrides. Each side calls its own ``rl_step``; a checkout
from before ``rl_step`` existed runs its ``rollout`` -> ``old_pass`` -> ``update`` chain as its ``train()`` did
(``old_pass(keep_graph=True)`` where it exists). Prints per-phase medians, the ratio before/after of the step time
(median over the per-pair ratios), and whether both sides' step records (times aside) were identical (they must be
when the change does not touch the numerics). ``--clock cpu`` times process CPU time instead of wall time: less
sensitive to other jobs on a shared machine (cache and SMT contention still count).
"""

from __future__ import annotations

import argparse
import copy
import importlib
import importlib.util
import inspect
import os
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def load_checkout(name: str, root: Path):
    """``root/erc_core`` imported as package ``name``; returns its trainer module (``rl/train.py``, or
    ``train.py`` in a checkout from before the three layers)."""
    spec = importlib.util.spec_from_file_location(name, root / "erc_core" / "__init__.py",
                                                  submodule_search_locations=[str(root / "erc_core")])
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return importlib.import_module(f"{name}.rl.train" if (root / "erc_core/rl/train.py").exists() else f"{name}.train")


def one_step(T, after, cfg, model, tok, task, step: int, clock) -> tuple[tuple[float, float, float], dict]:
    """One RL step with checkout ``T``'s own functions: (rollout, old pass, update) seconds by ``clock`` and the
    step's statistics without times."""
    opt, sched = T.make_optimizer(cfg, model)
    if hasattr(T, "rl_step"):
        run = T.Run(cfg, task, model, tok, T.prompt_style(cfg, tok), None, opt, sched)
        rec = T.rl_step(run, step, clock=clock).record
        phases = rec["time_generate"], rec["time_old"], rec["time_update"]
    else:  # a checkout from before rl_step: its train() loop's chain, seeded as rl_step seeds
        rng = after.seed_step(cfg, step)
        kw = {"keep_graph": True} if "keep_graph" in inspect.signature(T.old_pass).parameters else {}
        t0 = clock()
        ro = T.rollout(cfg, model, tok, task, rng, "plain")
        t1 = clock()
        parts = T.partition(cfg, ro.keep)
        T.old_pass(cfg, model, None, ro, parts, **kw)
        t2 = clock()
        rec = T.update(cfg, model, opt, ro, parts)[0]
        phases = t1 - t0, t2 - t1, clock() - t2
    return phases, {k: v for k, v in rec.items() if not k.startswith("time_") and k != "tokens_per_s"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--before", required=True, help="path of the other checkout (its erc_core/ is imported)")
    ap.add_argument("--config", default=str(ROOT / "configs/base.yaml"))
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE")
    ap.add_argument("--repeats", type=int, default=32, help="pairs; the first 2 are not timed")
    ap.add_argument("--clock", choices=["wall", "cpu"], default="wall")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    torch.set_num_threads(args.threads)
    sys.path.insert(0, str(ROOT))
    sides = {"before": load_checkout("erc_core_before", Path(args.before).resolve()),
             "after": importlib.import_module("erc_core.rl.train")}
    after = sides["after"]
    over = dict(warmstart_steps=100, progress=False, erc=True, **after.parse_set(args.set))
    cfgs = {k: T.load_config(args.config, over) for k, T in sides.items()}
    run = after.setup(cfgs["after"])
    state = copy.deepcopy(run.model.state_dict())
    times = {k: {"rollout": [], "old pass": [], "update": []} for k in sides}
    stats: dict[int, list] = {}
    for rep in range(args.repeats):
        for name in (list(sides) if rep % 2 == 0 else list(sides)[::-1]):
            run.model.load_state_dict(state)
            phases, s = one_step(sides[name], after, cfgs[name], run.model, run.tok, run.task, rep + 1, clock)
            stats.setdefault(rep, []).append(s)
            if rep >= 2:
                for k, dt in zip(times[name], phases):
                    times[name][k].append(dt)
    same = all({k: a[k] for k in a.keys() & b.keys()} == {k: b[k] for k in a.keys() & b.keys()}
               for a, b in stats.values())
    step = {k: [sum(x) for x in zip(*t.values())] for k, t in times.items()}
    print(f"{args.repeats - 2} timed pairs, {args.clock} clock, torch threads {torch.get_num_threads()}, "
          f"load avg {os.getloadavg()[0]:.2f}; identical step statistics before/after: {same}")
    for name, t in times.items():
        print(f"{name:7s} " + "  ".join(f"{k} {statistics.median(v) * 1e3:6.1f}" for k, v in t.items())
              + f"  step {statistics.median(step[name]) * 1e3:6.1f} ms (medians)")
    r = [a / b for a, b in zip(step["before"], step["after"])]
    print(f"step time before/after: {statistics.median(r):.3f} (median of pairs; min {min(r):.3f}, max {max(r):.3f})")


if __name__ == "__main__":
    main()
