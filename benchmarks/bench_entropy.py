"""Benchmark: cost of ERC's full-vocabulary entropy next to the log-probs a trainer computes anyway.

For each vocabulary size V and (B, T), in ONE process and on the same logits, it times

- ``plain``: ``log_softmax + gather``, the token log-probs every PPO/GRPO trainer computes (the 1.0x reference);
- ``naive``: log_softmax, then the entropy as -sum(p * log p) from the materialised (B*T, V) probabilities;
- ``ours``: :func:`erc_core.entropy.logprobs_and_entropy` (log-probs AND entropy in one pass) with automatic
  blocks, with ``chunk_size`` rows at a time, and with ``fused=True`` (torch.compile; the one-time compile is
  done in the warm-up and not timed);

and the peak EXTRA tensor memory of each call beyond the logits (outputs included), counted from the tensors
its ops allocate (a TorchDispatchMode: the same on CPU and GPU, free of allocator caching). Calls are interleaved
round-robin and the median is reported, so machine noise hits all variants alike.

    python benchmarks/bench_entropy.py                  # CPU table
    python benchmarks/bench_entropy.py --device cuda    # on a GPU
"""

from __future__ import annotations

import argparse
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


def make_fns(chunk: int, fused: bool) -> dict:
    fns = {
        "plain": plain,
        "naive": naive,
        "ours": lambda x, t: logprobs_and_entropy(x, t),
        f"ours_chunk{chunk}": lambda x, t: logprobs_and_entropy(x, t, chunk_size=chunk),
    }
    if fused:
        fns["ours_fused"] = lambda x, t: logprobs_and_entropy(x, t, fused=True)
    return fns


def inputs(rows: int, v: int, device: str, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator(device=device).manual_seed(0)
    logits = (3 * torch.randn(rows, v, generator=g, device=device)).to(dtype)
    return logits, torch.randint(0, v, (rows,), generator=g, device=device)


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def time_all(fns: dict, logits: torch.Tensor, tokens: torch.Tensor, reps: int) -> dict[str, float]:
    """Median wall time (s) of each function over ``reps`` interleaved rounds."""
    device = logits.device.type
    times: dict[str, list[float]] = {k: [] for k in fns}
    with torch.no_grad():
        for fn in fns.values():  # warm-up (and the fused variant's compile)
            fn(logits, tokens)
        for _ in range(reps):
            for name, fn in fns.items():
                sync(device)
                t0 = time.perf_counter()
                fn(logits, tokens)
                sync(device)
                times[name].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


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


def peak_extra_mib(fn, logits: torch.Tensor, tokens: torch.Tensor) -> float:
    """Peak extra tensor memory of one call, in MiB. A compiled kernel's internal buffers are not seen, but its
    outputs are (under this mode torch.compile may run the ops eagerly: then the eager numbers show)."""
    with torch.no_grad(), PeakTensorMemory(logits, tokens) as mem:
        out = fn(logits, tokens)
        del out
    return mem.peak / 2**20


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    p.add_argument("--vocab", type=int, nargs="+", default=[32_000, 50_257, 151_936])
    p.add_argument("--shapes", nargs="+", default=["1x256", "4x256"], help="BxT pairs")
    p.add_argument("--chunk", type=int, default=64, help="rows per chunk for the chunked variant")
    p.add_argument("--reps", type=int, default=7)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--no-fused", action="store_true", help="skip the torch.compile variant (needs a C++ compiler)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    fns = make_fns(args.chunk, not args.no_fused)
    dev = torch.cuda.get_device_name() if args.device == "cuda" else (platform.processor() or platform.machine())
    print(f"# torch {torch.__version__}, {args.device} ({dev}), {torch.get_num_threads()} threads, logits {args.dtype},"
          f" median of {args.reps} interleaved reps; MiB = peak extra tensor memory beyond the logits")
    cols = ["V", "B x T", "logits MiB"] + [f"{n} ms (x)" for n in fns] + [f"{n} MiB" for n in fns]
    print("| " + " | ".join(cols) + " |")
    print("|" + "|".join("-" * (len(c) + 2) for c in cols) + "|")
    for v in args.vocab:
        for shape in args.shapes:
            b, t = (int(x) for x in shape.split("x"))
            logits, tokens = inputs(b * t, v, args.device, dtype)
            times = time_all(fns, logits, tokens, args.reps)
            mem = {n: peak_extra_mib(fn, logits, tokens) for n, fn in fns.items()}
            cells = [str(v), shape, f"{logits.numel() * logits.element_size() / 2**20:.0f}"]
            cells += [f"{times[n] * 1e3:.1f} ({times[n] / times['plain']:.2f}x)" for n in fns]
            cells += [f"{mem[n]:.1f}" for n in fns]
            print("| " + " | ".join(cells) + " |", flush=True)
            del logits, tokens


if __name__ == "__main__":
    main()
