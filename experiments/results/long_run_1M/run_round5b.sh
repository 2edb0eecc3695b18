#!/bin/bash
# Issue 12's longer run, fifth round, second part (eighteenth dag session): the same distilled students
# as run_round5.sh but on all 1M states instead of the first 300k (the teacher_ls targets over 1M states
# included), then scored at 3, 5 and 10 passes.
set -e
cd /work/main && source .venv/bin/activate
EVAL=/work/main/experiments/results/quickstart_dag/data/eval
offload-jax sweep --data /tmp/big/data --teacher /tmp/big/teacher_slots3 \
  --targets teacher_ls --seeds 0,1,2 --alphas 1 --temperatures 2 --losses latency --latency-weight 1.0 \
  --objective-states 128 --lr 0.004 --steps 8000 --batch-size 1024 --val-data $EVAL --eval-every 0 \
  --no-progress --save-runs --out /tmp/big/sweep_slots_kd5_1m
python experiments/passes.py --runs /tmp/big/sweep_slots_kd5_1m/runs/seed{0,1,2}_temp2_alpha1_latency \
  --data $EVAL --out experiments/results/long_run_1M/passes_1m --steps 3,5,10
