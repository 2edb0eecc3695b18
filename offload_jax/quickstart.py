"""`offload-jax quickstart`: the whole method on a small default, in one command, for either scenario.

generate (train + eval datasets) -> train the teacher -> distill the student (KD + the objective-aware
term) -> train the same student on labels only -> train DROO -> evaluate every policy on the eval
dataset -> export the student to numpy -> benchmark decision latency -> DIR/report.json,
DIR/report.md and PNG plots directly in DIR.

`--scenario chain` (the default) is the paper's reproduction; `--scenario dag` the task-graph scenario
(T = 10, U = 1, layered graphs drawn per state, latency only), where exact search is expensive and
the quality-time plane (`quality_vs_time.png`) says where learning wins.

Every stage resumes: rerunning the same command after an interruption redoes only
what is missing (datasets and runs are resumable; the report is rewritten).
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from pathlib import Path

import jax

from offload_jax import __version__
from offload_jax.config import (
    DROO_MODEL,
    TARGETS,
    ConfigError,
    ModelConfig,
    TrainConfig,
    _is_finite_number,
    default_model,
)
from offload_jax.scenarios.dag.graphs import MIXTURE_FULL_SHARE


@dataclasses.dataclass(frozen=True)
class QuickstartConfig:
    """Sizes of the quickstart. The chain's defaults take 3 to 6 minutes on an idle 2-core CPU (152 s on
    one VM, 328-364 s on others); `DAG` gives the dag scenario's."""

    scenario: str = "chain"
    tasks: int = 10
    users: int = 1  # dag only
    train_states: int = 200_000  # the last `holdout` of them are the training's held-out split
    holdout: int = 10_000
    eval_states: int = 20_000  # a separate dataset (another seed): what every policy is scored on
    seed: int = 0
    teacher_steps: int = 4_000
    student_steps: int = 8_000
    batch_size: int = 1024
    alpha: float = 0.5
    temperature: float = 2.0
    # Weights of the objective-aware term (chain: exact expected latency; dag: sampled expected J) for the
    # distilled student and for the teacher; None: the scenario's (OBJECTIVE_WEIGHTS). It helps the chain's
    # student most (benchmarks/RESULTS.md, "Learning"), and on the dag both networks (RESULTS.md, "dag:
    # learning"). student_ce stays on labels alone, the paper's plain imitation baseline.
    latency_weight: float | None = None
    teacher_latency_weight: float | None = None
    droo_memory: int = 1024
    calls: int = 2000  # timed batch-1 calls per policy
    timing_states: int = 1  # the states those calls cycle through (a search's time depends on the state)
    timing_rounds: int = 400  # interleaved blocks they are timed in (each starts with untimed calls)
    timing_batch: int = 1024  # states per call of the batch-throughput measurement
    batch_reps: int = 20  # its timed calls per policy
    teacher_model: ModelConfig | None = None  # None: the scenario's default (config.default_model)
    student_model: ModelConfig | None = None
    droo_model: ModelConfig = DROO_MODEL
    # ((key, value), ...): system keys on top of the scenario's defaults (e.g. (("w_energy", 0.5),));
    # the experiments run the same pipeline on other systems with it
    system_overrides: tuple[tuple[str, object], ...] = ()
    # dag only: > 0 trains every network on this many synthetic graphs (`graphs.mixture`: layered graphs
    # of 2..T sub-tasks with their own shape knobs, in a random topological order; seed = `seed`), written
    # to DIR/data/train_topologies.json and used as the training data's topology file; the evaluation
    # dataset keeps the system's own graphs. Students trained on one graph family fail on others
    # (benchmarks/RESULTS.md, "unseen graphs"); 0 trains on the system's graphs.
    train_graphs: int = 0
    # dag only: the share of those graphs that are random trees (`graphs.random_tree`, half out-trees,
    # half in-trees), which layered graphs hardly ever are
    train_tree_share: float = 0.0
    # dag only: the share of those graphs with all T sub-tasks (the others have 2..T-1, uniform)
    train_full_share: float = MIXTURE_FULL_SHARE
    # dag only: the share of those graphs kept in their layer order (sources first, as the layered graphs
    # drawn per state are numbered) instead of a random topological order
    train_ordered_share: float = 0.0
    # what student_kd's CE term imitates (`TrainConfig.targets`): "labels" (the exact ones), or the
    # teacher's placements, improved by local search ("teacher_ls", dag: sequence-level distillation,
    # benchmarks/RESULTS.md "Targets"); student_ce stays on the labels, the paper's plain imitation
    student_targets: str = "labels"
    # the states of each batch that student_kd's sampled objective term (dag) scores (0: all; `TrainConfig.
    # objective_states`): that term is most of the student's step, and a part of the batch buys more steps
    student_objective_states: int = 0
    learning_rate: float = 2e-3  # peak learning rate of the teacher and the students (TrainConfig's default)

    def validate(self) -> QuickstartConfig:
        from offload_jax import scenarios  # noqa: PLC0415

        if self.scenario not in scenarios.SCENARIOS:
            raise ConfigError(f"scenario must be one of {list(scenarios.SCENARIOS)}, got {self.scenario!r}")
        for name in ("tasks", "users", "train_states", "eval_states", "teacher_steps", "student_steps",
                     "batch_size", "calls", "holdout", "timing_batch", "batch_reps", "timing_states",
                     "timing_rounds"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be an integer >= 1, got {value!r}")
        if self.scenario == "chain" and self.users != 1:
            raise ConfigError(f"users is a dag key: the chain has one user, got users={self.users}")
        if isinstance(self.train_graphs, bool) or not isinstance(self.train_graphs, int) \
                or self.train_graphs < 0:
            raise ConfigError(f"train_graphs must be an integer >= 0, got {self.train_graphs!r}")
        if self.train_graphs and self.scenario != "dag":
            raise ConfigError(f"train_graphs is a dag key (synthetic task graphs), got train_graphs="
                              f"{self.train_graphs} for scenario {self.scenario!r}")
        for name in ("train_tree_share", "train_full_share", "train_ordered_share"):
            share = getattr(self, name)
            if isinstance(share, bool) or not (isinstance(share, (int, float)) and 0.0 <= share <= 1.0):
                raise ConfigError(f"{name} must be in [0, 1], got {share!r}")
        scored = self.student_objective_states
        if isinstance(scored, bool) or not isinstance(scored, int) or not 0 <= scored <= self.batch_size:
            raise ConfigError(f"student_objective_states must be an integer in [0, batch_size="
                              f"{self.batch_size}], got {scored!r}")
        if not _is_finite_number(self.learning_rate) or self.learning_rate <= 0:
            raise ConfigError(f"learning_rate must be a finite number > 0, got {self.learning_rate!r}")
        if self.student_targets not in TARGETS:
            raise ConfigError(f"student_targets must be one of {list(TARGETS)}, got {self.student_targets!r}")
        if self.student_targets == "teacher_ls" and not self.system().has_local_search:
            raise ConfigError(f"student_targets 'teacher_ls' needs the dag scenario's local search, got "
                              f"scenario {self.scenario!r}; allowed there: 'labels', 'teacher'")
        if self.timing_states > self.timing_batch:
            raise ConfigError(f"timing_states ({self.timing_states}) must be <= timing_batch "
                              f"({self.timing_batch})")
        if self.holdout >= self.train_states:
            raise ConfigError(f"holdout ({self.holdout}) must be < train_states ({self.train_states})")
        return self

    def system(self):
        """The scenario with its default system at these sizes."""
        from offload_jax import scenarios  # noqa: PLC0415

        sizes = {"tasks": self.tasks}
        if self.scenario == "dag":
            sizes["users"] = self.users
        return scenarios.make(self.scenario, {**dict(self.system_overrides), **sizes})

    def train_system(self, out: Path):
        """The system the training data is drawn from: `system()`, or with `train_graphs` > 0 the same
        with the synthetic graphs as its topology file (written into out/data on first use)."""
        from offload_jax import scenarios  # noqa: PLC0415
        from offload_jax.scenarios.dag import graphs  # noqa: PLC0415

        system = self.system()
        if not self.train_graphs:
            return system
        path = out / "data" / "train_topologies.json"
        if not path.exists():  # deterministic: a rerun would write the same bytes
            graphs.write_mixture(path, self.seed, self.train_graphs, self.tasks,
                                 tree_share=self.train_tree_share, full_share=self.train_full_share,
                                 ordered_share=self.train_ordered_share)
        return scenarios.of(system.cfg.with_overrides({"topology": "file", "topology_file": str(path)}))

    def objective_weight(self, role: str) -> float:
        """The weight of the objective-aware term for the "teacher" or the distilled "student"."""
        chosen = self.teacher_latency_weight if role == "teacher" else self.latency_weight
        return OBJECTIVE_WEIGHTS[self.scenario, role] if chosen is None else chosen

    def model(self, role: str) -> ModelConfig:
        """The teacher's or the student's network: the configured one, or the scenario's default at
        these sizes (`config.default_model`: passes that grow with the users)."""
        chosen = self.teacher_model if role == "teacher" else self.student_model
        return chosen or default_model(self.scenario, role, self.system().decision_shape)


# (scenario, role) -> weight of the objective-aware term when the config leaves it None.
OBJECTIVE_WEIGHTS = {("chain", "teacher"): 0.0, ("chain", "student"): 0.5,
                     ("dag", "teacher"): 1.5, ("dag", "student"): 1.0}
# The dag quickstart: T = 10, U = 1, w_energy = 0; trained on 20k synthetic graphs of 2-10 sub-tasks,
# evaluated on layered graphs (T = 10) drawn per state. Its policies are timed over 100 states in 200
# blocks of 5 calls (the exact search takes ~10 ms a state on the median, so 400 blocks, each with its 10
# untimed calls, made the whole quickstart 813 s; with 200, 702 s; 752 s in the sixth session, with
# student_kd_ls1 and one untimed call a block for the exact search; its training stages ran 9-18%
# slower than the run before's on the same commands; 835 s in the eighth, with the teacher_ls targets;
# 752 s in the ninth, the exact search's pool growing 4x at a time: fewer programs to compile).
# Tenth session: every network at a peak rate of 4e-3 (teacher 1.1107 / 1.1087 against 1.1161 / 1.1197
# at 2e-3, seeds 0 / 1); the students 24,000 steps, student_kd's objective term on 128 states of each
# 512 (1.1396 against 1.1527 for 12,000 steps at 2e-3 on every state, three seeds each, in the same
# time); benchmarks/RESULTS.md, "The networks' budget". And 80% of the training graphs with all T
# sub-tasks (was 50%): on the layered evaluation student_kd 1.165 (1.183 at 50%), better on 11 of the 13
# unseen graph sets, 0.012 worse on the real job graphs (mostly 2-6 tasks): RESULTS.md, "Full graphs".
# Thirteenth: the student a SlotNetwork (config.DAG_STUDENT_MODEL), 6,000 steps (its step costs ~4x the
# MLP's; student_kd 1.109 at 6,000 steps, 1.108 at 8,000), alpha 1 (the teacher's improved placements
# without its logits: better on the layered graphs and the two trees on seeds 0 and 1): RESULTS.md,
# "A student shared by the slots". Nineteenth: 902 s on a fresh VM of the same type, 828 s once the
# exact search's programs were shared between labeling, evaluation and timing (eight compiles of ~25 s
# to four): RESULTS.md, "The dag quickstart". Twentieth: both networks slots networks (teacher 128 x 3 in 5
# passes, student 32 x 2 in 4: config.DAG_TEACHER_MODEL), the teacher 2,000 steps, every network at 8e-3
# (on the layered evaluation, 5 passes: teacher 1.090 / 1.099 at 8e-3 / 4e-3, student_ce 1.125 / 1.139):
# RESULTS.md, "Both networks shared by the slots". Twenty-fourth: the student in 5 passes
# (config.DAG_STUDENT_MODEL; RESULTS.md, "Fewer kernel calls at batch 1").
DAG = QuickstartConfig(scenario="dag", train_states=100_000, holdout=5_000, eval_states=5_000,
                       teacher_steps=2_000, student_steps=6_000, alpha=1.0, batch_size=512, calls=1000,
                       timing_states=100, timing_rounds=200, train_graphs=20_000, train_full_share=0.8,
                       student_targets="teacher_ls", student_objective_states=128, learning_rate=8e-3)
# Settings small enough for the test suite (seconds of training, not minutes).
TINY = QuickstartConfig(tasks=4, train_states=3_000, holdout=500, eval_states=500, teacher_steps=60,
                        student_steps=200, batch_size=256, calls=50, droo_memory=256)
TINY_DAG = dataclasses.replace(TINY, scenario="dag", tasks=3, users=2, eval_states=200, calls=30,
                               train_graphs=100, student_targets="teacher_ls", student_objective_states=64,
                               learning_rate=4e-3)
PRESETS = {("chain", False): QuickstartConfig(), ("chain", True): TINY, ("dag", False): DAG,
           ("dag", True): TINY_DAG}


def _log(msg: str) -> None:
    print(f"[quickstart] {msg}", file=sys.stderr, flush=True)


def run(out_dir: str | os.PathLike, qcfg: QuickstartConfig = QuickstartConfig(), *,
        progress: bool = True) -> dict:
    """Run every stage into `out_dir`; returns the report (also written as report.json / report.md)."""
    from offload_jax import dataset, droo, evaluate, export, export_runtime, fit, policies, splits, timing
    from offload_jax import runs as run_dirs

    qcfg.validate()
    # Decision timing needs synchronous CPU dispatch, which must be set before JAX's backend starts
    # (timing.configure_for_latency); training is unaffected (it waits for each chunk anyway).
    try:
        timing.configure_for_latency()
    except RuntimeError as exc:  # e.g. in a process that already ran JAX code
        _log(f"decision latency measured with this process's JAX settings: {exc}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    system = qcfg.system()
    cfg = system.cfg
    seconds: dict[str, float] = {}
    t_all = time.perf_counter()

    def stage(name: str):
        _log(f"{name} ...")
        seconds[name] = time.perf_counter()

    def done(name: str):
        seconds[name] = round(time.perf_counter() - seconds[name], 2)

    train_dir, eval_dir = out / "data" / "train", out / "data" / "eval"
    stage("generate")
    dataset.generate(train_dir, qcfg.train_system(out).cfg, qcfg.train_states, qcfg.seed, progress=progress)
    dataset.generate(eval_dir, cfg, qcfg.eval_states, qcfg.seed + 1, progress=progress)
    done("generate")

    data = splits.load_data(train_dir, holdout=qcfg.holdout)
    runs_dir = out / "runs"
    base = TrainConfig(batch_size=qcfg.batch_size, seed=qcfg.seed, eval_every=0,
                       learning_rate=float(qcfg.learning_rate))

    stage("teacher")
    fit.fit(runs_dir / "teacher", data, qcfg.model("teacher"),
            dataclasses.replace(base, steps=qcfg.teacher_steps,
                                latency_weight=qcfg.objective_weight("teacher")),
            kind="teacher", progress=progress)
    done("teacher")
    teacher = run_dirs.load_run(runs_dir / "teacher")

    stage("student_kd")
    kd_cfg = dataclasses.replace(base, steps=qcfg.student_steps, alpha=qcfg.alpha,
                                 temperature=qcfg.temperature, targets=qcfg.student_targets,
                                 latency_weight=qcfg.objective_weight("student"),
                                 objective_states=qcfg.student_objective_states)
    fit.fit(runs_dir / "student_kd", data, qcfg.model("student"), kd_cfg, kind="distill", teacher=teacher,
            teacher_dir=str(runs_dir / "teacher"), progress=progress)
    done("student_kd")

    stage("student_ce")
    fit.fit(runs_dir / "student_ce", data, qcfg.model("student"),
            dataclasses.replace(base, steps=qcfg.student_steps), kind="student", progress=progress)
    done("student_ce")
    del data

    stage("droo")
    droo_cfg = droo.DROOConfig(model=qcfg.droo_model, memory_size=qcfg.droo_memory)
    droo.train_droo_cli(train_dir, runs_dir / "droo", seed=qcfg.seed, holdout=qcfg.holdout,
                        droo_cfg=droo_cfg, progress=progress)
    done("droo")

    stage("evaluate")
    runs = {name: run_dirs.load_run(runs_dir / name) for name in policies.LEARNED_NAMES}
    eval_ds = dataset.load(eval_dir)
    scenario = eval_ds.scenario
    pols = {name: policies.make_policy(name, scenario=scenario, runs=runs)
            for name in policies.policy_names(scenario)}
    quality = evaluate.evaluate_policies(eval_ds, pols, jax.random.key(qcfg.seed), progress=progress)
    done("evaluate")

    stage("decision latency")
    student_file = export.export_run(runs_dir / "student_kd", out / "student_kd.npz")
    numpy_student = export_runtime.load(student_file)
    speed = timing.decision_benchmark(pols, scenario, calls=qcfg.calls, batch=qcfg.timing_batch,
                                      batch_reps=qcfg.batch_reps, states=qcfg.timing_states,
                                      rounds=qcfg.timing_rounds,
                                      numpy_student=numpy_student, seed=qcfg.seed, host_batch=False,
                                      progress=progress)
    done("decision latency")

    report = _report(qcfg, system, quality, speed, runs, seconds, time.perf_counter() - t_all)
    _write_outputs(out, report)
    return report


def config_dict(qcfg: QuickstartConfig) -> dict:
    """The config as the report records it (networks as their dicts)."""
    return {f.name: (getattr(qcfg, f.name).to_dict() if hasattr(getattr(qcfg, f.name), "to_dict")
                     else getattr(qcfg, f.name)) for f in dataclasses.fields(qcfg)}


def _report(qcfg, system, quality, speed, runs, seconds, total_s) -> dict:
    pol = {}
    for name, q in quality.items():
        s = speed["policies"][name]
        pol[name] = {**{k: v for k, v in q.items() if k not in ("per_task_accuracy", "num_states")},
                     "decision_us_p50": s["p50_us"], "decision_us_p99": s["p99_us"],
                     "batch_states_per_s": s["batch_states_per_s"], "timed_as": s.get("timed_as")}
    ns = speed["numpy_student"]
    return {
        "scenario": system.name,
        **system.sizes(),
        "policies": pol,
        "dataset": "data/eval",
        "train_dataset": "data/train",
        "numpy_student": {"decision_us_p50": ns["p50_us"], "decision_us_p99": ns["p99_us"],
                          "file": "student_kd.npz"},
        "identity_us_p50": speed["identity"]["p50_us"],
        "device": speed["device"],
        "timing_settings": speed.get("settings"),
        "config": config_dict(qcfg),
        "system": system.cfg.to_dict(),
        "runs": {n: {"path": f"runs/{n}", "kind": r.meta.get("kind"), "params": r.meta.get("params")}
                 for n, r in runs.items()},
        "seconds": {**seconds, "total": round(total_s, 1)},
        "versions": {"offload_jax": __version__, "jax": jax.__version__},
    }


def _quality_key(report: dict) -> tuple[str, str, str]:
    """(report key, words, plot file) of the quality every table and plot shows: the chain's latency
    ratio (its objective is latency), the dag's objective ratio J / J*."""
    if report.get("scenario", "chain") == "chain":
        return "latency_ratio_mean", "latency ratio", "latency_ratio.png"
    return "objective_ratio_mean", "objective ratio", "objective_ratio.png"


def _title(report: dict) -> str:
    sizes = ", ".join(f"{k}={report[k]}" for k in ("users", "tasks") if k in report and
                      (k != "users" or report.get("scenario") == "dag"))
    return f"{report.get('scenario', 'chain')} scenario, {sizes.replace('tasks', 'T').replace('users', 'U')}"


def _training_words(report: dict) -> str:
    graphs = report.get("config", {}).get("train_graphs")
    if not graphs:
        return ""
    return (f" The networks were trained on `{report.get('train_dataset', 'data/train')}`, whose graphs are "
            f"{graphs:,} synthetic task graphs of 2-{report['tasks']} sub-tasks "
            "(`data/train_topologies.json`, `graphs.mixture`), not the evaluation's.")


def _over_states(report: dict) -> str:
    count = (report.get("timing_settings") or {}).get("states", 1)
    return f" over calls on {count} states" if count > 1 else ""


def report_markdown(report: dict) -> str:
    key, words, plot = _quality_key(report)
    dag = report.get("scenario") == "dag"
    with_sem = dag and all("objective_ratio_sem" in p for p in report["policies"].values())
    extra = " | latency ratio | energy ratio" if dag else ""
    lines = [f"# offload-jax quickstart ({_title(report)})", "",
             f"Policies scored on `{report['dataset']}` (states never seen in training); decision time is "
             f"batch-1 p50 of the AOT-compiled policy{_over_states(report)} on {report['device']} (host "
             f"drivers: the Python call). {words.capitalize()} = the policy's "
             f"{'objective J' if dag else 'latency'} over the optimal one, mean of per-state ratios"
             + (" (+- its standard error over the states)." if with_sem else ".")
             + _training_words(report), "",
             f"| policy | {words}{extra} | accuracy | exact match | decision p50 (us) | p99 (us) | params |",
             "|---|---:|" + ("---:|---:|" if dag else "") + "---:|---:|---:|---:|---:|"]
    for name, p in report["policies"].items():
        params = "" if p["params"] is None else f"{p['params']:,}"
        cols = f" | {p['latency_ratio_mean']:.4f} | {p['energy_ratio_mean']:.4f}" if dag else ""
        sem = f" +- {p['objective_ratio_sem']:.4f}" if with_sem else ""
        lines.append(f"| {name} | {p[key]:.4f}{sem}{cols} | {p['accuracy']:.4f} | "
                     f"{p['exact_match']:.4f} | {p['decision_us_p50']:.1f} | {p['decision_us_p99']:.1f} | "
                     f"{params} |")
    ns = report["numpy_student"]
    lines += ["", f"Exported numpy student (`{ns['file']}`, features included): p50 "
              f"{ns['decision_us_p50']:.1f} us, p99 {ns['decision_us_p99']:.1f} us. Identity floor "
              f"(compiled no-op on the same input): {report['identity_us_p50']:.1f} us.", "",
              f"![{words}]({plot})", "", "![decision latency](decision_latency.png)", "",
              "![quality vs time](quality_vs_time.png)", "",
              "Stage times (s): " + ", ".join(f"{k} {v}" for k, v in report["seconds"].items()), ""]
    return "\n".join(lines)


def _write_outputs(out: Path, report: dict) -> None:
    from offload_jax import atomic
    from offload_jax.plots import bar_chart, quality_time_plane

    pol = report["policies"]
    key, words, plot = _quality_key(report)
    quality = {n: p[key] for n, p in pol.items()}
    bar_chart(quality, out / plot, ylabel=f"{words} (mean of per-state ratios)", reference=1.0,
              title=f"Decision quality, {_title(report)} (lower is better)")
    times = {n: p["decision_us_p50"] for n, p in pol.items()}
    times["student (numpy)"] = report["numpy_student"]["decision_us_p50"]
    times["identity floor"] = report["identity_us_p50"]
    bar_chart(times, out / "decision_latency.png", ylabel="batch-1 decision time p50 (us)", log=True,
              title="Time to decide (log scale, lower is better)")
    quality_time_plane({n: (times[n], quality[n]) for n in pol}, out / "quality_vs_time.png",
                       xlabel="batch-1 decision time p50 (us, log)", ylabel=words,
                       title=f"Quality vs time to decide, {_title(report)} (lower left is better)")
    atomic.write_json(out / "report.json", report)
    atomic.write_text(out / "report.md", report_markdown(report))


def print_table(report: dict) -> None:
    print(report_markdown(report).split("\n\nExported")[0].split("\n", 4)[4])
    plot = _quality_key(report)[2]
    print(f"(report: report.json, report.md, {plot}, decision_latency.png, quality_vs_time.png; "
          f"{report['seconds']['total']:.0f} s)")
