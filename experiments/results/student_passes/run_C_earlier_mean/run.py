"""The dag quickstart with ModelConfig.earlier_mean on for the teacher and both students (run C).

    python run.py OUT    # OUT/data may hold a finished quickstart's data (same config: reused)
"""
import dataclasses
import sys
import time
from pathlib import Path

from offload_jax import config, quickstart

q = dataclasses.replace(quickstart.DAG,
                        teacher_model=dataclasses.replace(config.DAG_TEACHER_MODEL, earlier_mean=True),
                        student_model=dataclasses.replace(config.DAG_STUDENT_MODEL, decode_steps=4,
                                                          earlier_mean=True))
t = time.time()
r = quickstart.run(Path(sys.argv[1]), q, progress=False)
print({k: round(v["objective_ratio_mean"], 4) for k, v in r["policies"].items()}, time.time() - t)
