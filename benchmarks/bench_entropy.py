"""Benchmark: cost of ERC's full-vocabulary entropy next to the log-probs a trainer computes anyway.

For each vocabulary size V and (B, T), in ONE process and on the same logits, it times

- ``plain``: ``log_softmax + gather``, the token log-probs every PPO/GRPO trainer computes (the 1.0x reference);
- ``naive``: log_softmax, then the entropy as -sum(p * log p) from the materialised (B*T, V) probabilities;
- ``eager``: :func:`erc_core.entropy.logprobs_and_entropy` with ``fused=False`` (log-probs AND entropy, eager
  ops over cache-sized row blocks), and ``eager_chunk64`` the same with ``chunk_size=64``;
- ``auto``: the default ``fused=None``, which for these vocabularies is the torch.compile kernel, and
  ``auto_chunk64`` the same with ``chunk_size=64``. Its one-time compile is done in the warm-up of the first
  shape and reported separately (``compile s``), as is every later first call, so a recompile would show;

forward only (``no_grad``) and, unless ``--no-backward``, forward + backward of ``sum(w1 * logp) + sum(w2 * H)``
(``sum(w1 * logp)`` for plain), each relative to plain's. Calls are interleaved round-robin and the median is
reported, so machine noise hits all variants alike.

Memory: the peak EXTRA tensor memory of one forward call beyond the logits (outputs included), counted twice:

- ``alloc``: from the allocator's own events (torch.profiler with ``profile_memory``), which also sees the buffers
  a compiled kernel allocates outside the dispatcher;
- ``dispatch``: from the tensors the ops allocate (a TorchDispatchMode: the same on CPU and GPU, free of allocator
  caching). A compiled kernel is invisible there, and under a TorchDispatchMode the library runs eagerly anyway
  (torch.compile does not support such modes), so ``auto`` shows ``-`` in this column.

    python benchmarks/bench_entropy.py --threads 1     # CPU tables (a few minutes)
    python benchmarks/bench_entropy.py --device cuda    # on a GPU
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
import weakref

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from erc_core.entropy import logprobs_and_entropy


def plain(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    return torch.log_softmax(logits.float(), dim=-1).gather(-1, tokens.unsqueeze(-1)).squeeze(-1)


def naive(logits: torch.Tensor, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    logp_all = torch.log_softmax(logits.float(), dim=-1)
    return logp_all.gather(-1, tokens.unsqueeze(-1)).squeeze(-1), -(logp_all.exp() * logp_all).sum(-1)


def make_fns(chunk: int) -> dict:
    """name -> fn(logits, tokens) returning logp or (logp, entropy)."""
    return {
        "plain": plain,
        "naive": naive,
        "eager": lambda x, t: logprobs_and_entropy(x, t, fused=False),
        f"eager_chunk{chunk}": lambda x, t: logprobs_and_entropy(x, t, chunk_size=chunk, fused=False),
        "auto": lambda x, t: logprobs_and_entropy(x, t),
        f"auto_chunk{chunk}": lambda x, t: logprobs_and_entropy(x, t, chunk_size=chunk),
    }


def inputs(rows: int, v: int, device: str, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator(device=device).manual_seed(0)
    logits = (3 * torch.randn(rows, v, generator=g, device=device)).to(dtype)
    return logits, torch.randint(0, v, (rows,), generator=g, device=device)


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def fwd_bwd(fn, logits: torch.Tensor, tokens: torch.Tensor, w: torch.Tensor) -> None:
    """One forward + backward of ``sum(w * logp) + sum(w.flip(0) * H)`` (``sum(w * logp)`` for plain)."""
    logits.grad = None
    out = fn(logits, tokens)
    loss = (w * out[0]).sum() + (w.flip(0) * out[1]).sum() if isinstance(out, tuple) else (w * out).sum()
    loss.backward()


def time_all(fns: dict, call, reps: int, device: str) -> tuple[dict[str, float], dict[str, float]]:
    """Median wall time (s) of ``call(fn)`` for each fn over ``reps`` interleaved rounds, and the first call's."""
    first: dict[str, float] = {}
    for name, fn in fns.items():  # warm-up (and the compiled variants' compile, if not yet done)
        sync(device)
        t0 = time.perf_counter()
        call(fn)
        sync(device)
        first[name] = time.perf_counter() - t0
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(reps):
        for name, fn in fns.items():
            sync(device)
            t0 = time.perf_counter()
            call(fn)
            sync(device)
            times[name].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}, first


class PeakTensorMemory(TorchDispatchMode):
    """Counts the bytes of the tensors that ops inside allocate (views and the given inputs excluded) and keeps
    the peak of what is alive at once."""

    def __init__(self, *inputs: torch.Tensor) -> None:
        super().__init__()
        self.cur = self.peak = 0
        self.live = {x.untyped_storage().data_ptr() for x in inputs}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor) and t._base is None:
                key, n = t.untyped_storage().data_ptr(), t.untyped_storage().nbytes()
                if n and key not in self.live:
                    self.live.add(key)
                    self.cur += n
                    self.peak = max(self.peak, self.cur)
                    weakref.finalize(t, self._free, key, n)
        return out

    def _free(self, key: int, n: int) -> None:
        self.live.discard(key)
        self.cur -= n


def dispatch_peak_mib(fn, logits: torch.Tensor, tokens: torch.Tensor) -> float:
    """Peak extra tensor memory of one no-grad call, in MiB, as the ops inside a TorchDispatchMode allocate it."""
    with torch.no_grad(), PeakTensorMemory(logits, tokens) as mem:
        out = fn(logits, tokens)
        del out
    return mem.peak / 2**20


def alloc_peak_mib(call) -> float | None:
    """Peak of (bytes allocated - bytes freed) during ``call()``, in MiB, from the allocator events torch.profiler
    records with ``profile_memory=True`` (compiled kernels' buffers included). None if this torch lacks the API."""
    try:
        from torch._C._profiler import _EventType
        from torch.profiler import ProfilerActivity, profile
        acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
        with profile(activities=acts, profile_memory=True) as prof:
            call()
        stack, sizes = list(prof.profiler.kineto_results.experimental_event_tree()), []
        while stack:
            e = stack.pop()
            stack.extend(e.children)
            if e.tag == _EventType.Allocation:
                sizes.append((e.start_time_ns, e.extra_fields.alloc_size))
    except Exception:  # noqa: BLE001 -- a private profiler API: report nothing rather than fail the benchmark
        return None
    cur = peak = 0
    for _, n in sorted(sizes):
        cur += n
        peak = max(peak, cur)
    return peak / 2**20


def graph_count() -> int:
    """Graphs torch.compile has built in this process so far (a recompile adds one)."""
    from torch._dynamo.utils import counters
    return int(counters["stats"]["unique_graphs"])


def table(title: str, cols: list[str], rows: list[list[str]]) -> None:
    print(f"\n{title}\n\n| " + " | ".join(cols) + " |")
    print("|" + "|".join("-" * (len(c) + 2) for c in cols) + "|")
    for r in rows:
        print("| " + " | ".join(r) + " |")


def run_shape(fns: dict, v: int, b: int, t: int, args, dtype: torch.dtype) -> dict:
    """Timings and memory of every variant on one (B*T, V) input."""
    logits, tokens = inputs(b * t, v, args.device, dtype)
    res = {"mib": logits.numel() * logits.element_size() / 2**20}
    with torch.no_grad():
        res["fwd"], res["fwd_first"] = time_all(fns, lambda fn: fn(logits, tokens), args.reps, args.device)
    with torch.no_grad():
        res["alloc"] = {n: alloc_peak_mib(lambda fn=fn: fn(logits, tokens)) for n, fn in fns.items()}
    res["dispatch"] = {n: dispatch_peak_mib(fn, logits, tokens) for n, fn in fns.items() if not n.startswith("auto")}
    if not args.no_backward:
        x = logits.clone().requires_grad_()
        w = torch.linspace(-1.0, 1.0, b * t, device=args.device)
        res["bwd"], res["bwd_first"] = time_all(fns, lambda fn: fwd_bwd(fn, x, tokens, w), args.reps_backward,
                                                args.device)
        res["bwd_alloc"] = {}
        for n, fn in fns.items():
            x.grad = None  # freed before, not during, the measured call
            res["bwd_alloc"][n] = alloc_peak_mib(lambda fn=fn: fwd_bwd(fn, x, tokens, w))
    return res


def fmt_mib(x: float | None) -> str:
    return "-" if x is None else f"{x:.1f}"


def shape_sweep(v: int, args, dtype: torch.dtype) -> tuple[int, float]:
    """New graphs built (and seconds spent) by auto calls on row counts never seen before, as training with varying
    T gives; forward only and forward + backward."""
    before, t0 = graph_count(), time.perf_counter()
    for rows in (1, 3, 37, 255, 513):
        logits, tokens = inputs(rows, v, args.device, dtype)
        with torch.no_grad():
            logprobs_and_entropy(logits, tokens, temperature=0.7)
        if not args.no_backward:
            x = logits.requires_grad_()
            lp, h = logprobs_and_entropy(x, tokens, temperature=1.3, chunk_size=50)
            (lp.sum() + h.sum()).backward()
    return graph_count() - before, time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    p.add_argument("--vocab", type=int, nargs="+", default=[32_000, 50_257, 151_936])
    p.add_argument("--shapes", nargs="+", default=["1x256", "4x256"], help="BxT pairs")
    p.add_argument("--chunk", type=int, default=64, help="rows per chunk for the chunked variants")
    p.add_argument("--reps", type=int, default=7)
    p.add_argument("--reps-backward", type=int, default=3)
    p.add_argument("--no-backward", action="store_true", help="skip the forward + backward timings")
    p.add_argument("--cold-compile", action="store_true",
                   help="disable torch.compile's on-disk caches, so the compile time is a first-ever compile")
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.cold_compile:
        torch.compiler.config.force_disable_caches = True
    dtype = getattr(torch, args.dtype)
    fns = make_fns(args.chunk)
    dev = torch.cuda.get_device_name() if args.device == "cuda" else (platform.processor() or platform.machine())
    load = " / ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "?"
    print(f"# torch {torch.__version__}, {args.device} ({dev}, {os.cpu_count()} CPUs, load average {load}), "
          f"{torch.get_num_threads()} torch threads, logits {args.dtype}; median of {args.reps} (forward) and "
          f"{args.reps_backward} (forward + backward) interleaved reps; inductor disk cache "
          f"{'disabled' if args.cold_compile else 'enabled'}")
    results = {}
    for v in args.vocab:
        for shape in args.shapes:
            b, t = (int(x) for x in shape.split("x"))
            results[(v, shape)] = run_shape(fns, v, b, t, args, dtype)
            print(f"# done V={v} {shape}", flush=True)
    sweep_graphs, sweep_s = shape_sweep(args.vocab[0] + 1, args, dtype)

    names = list(fns)
    first = results[(args.vocab[0], args.shapes[0])]
    table("Forward (no_grad): ms, and x = time / plain's",
          ["V", "B x T", "logits MiB"] + [f"{n} ms (x)" for n in names],
          [[str(v), s, f"{r['mib']:.0f}"] + [f"{r['fwd'][n] * 1e3:.1f} ({r['fwd'][n] / r['fwd']['plain']:.2f}x)"
                                              for n in names] for (v, s), r in results.items()])
    table("Peak extra memory of one forward call, MiB beyond the logits: alloc / dispatch",
          ["V", "B x T"] + names,
          [[str(v), s] + [f"{fmt_mib(r['alloc'][n])} / {fmt_mib(r['dispatch'].get(n))}" for n in names]
           for (v, s), r in results.items()])
    if not args.no_backward:
        table("Forward + backward: ms, and x = time / plain's (peak extra MiB, alloc, gradient included)",
              ["V", "B x T"] + names,
              [[str(v), s] + [f"{r['bwd'][n] * 1e3:.0f} ({r['bwd'][n] / r['bwd']['plain']:.2f}x, "
                              f"{fmt_mib(r['bwd_alloc'][n])})" for n in names] for (v, s), r in results.items()])
    print("\nFirst call minus median, s (compile and other one-time costs; a recompile would show here):\n")
    for (v, s), r in results.items():
        extra = {n: r["fwd_first"][n] - r["fwd"][n] for n in ("auto", f"auto_chunk{args.chunk}")}
        if "bwd" in r:
            extra.update({f"{n} fwd+bwd": r["bwd_first"][n] - r["bwd"][n]
                          for n in ("auto", f"auto_chunk{args.chunk}")})
        print(f"- V={v} {s}: " + ", ".join(f"{n} {x:.2f}" for n, x in extra.items()))
    compile_s = [first["fwd_first"]["auto"] - first["fwd"]["auto"]]
    if "bwd" in first:
        compile_s.append(first["bwd_first"]["auto"] - first["bwd"]["auto"])
    print("\ncompile s (first auto forward[, then first auto forward+backward]): "
          + ", ".join(f"{x:.1f}" for x in compile_s))
    print(f"graphs compiled in this process: {graph_count()}; shape sweep (rows 1, 3, 37, 255, 513 at "
          f"V={args.vocab[0] + 1}, new temperatures, chunked backward): {sweep_graphs} new graphs, {sweep_s:.1f} s")


if __name__ == "__main__":
    main()
