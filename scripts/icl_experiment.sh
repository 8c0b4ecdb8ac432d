#!/usr/bin/env bash
# The full in-context regression experiment behind docs/icl_regression.md (`make icl-experiment`).
# H=4 and H=1 softmax models train at the same time, one torch thread each (2 CPU cores together); then a
# linear-attention H=4 model (for the length-generalization curve), the analysis, figures and tables.
# Wall times go to RUN_DIR/*.time; the machine is shared, so they depend on its load (uptime is logged too).
set -euo pipefail
RUN_DIR=${RUN_DIR:-runs/icl}
FIG_DIR=${FIG_DIR:-docs/icl_regression}
PY=${PY:-.venv/bin/python}
STEPS=${STEPS:-60000}
LINEAR_STEPS=${LINEAR_STEPS:-20000}
SEED=${SEED:-0}
mkdir -p "$RUN_DIR" "$FIG_DIR"
train() {  # name, extra args...
    local name=$1; shift
    rm -f "$RUN_DIR/$name.pt" "$RUN_DIR/$name.json"
    { uptime; nproc; /usr/bin/time -f "wall %e s, user %U s, sys %S s" \
        nice -n 10 "$PY" -m interp icl train --out "$RUN_DIR/$name.pt" --seed "$SEED" --threads 1 --no-progress "$@"; \
      uptime; } > "$RUN_DIR/$name.time" 2>&1
}
start=$(date +%s)
train h4 --heads 4 --steps "$STEPS" &
train h1 --heads 1 --steps "$STEPS" &
wait
echo "H=4 and H=1 trained together in $(( $(date +%s) - start )) s wall" | tee "$RUN_DIR/together.time"
train h4-linear --heads 4 --attention linear --steps "$LINEAR_STEPS"
nice -n 10 "$PY" -m interp icl analyze "$RUN_DIR/h4.pt" --compare "$RUN_DIR/h1.pt" --compare "$RUN_DIR/h4-linear.pt" \
    --out "$RUN_DIR/h4-analysis" | tee "$RUN_DIR/h4-analysis.txt"
nice -n 10 "$PY" -m interp icl analyze "$RUN_DIR/h1.pt" --out "$RUN_DIR/h1-analysis" | tee "$RUN_DIR/h1-analysis.txt"
nice -n 10 "$PY" scripts/icl_report.py "$RUN_DIR" "$FIG_DIR"
# Every time the docs quote comes from a file kept beside the figures (runs/ is not committed).
cat "$RUN_DIR"/together.time "$RUN_DIR"/h4.time "$RUN_DIR"/h1.time "$RUN_DIR"/h4-linear.time > "$FIG_DIR/times.txt"
