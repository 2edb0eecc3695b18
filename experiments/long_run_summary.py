"""The 1M long run's slots networks side by side: each student variant's seeds, the teachers, local search.

    python experiments/long_run_summary.py [--dir experiments/results/long_run_1M]

Reads what the run scripts there committed (each `sweep_slots_*.json`: one row a student, `info` its
training; each `teacher_slots*_eval.json`: an `offload-jax evaluate` of a teacher) and the quickstart's
report (local search and greedy on the same 5,000 evaluation states); writes students.md, students.json
and students.png there. No training: the numbers are the committed ones.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from exp_common import DPI, log, md_table

from offload_jax import atomic
from offload_jax.config import ConfigError
from offload_jax.plots import _pyplot, save_png

ROOT = Path(__file__).resolve().parent
# (sweep file, what its students imitate and how): in the order the comparison reads.
VARIANTS = (
    ("sweep_slots_ce.json", "labels (CE)"),
    ("sweep_slots_lat.json", "labels + objective term"),
    ("sweep_slots_kd.json", "teacher_ls + objective term, teacher 1"),
    ("sweep_slots_kd3.json", "teacher_ls + objective term, teacher 3"),
)
TEACHERS = ("teacher_slots_eval.json", "teacher_slots2_eval.json", "teacher_slots3_eval.json")
TARGETS = {"teacher": 1.04, "student": 1.07}  # issue 12's longer-training targets (J / J*)


def _teacher(path: Path) -> tuple[str, dict]:
    runs = json.loads(path.read_text())["runs"]
    if len(runs) != 1:
        raise ConfigError(f"{path}: expected one run, found {sorted(runs)}")
    (name, r), = runs.items()
    return name, {"objective_ratio_mean": float(r["objective_ratio_mean"]),
                  "objective_ratio_sem": r.get("objective_ratio_sem"), "params": int(r["params"]),
                  "file": path.name}


def _students(path: Path) -> dict:
    """One ratio a seed (a sweep run with several temperatures at alpha 1 repeats a seed's student: the
    first row of each seed is kept, and the repeats must agree)."""
    sweep = json.loads(path.read_text())
    by_seed: dict[int, float] = {}
    for row in sweep["rows"]:
        ratio = float(row["objective_ratio_mean"])
        if row["seed"] in by_seed and abs(by_seed[row["seed"]] - ratio) > 1e-6:
            raise ConfigError(f"{path}: seed {row['seed']} has two different students")
        by_seed.setdefault(int(row["seed"]), ratio)
    info = sweep["info"]
    return {"seeds": by_seed, "mean": statistics.mean(by_seed.values()),
            "std": statistics.pstdev(by_seed.values()),  # as `sweep` reports it (np.std)
            "teacher": info.get("teacher"), "targets": info["train"].get("targets", "labels"),
            "objective_states": info["train"].get("objective_states", 0), "states": info["num_train"],
            "steps": info["train"]["steps"], "train_s": info["timing"]["run_s"],
            "members": info["timing"]["members"]}


def summarize(folder: Path, report: Path) -> dict:
    students = {label: _students(folder / f) for f, label in VARIANTS if (folder / f).exists()}
    if not students:
        raise ConfigError(f"--dir {str(folder)!r}: none of {[f for f, _ in VARIANTS]} is there")
    teachers = {}
    for f in TEACHERS:
        if (folder / f).exists():
            name, teachers[name] = _teacher(folder / f)
    policies = json.loads(report.read_text())["policies"]
    baselines = {n: float(policies[n]["objective_ratio_mean"]) for n in ("greedy", "local_search")}
    return {"students": students, "teachers": teachers, "baselines": baselines, "targets": TARGETS,
            "evaluation": "the quickstart's 5,000 layered evaluation states (T = 10)"}


def markdown(summary: dict) -> str:
    rows = [[label, s["targets"], s["teacher"] or "-", f"{s['mean']:.4f} +- {s['std']:.4f}",
             " / ".join(f"{v:.4f}" for _, v in sorted(s["seeds"].items()))]
            for label, s in summary["students"].items()]
    text = "# The 1M run's slots students and teachers\n\n" + md_table(
        ["students (3 passes, 35,331 params)", "targets", "teacher", "J / J* (mean +- std)",
         "seeds 0 / 1 / 2"], rows)
    def ratio(t: dict) -> str:
        sem = t.get("objective_ratio_sem")
        return f"{t['objective_ratio_mean']:.5f}" + ("" if sem is None else f" +- {sem:.4f} (standard error)")

    text += "\n" + md_table(["teacher (slots 256 x 3, 10 passes)", "params", "J / J*"],
                            [[n, f"{t['params']:,}", ratio(t)] for n, t in summary["teachers"].items()])
    base = summary["baselines"]
    text += (f"\nOn {summary['evaluation']}; local search {base['local_search']:.3f}, greedy "
             f"{base['greedy']:.3f} (the quickstart's report).\n")
    return text


def plot(summary: dict, path: Path) -> Path:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    labels = list(summary["students"])
    for i, label in enumerate(labels):
        s = summary["students"][label]
        ax.scatter([i] * len(s["seeds"]), list(s["seeds"].values()), color="tab:blue", s=18, zorder=3)
        ax.plot([i - 0.25, i + 0.25], [s["mean"]] * 2, color="tab:blue", lw=2)
        ax.annotate(f"{s['mean']:.4f}", (i + 0.27, s["mean"]), va="center", fontsize=8)
    for j, (name, t) in enumerate(summary["teachers"].items()):
        ax.axhline(t["objective_ratio_mean"], color="tab:orange", ls=("-", "--", ":")[j % 3], lw=1,
                   label=f"{name} {t['objective_ratio_mean']:.4f}")
    for who, target in TARGETS.items():
        ax.axhline(target, color="gray", ls=":", lw=1)
        ax.annotate(f"target: {who} <= {target}", (-0.45, target), va="bottom", fontsize=7, color="gray")
    ax.set_xticks(range(len(labels)), [label.replace(", ", ",\n") for label in labels], fontsize=8)
    ax.set_xlim(-0.5, len(labels) - 0.3)
    ax.set_ylabel("J / J* (mean over 5,000 held-out states)")
    ax.set_title(f"Slots students (dots: seeds) and teachers, 1M layered states; local search "
                 f"{summary['baselines']['local_search']:.3f}", fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="upper right")
    return save_png(fig, path, dpi=DPI)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dir", default=str(ROOT / "results" / "long_run_1M"), help="the long run's results")
    p.add_argument("--report", default=str(ROOT / "results" / "quickstart_dag" / "report.json"),
                   help="the dag quickstart's report.json (local search and greedy on the same states)")
    args = p.parse_args(argv)
    folder = Path(args.dir)
    try:
        summary = summarize(folder, Path(args.report))
    except ConfigError as exc:
        p.exit(2, f"long_run_summary: error: {exc}\n")
    atomic.write_json(folder / "students.json", summary, sort_keys=False)
    atomic.write_text(folder / "students.md", markdown(summary))
    plot(summary, folder / "students.png")
    log("long_run_summary", f"wrote students.md, students.json, students.png in {folder}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
