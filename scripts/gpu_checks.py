"""Checks of the fused entropy kernel (torch.compile: Triton on CUDA, C++ on CPU) against the eager path, as a plain
script (no pytest needed): forward (log-probs, entropies) and backward (gradient of ``sum(w1 * logp) +
sum(w2 * H)`` w.r.t. the logits), fp32 and bf16 logits, several vocabularies, temperatures and chunk sizes, plus a
float64 reference. Writes one JSON line per case to ``--out`` and exits 1 if any case fails.

    python scripts/gpu_checks.py --device cuda --out gpu_out/entropy_checks.jsonl
    python scripts/gpu_checks.py --device cpu --smoke --out /tmp/checks.jsonl     # small shapes (the CI path)

Tolerances: fp32 logits must agree with the float64 reference to 1e-4 (entropy, log-probs; relative to 1 + |x|)
and 1e-5 (gradient); bf16 logits are upcast to fp32 inside both paths, so the fused and eager results on the SAME
bf16 logits must agree as closely as fp32 ones do (the bf16 rounding of the logits is common to both).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from erc_core.entropy import logprobs_and_entropy


def case(device: str, rows: int, v: int, dtype: torch.dtype, temperature: float, chunk: int | None,
         seed: int = 0) -> dict:
    """Fused vs eager vs float64 on one random (rows, V) input: max errors of logp, H and the logits' gradient."""
    g = torch.Generator(device="cpu").manual_seed(seed)
    base = (4 * torch.randn(rows, v, generator=g, dtype=torch.float64))
    base[0, : v // 3] = -1e4  # a row with a third of the vocabulary (nearly) masked out
    tokens = torch.randint(0, v, (rows,), generator=g)
    w1, w2 = torch.randn(rows, generator=g, dtype=torch.float64), torch.randn(rows, generator=g, dtype=torch.float64)
    logits = base.to(dtype)
    out = {}
    for name, fused, dt in (("fused", True, dtype), ("eager", False, dtype), ("ref64", False, torch.float64)):
        x = logits.to(device=device, dtype=dt).detach().clone().requires_grad_()
        t0 = time.perf_counter()
        lp, h = logprobs_and_entropy(x, tokens.to(device), temperature=temperature,
                                     chunk_size=None if name == "ref64" else chunk, fused=fused)
        (lp.double() * w1.to(device)).sum().add((h.double() * w2.to(device)).sum()).backward()
        if device == "cuda":
            torch.cuda.synchronize()
        out[name] = (lp.detach().double().cpu(), h.detach().double().cpu(), x.grad.double().cpu(),
                     time.perf_counter() - t0)

    def err(a, b, i):
        return float(((a[i] - b[i]).abs() / (1 + b[i].abs())).max())

    rec = dict(device=device, rows=rows, vocab=v, dtype=str(dtype).replace("torch.", ""), temperature=temperature,
               chunk=chunk, fused_vs_eager_logp=err(out["fused"], out["eager"], 0),
               fused_vs_eager_entropy=err(out["fused"], out["eager"], 1),
               fused_vs_eager_grad=float((out["fused"][2] - out["eager"][2]).abs().max()),
               fused_vs_ref64_logp=err(out["fused"], out["ref64"], 0),
               fused_vs_ref64_entropy=err(out["fused"], out["ref64"], 1),
               fused_vs_ref64_grad=float((out["fused"][2] - out["ref64"][2]).abs().max()),
               finite=bool(all(torch.isfinite(t).all() for t in out["fused"][:3])),
               seconds_fused=out["fused"][3], seconds_eager=out["eager"][3])
    tol = dict(logp=1e-4, entropy=1e-4, grad=1e-5)
    ok = rec["finite"] and all(rec[f"fused_vs_eager_{k}"] <= t for k, t in tol.items())
    if dtype == torch.float32:  # against float64 only where the logits are the same numbers
        ok = ok and all(rec[f"fused_vs_ref64_{k}"] <= t for k, t in tol.items())
    rec["ok"] = bool(ok)
    return rec


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    ap.add_argument("--smoke", action="store_true", help="small shapes only (CPU CI)")
    ap.add_argument("--out", required=True, help="JSON-lines file, one record per case")
    args = ap.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda but torch.cuda.is_available() is False", file=sys.stderr)
        return 2
    if args.smoke:
        grid = [(5, 4099, dt, t, c) for dt in (torch.float32, torch.bfloat16) for t, c in ((1.0, None), (0.7, 2))]
    else:
        grid = [(r, v, dt, t, c) for v in (32_000, 49_152, 151_936) for dt in (torch.float32, torch.bfloat16)
                for r, t, c in ((1, 1.0, None), (257, 1.0, None), (257, 0.7, 64), (2048, 1.0, 512))]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    failed = 0
    with open(args.out, "w") as f:
        for rows, v, dt, t, c in grid:
            rec = case(args.device, rows, v, dt, t, c)
            f.write(json.dumps(rec) + "\n")
            f.flush()
            failed += not rec["ok"]
            print(f"{'ok  ' if rec['ok'] else 'FAIL'} {rec['dtype']:8s} rows={rows:5d} V={v:6d} T={t} chunk={c}: "
                  f"fused-eager logp {rec['fused_vs_eager_logp']:.1e} H {rec['fused_vs_eager_entropy']:.1e} "
                  f"grad {rec['fused_vs_eager_grad']:.1e}; fused-fp64 H {rec['fused_vs_ref64_entropy']:.1e} "
                  f"grad {rec['fused_vs_ref64_grad']:.1e}", flush=True)
    print(f"{len(grid) - failed}/{len(grid)} cases passed ({args.device})")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
