#!/bin/bash
# Issue 12's longer run, second round: the same 1M layered states (T=10) as run.sh, with today's
# defaults: a teacher that decides in passes (decode_steps 10), and students (5 passes) whose CE term
# imitates the teacher's placements improved by local search (--targets teacher_ls), 3 seeds.
set -e
cd /work/main && source .venv/bin/activate
EVAL=/work/main/experiments/results/quickstart_dag/data/eval
/usr/bin/time -v offload-jax train --data /tmp/big/data --model teacher --latency-weight 1.5 --steps ${TEACHER_STEPS:-15000} \
  --batch-size 1024 --val-data $EVAL --eval-every 0 --seed 0 --no-progress --out /tmp/big/teacher_dec > /tmp/big/teacher_dec.log 2>&1
offload-jax evaluate --data $EVAL --runs /tmp/big/teacher_dec --json /tmp/big/eval_teacher_dec.json > /tmp/big/eval_teacher_dec.md 2>&1
/usr/bin/time -v offload-jax sweep --data /tmp/big/data --teacher /tmp/big/teacher_dec --targets teacher_ls --seeds 0,1,2 \
  --alphas 0.5 --temperatures 2 --losses latency --latency-weight 1.0 --steps ${STUDENT_STEPS:-15000} --batch-size 1024 \
  --val-data $EVAL --eval-every 0 --no-progress --out /tmp/big/sweep_dec > /tmp/big/sweep_dec.log 2>&1
echo done
