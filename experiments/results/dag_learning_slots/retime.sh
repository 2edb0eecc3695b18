#!/bin/bash
# Re-time the dag_learning_slots settings with the current bnb (training and data reused; eighteenth
# dag session): each report.json removed, the same dag_learning.py commands rerun (stages resume).
cd /work/main && . .venv/bin/activate
D=experiments/results/dag_learning_slots
for s in T8 T10 T12 T14 U3xT6; do
  rm -f $D/$s/report.json
  echo "=== $s $(date +%T)"; /usr/bin/time -f "%e s" python experiments/dag_learning.py --out $D --part plane --settings $s
done
rm -f $D/T10_seed1/report.json $D/T10_seed2/report.json
echo "=== seeds $(date +%T)"; /usr/bin/time -f "%e s" python experiments/dag_learning.py --out $D --part seeds
rm -f $D/T10_energy/report.json
echo "=== energy $(date +%T)"; /usr/bin/time -f "%e s" python experiments/dag_learning.py --out $D --part energy
rm -f $D/U2xT5/report.json
echo "=== users $(date +%T)"; /usr/bin/time -f "%e s" python experiments/dag_learning.py --out $D --part users
echo "=== done $(date +%T)"
