#!/usr/bin/env bash
# Distilling a preset's ensemble into one model (`train --teacher`), on valid only. For each seed:
# the preset as it is (an ensemble: the teacher), the student's setting without a teacher (the
# preset's one model: --set model.members=1), and that setting trained with the seed's ensemble as
# its teacher at each teacher temperature and weight. Prints each run's valid accuracy and training time; test is left to `hanclf evaluate`
# once a setting is chosen. A run whose model directory exists is kept (a cut-off run picks up where it was).
# Usage: bench/distill.sh DATA PRESET OUT_DIR [train flags for every run, before its own...]
# Environment: SEEDS ("42 1"), TEMPS ("2"), WEIGHTS ("0.5 1.0"), PARALLEL (runs at a time; 2),
# STUDENT (the student's train flags; "--set model.members=1", or e.g. "--set train.max_epochs=8"
# for a born-again ensemble: the preset's ensemble taught by its own kind),
# HANCLF (the command; "hanclf", or "python3 -m hanclf" where it is not installed).
set -euo pipefail
data=${1:?usage: bench/distill.sh DATA PRESET OUT_DIR [train flags...]}
preset=${2:?preset}
out=${3:?out dir}
shift 3
seeds=${SEEDS:-42 1}
temps=${TEMPS:-2}
weights=${WEIGHTS:-0.5 1.0}
read -ra student <<< "${STUDENT:---set model.members=1}"
hanclf=${HANCLF:-hanclf}
mkdir -p "$out"

extra=("$@")
# NAME, then its train flags: trains in the background once fewer than PARALLEL runs are going.
start_run() {
  local name=$1; shift
  [ -f "$out/$name/metrics.json" ] && return
  while (( $(jobs -rp | wc -l) >= ${PARALLEL:-2} )); do wait -n || true; done
  {
    # shellcheck disable=SC2086
    $hanclf train "$data" --config "$preset" --quiet --force -o "$out/$name" "${extra[@]}" "$@" \
      > "$out/$name.log" 2>&1 || echo "$name FAILED"
    echo "$(date +%T) $name: $(tail -n 1 "$out/$name.log")"
  } &
}

# Teachers first: every student waits for its own.
for seed in $seeds; do
  start_run "teacher_s$seed" --seed "$seed"
done
wait
for seed in $seeds; do
  start_run "one_s$seed" --seed "$seed" "${student[@]}"
  for temp in $temps; do
    for weight in $weights; do
      start_run "student_T${temp}_w${weight}_s$seed" --seed "$seed" "${student[@]}" \
        --teacher "$out/teacher_s$seed" --set "train.teacher_weight=$weight" \
        --set "train.teacher_temperature=$temp"
    done
  done
done
wait

python3 - "$out" "$seeds" "$temps" "$weights" "${student[*]}" <<'EOF'
import json, statistics, sys
from pathlib import Path
out, (seeds, temps, weights), student = Path(sys.argv[1]), (a.split() for a in sys.argv[2:5]), sys.argv[5]
names = {"the preset (teacher)": "teacher", f"{student}": "one"} | {
    f"{student}, teacher temperature {t}, weight {w}": f"student_T{t}_w{w}" for t in temps for w in weights}
print("| run | " + " | ".join(f"valid, seed {s}" for s in seeds) + " | mean | train_seconds |")
print("|---|" + "---:|" * (len(seeds) + 2))
for label, stem in names.items():
    metrics = [json.loads((out / f"{stem}_s{s}" / "metrics.json").read_text()) for s in seeds]
    accs = [m["valid"]["accuracy"] for m in metrics]
    cells = [f"{a:.4f} (epoch {m['best_epoch'] + 1} of {m['epochs_run']})" for a, m in zip(accs, metrics)]
    seconds = " / ".join(f"{m['train_seconds']:.0f}" for m in metrics)
    print(f"| {label} | " + " | ".join(cells) + f" | {statistics.mean(accs):.4f} | {seconds} |")
EOF
