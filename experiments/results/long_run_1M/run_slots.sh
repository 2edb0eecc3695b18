#!/bin/bash
# Issue 12's longer run, third round (fifteenth dag session): the same 1M layered states (T=10) as
# run.sh, a teacher of the slots student's family (slots 256 x 3, 796,931 parameters: the student's
# 35,331 are 4.4% of it), trained on all 1M states; then the default slots student (3 passes) on the
# first 300k of them, 3 seeds, distilled (CE on the teacher's placements improved by local search, the
# quickstart's recipe) and on labels alone. Scored on the quickstart's 5,000 layered evaluation states.
# The state counts and steps are what fit one 3-hour session on this 2-core CPU. As run, the KD sweep
# had sweep's default temperatures (KD_TEMPERATURES=1,4: six students, pairs equal, alpha 1 has no KD term).
set -e
cd /work/main && source .venv/bin/activate
EVAL=/work/main/experiments/results/quickstart_dag/data/eval
[ -f /tmp/big/data/manifest.json ] || offload-jax generate --scenario dag --tasks 10 --num-states 1000000 --seed 0 \
  --out /tmp/big/data --no-progress
/usr/bin/time -v offload-jax train --data /tmp/big/data --model teacher --arch slots --graph-width 256 --graph-layers 3 \
  --norm none --latency-weight 1.5 --steps ${TEACHER_STEPS:-8000} --batch-size 1024 --val-data $EVAL --eval-every 0 \
  --seed 0 --no-progress --out /tmp/big/teacher_slots > /tmp/big/teacher_slots.log 2>&1
offload-jax evaluate --data $EVAL --runs /tmp/big/teacher_slots --json /tmp/big/eval_teacher_slots.json \
  > /tmp/big/eval_teacher_slots.md 2>&1
/usr/bin/time -v offload-jax sweep --data /tmp/big/data --max-states ${STUDENT_STATES:-300000} --teacher /tmp/big/teacher_slots \
  --targets teacher_ls --seeds 0,1,2 --alphas 1 --temperatures ${KD_TEMPERATURES:-2} --losses latency --latency-weight 1.0 --objective-states 128 \
  --lr 0.004 --steps ${STUDENT_STEPS:-8000} --batch-size 1024 --val-data $EVAL --eval-every 0 --no-progress \
  --out /tmp/big/sweep_slots_kd > /tmp/big/sweep_slots_kd.log 2>&1
/usr/bin/time -v offload-jax sweep --data /tmp/big/data --max-states ${STUDENT_STATES:-300000} --seeds 0,1,2 --alphas 1 \
  --temperatures 2 --losses ce --lr 0.004 --steps ${STUDENT_STEPS:-8000} --batch-size 1024 --val-data $EVAL --eval-every 0 \
  --no-progress --out /tmp/big/sweep_slots_ce > /tmp/big/sweep_slots_ce.log 2>&1
echo done
