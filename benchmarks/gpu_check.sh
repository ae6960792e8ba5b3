#!/usr/bin/env bash
# Every GPU check of the project in one call (at most ~8 minutes on a GPU), full log under $OUT, one table last.
#   bash benchmarks/gpu_check.sh            # on a machine with a GPU and the project installed
#   bash benchmarks/gpu_check.sh --smoke    # tiny sizes on the CPU, one precision and dtype: known to work beforehand
# Checks: the callbacks' overhead in bf16-mixed and 16-mixed; k-centers at ImageNet size (N=1,281,167,
# d=512, budget 128,117) in float16 and float32 against the read bandwidth measured on the card; one
# epoch's batches (digits, CIFAR-size, Imagenette-size) on both data paths; a short 16-mixed
# `lightning-proxy fit` with every callback; fastText's and VDCNN9's training steps per second against
# VDCNN29's in bf16-mixed (SVP's text proxies against its target).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-$(mktemp -d)}"
mkdir -p "$OUT"
LOG="$OUT/gpu_check.log"
SUMMARY="$OUT/gpu_check_table.md"
: > "$LOG"
if [[ "${1:-}" == "--smoke" ]]; then
  DEVICE=cpu; ACCEL=cpu; STEPS=4; REPEATS=1; N=3000; D=64; BUDGET=30; FIT_EPOCHS=1; PRECISION16=bf16-mixed
  POOLS=digits; POOL=2000; EPOCHS=1; BATCH=16; PRECISIONS="bf16-mixed"; DTYPES=float32
  TEXT="--steps 3 --warmup 1 --repeats 1 --batch-size 8 --char-length 128 --buckets 10000"
else
  DEVICE=cuda; ACCEL=gpu; STEPS=200; REPEATS=3; N=1281167; D=512; BUDGET=128117; FIT_EPOCHS=3; PRECISION16=16-mixed
  POOLS="digits cifar imagenette"; POOL=50000; EPOCHS=2; BATCH=128; PRECISIONS="bf16-mixed 16-mixed"; DTYPES="float16 float32"
  TEXT="--steps 50 --warmup 5 --repeats 3"
fi
STATUS=0
printf '| check | result |\n| --- | --- |\n' > "$SUMMARY"

check() {  # check NAME GREP-PATTERN COMMAND...: run it, log everything, put its matching lines in the table
  local name="$1" pattern="$2"; shift 2
  echo "=== $name: $*" >> "$LOG"
  local start=$SECONDS
  if "$@" > "$OUT/step.log" 2>&1; then
    local found
    found=$(sed 's/.*\r//' "$OUT/step.log" | grep -E "$pattern" | tr '\n' ' ' | sed 's/|/\//g; s/  */ /g')
    printf '| %s | %s (%ss) |\n' "$name" "${found:-done}" "$((SECONDS - start))" >> "$SUMMARY"
  else
    printf '| %s | FAILED, see %s |\n' "$name" "$LOG" >> "$SUMMARY"
    STATUS=1
  fi
  cat "$OUT/step.log" >> "$LOG"
}

for precision in $PRECISIONS; do
  check "callbacks overhead, $precision" "^median step" \
    python benchmarks/callback_overhead.py --accelerator "$ACCEL" --precision "$precision" --steps "$STEPS" \
      --repeats "$REPEATS" --pool "$POOL" --epochs "$EPOCHS" --batch-size "$BATCH"
done
for dtype in $DTYPES; do
  check "k-centers N=$N d=$D budget=$BUDGET, $dtype" "greedy_k_centers|bandwidth" \
    python benchmarks/kcenters.py --device "$DEVICE" --n "$N" --d "$D" --budget "$BUDGET" --dtype "$dtype" \
      --data gaussian --skip svp plain
done
check "one epoch's batches, both data paths" "^\| (digits|cifar|imagenette)" \
  python benchmarks/data_path.py --device "$DEVICE" --repeats "$REPEATS" --pools $POOLS
check "lightning-proxy fit, $PRECISION16, every callback" "ranking files|fit seconds" \
  bash -c "start=\$SECONDS; lightning-proxy fit --config configs/digits.yaml --trainer.accelerator $ACCEL \
    --trainer.precision $PRECISION16 --trainer.max_epochs $FIT_EPOCHS --trainer.enable_progress_bar false \
    --trainer.default_root_dir $OUT/fit --trainer.logger.init_args.save_dir $OUT/fit \
    && ls $OUT/fit/digits/version_0/*.npz | wc -l | sed 's/^/ranking files: /' \
    && echo \"fit seconds \$((SECONDS - start))\""
check "text models' training steps, bf16-mixed" "^\| (vdcnn|fasttext)" \
  python benchmarks/text_models.py --device "$DEVICE" --precision bf16-mixed $TEXT
rm -f "$OUT/step.log"
echo
cat "$SUMMARY"
exit $STATUS
