"""scripts/gpu_check.sh, the one-command GPU check, on its CPU path (``--device cpu --smoke``): the fused-entropy
checks, the entropy benchmark and two training steps of both variants run and write their files to one folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_gpu_check_cpu_smoke_writes_every_output(tmp_path):
    env = dict(os.environ, PYTHON=sys.executable, OMP_NUM_THREADS="1", ERC_CACHE=str(tmp_path / "cache"))
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_check.sh"), "--device", "cpu", "--smoke",
                           str(tmp_path / "out")], env=env, capture_output=True, text=True, timeout=900)
    out = tmp_path / "out"
    summary = (out / "summary.txt").read_text()
    assert proc.returncode == 0, (proc.stdout, proc.stderr, summary)
    checks = [json.loads(ln) for ln in (out / "entropy_checks.jsonl").read_text().splitlines()]
    assert len(checks) == 4 and all(c["ok"] for c in checks)
    assert {c["dtype"] for c in checks} == {"float32", "bfloat16"}
    assert all(c["fused_vs_eager_grad"] < 1e-5 and c["fused_vs_ref64_entropy"] < 1e-4 for c in checks)
    assert "| V" in (out / "bench_entropy.txt").read_text() or "vocab" in (out / "bench_entropy.txt").read_text()
    for run, erc in (("erc", True), ("dapo", False)):
        recs = [json.loads(ln) for ln in (out / run / "metrics.jsonl").read_text().splitlines()]
        assert [r["step"] for r in recs] == [0, 1, 2] and "eval_acc" in recs[-1]
        cfg = (out / run / "config.yaml").read_text()
        assert f"erc: {'true' if erc else 'false'}" in cfg and "answer_prefix: true" in cfg
        assert f"{run}: 2 RL steps" in summary
    assert "exit codes: checks 0, erc 0, dapo 0" in summary
    assert "torch" in (out / "env.txt").read_text()


def test_gpu_check_refuses_unknown_options(tmp_path):
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_check.sh"), "--bogus"], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 2 and "unknown option --bogus" in proc.stderr
