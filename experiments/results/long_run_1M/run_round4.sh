#!/bin/bash
# Issue 12's longer run, fourth round (sixteenth dag session), on run_slots.sh's 1M states and teacher
# (/tmp/big/teacher_slots): as run, one step after another on this 2-core CPU.
#  1. the slots teacher continued twice from its parameters (`--init-from`: fresh AdamW and schedule),
#     8,000 steps of 1,024 at peak lr 1e-3, then 8,000 more at 5e-4 (other seeds: other shuffles);
#  2. the students (run_slots.sh's recipe) on the labels plus the objective term, no teacher: with
#     sweep_slots_ce (labels alone) and sweep_slots_kd (teacher_ls + the term) this separates the two
#     differences between the quickstart's students;
#  3. the distilled students again, from the twice-continued teacher.
# Then `python experiments/long_run_summary.py` (students.md / .json / .png).
set -e
cd /work/main && source .venv/bin/activate
EVAL=/work/main/experiments/results/quickstart_dag/data/eval
TEACHER="--data /tmp/big/data --model teacher --arch slots --graph-width 256 --graph-layers 3 --norm none
  --latency-weight 1.5 --steps 8000 --batch-size 1024 --val-data $EVAL --eval-every 2000 --no-progress"
offload-jax train $TEACHER --lr 0.001 --seed 1 --init-from /tmp/big/teacher_slots --out /tmp/big/teacher_slots2
offload-jax evaluate --data $EVAL --runs /tmp/big/teacher_slots2 --json teacher_slots2_eval.json
offload-jax sweep --data /tmp/big/data --max-states 300000 \
  --seeds 0,1,2 --alphas 1 --temperatures 2 --losses latency --latency-weight 1.0 --objective-states 128 \
  --lr 0.004 --steps 8000 --batch-size 1024 --val-data $EVAL --eval-every 0 --no-progress --out /tmp/big/sweep_slots_lat
offload-jax train $TEACHER --lr 0.0005 --seed 2 --init-from /tmp/big/teacher_slots2 --out /tmp/big/teacher_slots3
offload-jax evaluate --data $EVAL --runs /tmp/big/teacher_slots3 --json teacher_slots3_eval.json
offload-jax sweep --data /tmp/big/data --max-states 300000 --teacher /tmp/big/teacher_slots3 \
  --targets teacher_ls --seeds 0,1,2 --alphas 1 --temperatures 2 --losses latency --latency-weight 1.0 --objective-states 128 \
  --lr 0.004 --steps 8000 --batch-size 1024 --val-data $EVAL --eval-every 0 --no-progress --out /tmp/big/sweep_slots_kd3
