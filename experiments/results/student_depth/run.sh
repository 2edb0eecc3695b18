#!/usr/bin/env bash
# The quickstart's student at equal parameters, deeper: slots 32 x 2 (the default, 9,475 parameters),
# 27 x 3 (9,858) and 23 x 4 (9,433), all within 5% of the quickstart teacher's 201,859. Each distilled
# as the quickstart distills student_kd (teacher_ls targets + the sampled objective term, 6,000 steps of
# 512 at 8e-3, 4 passes), three seeds in one vmapped sweep (scored on the 5,000 held-out states of the
# training mixture), then scored by `evaluate` on the quickstart's layered evaluation states.
# QS: a finished `offload-jax quickstart --scenario dag --out QS`; SHAPES default "32x2 27x3 23x4".
set -euo pipefail
QS=${1:?usage: run.sh QS OUT [SHAPES]}
OUT=${2:?usage: run.sh QS OUT [SHAPES]}
SHAPES=${3:-32x2 27x3 23x4}
for shape in $SHAPES; do
  w=${shape%x*}; r=${shape#*x}
  [ -f "$OUT/$shape/sweep.json" ] || offload-jax sweep --data "$QS/data/train" --seeds 0,1,2 --alphas 1 \
    --steps 6000 --batch-size 512 --lr 8e-3 --holdout 5000 --eval-every 0 --teacher "$QS/runs/teacher" \
    --temperatures 2 --losses latency --latency-weight 1.0 --targets teacher_ls --objective-states 128 \
    --graph-width "$w" --graph-layers "$r" --save-runs --no-progress --out "$OUT/$shape"
  offload-jax evaluate --data "$QS/data/eval" --runs "$OUT/$shape"/runs/seed* --json "$OUT/eval_$shape.json" \
    > "$OUT/eval_$shape.md"
done
