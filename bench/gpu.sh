#!/usr/bin/env bash
# The GPU figures of the speed targets in one run (a lent GPU machine gives minutes, not hours):
#   1. bench/throughput.py: one epoch of training and predict end to end, each against its
#      baseline, on IMDb reviews (bf16 on the GPU);
#   2. predict on a larger input with 1, 4, 8 and the default number of worker processes
#      sharing the GPU, with the GPU memory each process held;
#   3. time to accuracy: the imdb preset trained on the whole training split with random
#      initial embeddings (word2vec's pre-training runs on one core for minutes) for 2 and 4
#      epochs, and with batches of 512, each then evaluated on test.
# Usage, from the repository root: bench/gpu.sh IMDB_PARQUET [OUT_DIR]
# Environment: PY (python; default python3), ROWS (throughput sample, 20000), COPIES (5).
set -uo pipefail
data=${1:?usage: bench/gpu.sh IMDB_PARQUET [OUT_DIR]}
out=${2:-bench/gpu-out}
py=${PY:-python3}
rows=${ROWS:-20000}
copies=${COPIES:-5}
export PYTHONUNBUFFERED=1 COLUMNS=160  # rich wraps its lines at the terminal width
mkdir -p "$out"
work=$(mktemp -d)

step() { echo "=== $(date +%T) $*"; }

step "machine"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "no nvidia-smi"
"$py" -c "import torch, pytorch_lightning as pl; print('torch', torch.__version__, '| lightning', pl.__version__, '| cuda', torch.cuda.is_available())"
nproc

step "1. throughput.py (train, predict)"
timeout 240 "$py" bench/throughput.py --data "$data" --rows "$rows" --copies "$copies" --repeats 1 \
  --stages train predict --output "$out/throughput.md" 2>&1 | grep -v Warning

step "2. predict, worker processes sharing the GPU"
"$py" - "$data" "$work/big.parquet" "$rows" "$copies" <<'EOF'
import sys
import pyarrow as pa, pyarrow.compute as pc, pyarrow.parquet as pq
source, target, rows, copies = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
text = pq.read_table(source, columns=["text", "split"]).filter(pc.field("split") == "train")
text = text.select(["text"]).slice(0, rows)
pq.write_table(pa.concat_tables([text] * copies), target)
print(f"{text.num_rows * copies} rows")
EOF
"$py" -m hanclf train "$data" --config imdb --embeddings random --max-epochs 1 --quiet \
  --output "$work/model1" 2>&1 | tail -1
if command -v nvidia-smi >/dev/null; then
  nvidia-smi --query-compute-apps=pid,used_memory --format=csv,noheader -lms 500 > "$out/gpu-apps.csv" &
  sampler=$!
fi
for devices in 1 4 8 default; do
  flag=(--devices "$devices"); [ "$devices" = default ] && flag=()
  start=$(date +%s%N)
  timeout 120 "$py" -m hanclf predict "$work/model1" "$work/big.parquet" -o "$work/p.parquet" --force "${flag[@]}" 2>&1 | tail -1
  ms=$((($(date +%s%N) - start) / 1000000))
  echo "predict --devices $devices: $ms ms for $((rows * copies)) rows, $((rows * copies * 1000 / ms)) docs/s"
done
[ -n "${sampler:-}" ] && kill "$sampler"

step "3. time to accuracy (imdb preset, random initial embeddings, bf16 on a GPU)"
precision=32-true
"$py" -c "import torch; exit(0 if torch.cuda.is_available() else 1)" && precision=bf16-mixed
for run in "e2 --max-epochs 2" "e4 --max-epochs 4" "b512 --max-epochs 4 --set train.batch_size=512 --set train.lr=0.004"; do
  read -r name flags <<< "$run"
  # shellcheck disable=SC2086
  timeout 150 "$py" -m hanclf train "$data" --config imdb --embeddings random --precision "$precision" \
    --quiet $flags --output "$work/$name" 2>&1 | grep -E "epoch|saved"
  "$py" -m hanclf evaluate "$work/$name" "$data" --split test --output "$out/test-$name.json" > /dev/null 2>&1
  "$py" - "$work/$name/metrics.json" "$out/test-$name.json" "$name" <<'EOF'
import json, sys
m, test = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
print(f"{sys.argv[3]}: test accuracy {test['accuracy']:.4f}, valid {m['valid']['accuracy']:.4f} "
      f"(epoch {m['best_epoch'] + 1} of {m['epochs_run']}), train_seconds {m['train_seconds']} for "
      f"{m['train_documents']} documents, device {m['device']}")
EOF
done

step "4. yelp, one model, settings compared on valid only, while time is left (DEADLINE seconds)"
yelp=${YELP:-$(dirname "$data")/yelp_reviews.parquet}
for flags in "" "--set train.lr=0.001" "--set train.lr=0.004" "--set model.dropout=0.4" \
             "--set train.batch_size=32" "--set model.word_hidden=100 --set model.sent_hidden=100"; do
  [ -f "$yelp" ] && (( SECONDS + 90 < ${DEADLINE:-480} )) || break
  echo "yelp ${flags:-(preset, members 1)}"
  # shellcheck disable=SC2086
  timeout 120 "$py" -m hanclf train "$yelp" --config yelp --set model.members=1 --precision "$precision" \
    --quiet $flags --output "$work/yelp" --force 2>&1 | grep -E "epoch|saved"
done
rm -rf "$work"
step "done after $SECONDS s"
