"""Where a tiny-model RL step's time goes: per-call overhead or arithmetic.

    python benchmarks/profile_step.py [--config configs/base.yaml] [--sizes 1 8 32 64 128 256] [--top 12]

Times the ONE forward the trainer uses (``erc_core.rl.train.score_tokens``: log-probs and entropies of a rollout's
responses) without and with its backward, for micro-batches of ``--sizes`` responses of one real rollout, then
profiles the trainer's 64-response forward + backward with ``torch.profiler`` (self CPU time per aten op). If the
time of a micro-batch grew little with its size, per-call overhead (Python, dispatch) would dominate and fusing
calls would pay; if it grows in proportion, the arithmetic does, and only fewer or faster FLOPs help.
"""

from __future__ import annotations

import argparse
import platform
import time

import torch
from torch.profiler import ProfilerActivity, profile

from erc_core.rl.config import load_config, parse_set
from erc_core.rl.train import rl_step, score_tokens, setup


def per_call_ms(fn, n: int = 40) -> float:
    """Mean time of one call over ``n`` calls after two warm-up calls, in milliseconds."""
    fn(), fn()
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t0) / n * 1e3


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="configs/base.yaml")
    ap.add_argument("--sizes", type=int, nargs="+", default=[1, 8, 32, 64, 128, 256])
    ap.add_argument("--top", type=int, default=12)
    ap.add_argument("--set", nargs="*", default=[])
    args = ap.parse_args()
    cfg = load_config(args.config, dict(parse_set(args.set), warmstart_steps=20, progress=False, erc=True))
    torch.set_num_threads(cfg.num_threads or torch.get_num_threads())
    run = setup(cfg)
    ro = rl_step(run, 1).rollout
    print(f"{platform.processor() or platform.machine()}, torch {torch.__version__} "
          f"({torch.backends.cpu.get_cpu_capability()}), {torch.get_num_threads()} thread(s); "
          f"rollout {tuple(ro.input_ids.shape)} (responses x prompt + response tokens)")

    def fwd_bwd(idx):
        logp, ent = score_tokens(cfg, run.model, ro, idx)
        (logp.sum() + ent.sum()).backward()

    print(f"{'responses':>9} {'forward ms':>11} {'fwd+bwd ms':>11} {'fwd+bwd per response':>21}")
    for b in args.sizes:
        idx = torch.arange(min(b, len(ro.input_ids)))
        with torch.no_grad():
            f = per_call_ms(lambda: score_tokens(cfg, run.model, ro, idx))
        fb = per_call_ms(lambda: fwd_bwd(idx))
        print(f"{len(idx):9d} {f:11.2f} {fb:11.2f} {fb / len(idx):21.3f}")
    idx = torch.arange(min(64, len(ro.input_ids)))
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(10):
            fwd_bwd(idx)
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.top))


if __name__ == "__main__":
    main()
