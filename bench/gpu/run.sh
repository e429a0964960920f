#!/usr/bin/env bash
# The GPU run of issue 22, in one call (<= 8 minutes wall on an H100/H200):
#   1. checks the GPU (nvidia-smi, torch.cuda) and the imports train/ needs;
#   2. bench/train_gpu.py: GPT-2-124M shape, bf16, compile, B=32, T=1024: plain PyTorch vs
#      train() vs FSDP2 at world size 1, each twice (the first warms caches): tokens/s, MFU,
#      peak memory, SDPA backend (and forced flash), then the bf16 parity check (50 steps);
#   3. the GPU scaling sweep ($SWEEP_CONFIG, default configs/sweep/gpu.yaml; skipped when absent)
#      under a time limit ($SWEEP_S), then the fit and held-out error of whatever finished.
# Writes under $OUT (<= 8 files, as the device tool brings back): gpu.txt, train_gpu.json,
# sweep_summary.json, sweep.md, summary.md, run.log.
#
# On the GPU machine (the image's own python3 and CUDA torch; pydantic carried as wheels that
# bench/gpu/prepare.sh downloaded here into .whl/):
#   run(command="bash bench/gpu/run.sh", carry=[".whl"], timeout_s=540)
# Knobs (environment): BUDGET_S (whole script, default 470 s), BENCH_S (bench's share, 70%),
# SWEEP_S (sweep; default what is left), SWEEP_CONFIG, BENCH_STEPS, BENCH_WARMUP, PARITY_STEPS.
# A shorter rerun: BUDGET_S=240 SWEEP_CONFIG=none bash bench/gpu/run.sh
# On CPU, the same code paths tiny (CI runs this; seconds to ~2 minutes):
#   bash bench/gpu/run.sh --dry-run
set -uo pipefail
cd "$(dirname "$0")/../.."
DRY=0
[[ "${1:-}" == "--dry-run" ]] && DRY=1
PY=${PYTHON:-python3}
export PYTHONPATH=".${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 DO_NOT_TRACK=1 \
  TOKENIZERS_PARALLELISM=false
if [[ -z "${OUT:-}" ]]; then OUT=$(mktemp -d /tmp/sluice-gpu-XXXX); fi
mkdir -p "$OUT"
WORK=$(mktemp -d /tmp/sluice-gpu-work-XXXX)
LOG="$OUT/run.log"
: >"$LOG"
say() { echo "== $(date -u +%H:%M:%S) $*" | tee -a "$LOG"; }
T0=$SECONDS

# pydantic and friends, when this python lacks them and wheels were carried
if ! "$PY" -c "import pydantic" 2>/dev/null; then
  if ls .whl/*.whl >/dev/null 2>&1; then
    say "installing carried wheels: $(ls .whl | tr '\n' ' ')"
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target "$WORK/site" .whl/*.whl >>"$LOG" 2>&1 || { say "wheel install failed"; exit 2; }
    export PYTHONPATH="$PYTHONPATH:$WORK/site"
  else
    say "python lacks pydantic and no .whl/ was carried: run bench/gpu/prepare.sh here first"
    exit 2
  fi
fi

if [[ $DRY == 1 ]]; then
  export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}  # tiny models: threads only contend
  BENCH_ARGS=(--cpu-smoke --steps 3 --warmup 2 --batch 2 --repeats 2 --shard-mb 0.2
              --parity-steps 4)
  SWEEP_CONFIG=${SWEEP_CONFIG:-dry-run}
  BUDGET_S=${BUDGET_S:-900}
else
  BENCH_ARGS=(--steps "${BENCH_STEPS:-50}" --warmup "${BENCH_WARMUP:-10}" --batch 32
              --repeats 2 --shard-mb 4 --parity-steps "${PARITY_STEPS:-50}")
  SWEEP_CONFIG=${SWEEP_CONFIG:-configs/sweep/gpu.yaml}
  BUDGET_S=${BUDGET_S:-470}  # the whole script: <= 8 minutes with the summary
fi
BENCH_S=${BENCH_S:-$((BUDGET_S * 7 / 10))}  # the bench's share; the sweep gets what is left

say "1. device and imports"
{
  if [[ $DRY == 0 ]]; then nvidia-smi || echo "nvidia-smi failed"; fi
  "$PY" - <<'PY'
import sys, torch, pyarrow, sentencepiece, numpy, pydantic, yaml, tqdm
import train.trainer, train.sweep_cli  # everything the run imports
print(f"python {sys.version.split()[0]}, torch {torch.__version__}, cuda {torch.version.cuda}, "
      f"pyarrow {pyarrow.__version__}, numpy {numpy.__version__}, pydantic {pydantic.__version__}")
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print(f"GPU: {p.name}, {p.total_memory / 2**30:.0f} GiB, cc {p.major}.{p.minor}, "
          f"{p.multi_processor_count} SMs")
else:
    print("GPU: none (torch.cuda.is_available() is False)")
PY
} >"$OUT/gpu.txt" 2>&1
status=$?
cat "$OUT/gpu.txt" | tee -a "$LOG"
if [[ $status != 0 ]]; then say "imports failed"; exit 3; fi
if [[ $DRY == 0 ]] && ! grep -q "^GPU: .*SMs" "$OUT/gpu.txt"; then say "no GPU"; exit 3; fi

say "2. throughput + parity: bench/train_gpu.py ${BENCH_ARGS[*]}"
timeout --kill-after=20 "$BENCH_S" "$PY" bench/train_gpu.py "${BENCH_ARGS[@]}" \
  --json "$OUT/train_gpu.json" --markdown "$WORK/train_gpu.md" >>"$LOG" 2>&1
bench_rc=$?
[[ $bench_rc == 124 ]] && say "bench stopped at ${BENCH_S}s: train_gpu.json holds the runs done"
say "bench exit $bench_rc"

SWEEP_S=${SWEEP_S:-$((BUDGET_S - (SECONDS - T0) - 15))}
say "3. scaling sweep: $SWEEP_CONFIG (limit ${SWEEP_S}s)"
sweep_rc=0
if (( SWEEP_S < 30 )); then
  say "less than 30 s left: sweep skipped"
elif [[ "$SWEEP_CONFIG" == "dry-run" || -f "$SWEEP_CONFIG" ]]; then
  # SIGINT at the limit: sweep.py then fits the runs that finished (SIGKILL 60 s later)
  dry=()
  [[ $DRY == 1 ]] && dry=(--dry-run)
  timeout --signal=INT --kill-after=60 "$SWEEP_S" "$PY" bench/gpu/sweep.py \
    --config "$SWEEP_CONFIG" --out "$WORK/sweep" "${dry[@]}" >>"$LOG" 2>&1
  sweep_rc=$?
  say "sweep exit $sweep_rc"
  for f in sweep_summary.json sweep.md; do
    [[ -f "$WORK/sweep/$f" ]] && cp "$WORK/sweep/$f" "$OUT/$f"
  done
else
  say "no sweep config at $SWEEP_CONFIG: sweep skipped"
fi

say "4. summary"
{
  echo "# GPU run ($(date -u +%Y-%m-%dT%H:%MZ), $((SECONDS - T0)) s wall)"
  echo
  grep -E "^(GPU|python)" "$OUT/gpu.txt"
  echo
  if [[ -f "$WORK/train_gpu.md" ]]; then cat "$WORK/train_gpu.md"; else echo "bench failed (exit $bench_rc): see run.log"; fi
  echo
  if [[ -f "$OUT/sweep.md" ]]; then cat "$OUT/sweep.md"; else echo "sweep: no result (exit $sweep_rc; config $SWEEP_CONFIG)"; fi
} >"$OUT/summary.md"
cat "$OUT/summary.md"
rm -rf "$WORK"
[[ $bench_rc == 0 ]]
