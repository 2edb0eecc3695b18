#!/bin/bash
# The longest CPU run of issue 12's "longer training" target: 1M layered states (T=10), the default
# networks, teacher then KD vs labels-alone students on 3 seeds, scored on the quickstart's eval states.
set -e
cd /work/main && source .venv/bin/activate
EVAL=/work/main/experiments/results/quickstart_dag/data/eval
while pgrep -f "offload-jax generate --scenario dag --tasks 10 --num-states 1000000" >/dev/null; do sleep 10; done
offload-jax generate --scenario dag --tasks 10 --num-states 1000000 --seed 0 --out /tmp/big/data --no-progress
/usr/bin/time -v offload-jax train --data /tmp/big/data --model teacher --latency-weight 1.5 --steps ${TEACHER_STEPS:-15000} \
  --batch-size 1024 --val-data $EVAL --eval-every 0 --seed 0 --out /tmp/big/teacher > /tmp/big/teacher.log 2>&1
offload-jax evaluate --data $EVAL --runs /tmp/big/teacher --json /tmp/big/eval_teacher.json > /tmp/big/eval_teacher.md 2>&1
/usr/bin/time -v offload-jax sweep --data /tmp/big/data --teacher /tmp/big/teacher --seeds 0,1,2 --alphas 0.5,1.0 \
  --temperatures 2 --losses latency --latency-weight 1.0 --steps ${STUDENT_STEPS:-15000} --batch-size 1024 \
  --val-data $EVAL --eval-every 0 --out /tmp/big/sweep > /tmp/big/sweep.log 2>&1
echo done
