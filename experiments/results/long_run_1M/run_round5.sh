#!/bin/bash
# Issue 12's longer run, fifth round (eighteenth dag session): the fourth round's distilled students
# (sweep_slots_kd3: run_slots.sh's recipe, from the twice-continued teacher /tmp/big/teacher_slots3)
# trained again with --save-runs, so that they can be scored and timed at other pass counts
# (experiments/passes.py); their sweep table must equal sweep_slots_kd3's (the same program).
set -e
cd /work/main && source .venv/bin/activate
EVAL=/work/main/experiments/results/quickstart_dag/data/eval
offload-jax sweep --data /tmp/big/data --max-states 300000 --teacher /tmp/big/teacher_slots3 \
  --targets teacher_ls --seeds 0,1,2 --alphas 1 --temperatures 2 --losses latency --latency-weight 1.0 \
  --objective-states 128 --lr 0.004 --steps 8000 --batch-size 1024 --val-data $EVAL --eval-every 0 \
  --no-progress --save-runs --out /tmp/big/sweep_slots_kd5
python experiments/passes.py --runs /tmp/big/sweep_slots_kd5/runs/seed{0,1,2}_temp2_alpha1_latency \
  --data $EVAL --out experiments/results/long_run_1M/passes
