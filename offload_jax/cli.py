"""`offload-jax` command line: thin wrappers over the modules.

Each subcommand has an `_add_<name>(subparsers)` that declares its flags and a
handler that calls into the library.
"""

from __future__ import annotations

import argparse
import sys

from offload_jax.config import MAX_SEED, ConfigError


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="offload-jax", description="Learned edge computation offloading in JAX.")
    sub = parser.add_subparsers(dest="command", required=True)  # noqa: F841 (filled below)
    # --- subcommands (one _add_* call per subcommand, in pipeline order) ---
    _add_topologies(sub)
    _add_generate(sub)
    _add_train(sub)
    _add_distill(sub)
    _add_sweep(sub)
    _add_train_droo(sub)
    _add_evaluate(sub)
    _add_export(sub)
    _add_quickstart(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = _build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except ConfigError as exc:  # bad arguments, and inputs or outputs that do not fit (datasets, runs, locks)
        parser.exit(2, f"offload-jax {args.command}: error: {exc}\n")
    except OSError as exc:  # the file system refused (missing, read-only, full, a file in the way)
        parser.exit(2, f"offload-jax {args.command}: error: {_os_error_line(exc)}\n")


def _os_error_line(exc: OSError) -> str:
    """The path and the cause of an OSError, e.g. "runs/x/run.json: No space left on device"."""
    if exc.filename is None:
        return str(exc)
    return f"{exc.filename}: {exc.strerror}"


def _count(text: str) -> int:
    """argparse type: an integer >= 1 (the error names the flag)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {value}")
    return value


def _batch_size(text: str) -> int | str:
    """argparse type: an integer >= 1 or "auto"."""
    if text == "auto":
        return text
    try:
        return _count(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1 or 'auto', got {text!r}") from None


def _output_file(text: str) -> str:
    """argparse type: a file path that can be written (not a directory, not under a file, on a writable
    file system), checked before any work."""
    import os  # noqa: PLC0415
    import tempfile  # noqa: PLC0415

    if os.path.isdir(text):
        raise argparse.ArgumentTypeError(f"{text!r} is a directory; give a file path")
    parent = os.path.dirname(os.path.abspath(text))
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise argparse.ArgumentTypeError(f"{text!r} is under {parent!r}, which is a file")
    try:
        tempfile.TemporaryFile(dir=parent).close()
    except OSError as exc:
        raise argparse.ArgumentTypeError(f"cannot write into {parent!r}: {exc.strerror}") from None
    return text


def _add_topologies(sub) -> None:
    p = sub.add_parser(
        "topologies", help="write a topology file of synthetic task graphs (a training mixture)",
        description="Write --count synthetic task graphs to a topology file (SPEC format): layered graphs "
                    "of every size from --min-tasks to --tasks (--tasks in half of them), each with its own "
                    "fat and density (uniform in [0.1, 0.9]) and jump (1-3), renumbered in a random "
                    "topological order. Train on it with `generate --scenario dag --set topology=file "
                    "--set topology_file=FILE` so students hold on graphs of other sizes and shapes.")
    p.add_argument("--out", type=_output_file, required=True, metavar="FILE", help="output .json file")
    p.add_argument("--tasks", type=_count, default=10, help="most sub-tasks of a graph (default 10)")
    p.add_argument("--min-tasks", type=_count, default=2, help="fewest sub-tasks of a graph (default 2)")
    p.add_argument("--count", type=_count, default=20_000, help="number of graphs (default 20000)")
    p.add_argument("--seed", type=int, default=0, help="seed (graph k depends on the seed and k only)")
    p.set_defaults(handler=_cmd_topologies)


def _cmd_topologies(args) -> int:
    from offload_jax.scenarios.dag import graphs  # noqa: PLC0415

    if args.min_tasks > args.tasks:
        raise ConfigError(f"--min-tasks ({args.min_tasks}) must be <= --tasks ({args.tasks})")
    if not 0 <= args.seed <= MAX_SEED:
        raise ConfigError(f"--seed must be in [0, {MAX_SEED}], got {args.seed}")
    path = graphs.write_mixture(args.out, args.seed, args.count, args.tasks, args.min_tasks)
    print(f"wrote {path}: {args.count} graphs of {args.min_tasks}-{args.tasks} sub-tasks")
    return 0


def _add_generate(sub) -> None:
    p = sub.add_parser(
        "generate", help="sample system states, label them exactly, write a sharded dataset",
        description="Sample N system states, label each with its optimal placement and write "
                    "shards + manifest.json to --out. Rerunning the same command resumes.")
    p.add_argument("--out", required=True, help="output directory (created; resumed if it holds this job)")
    p.add_argument("--num-states", type=_count, required=True, help="number of states N")
    p.add_argument("--scenario", default="chain", metavar="NAME",
                   help="chain (the paper's, dataset format 1) or dag (task graphs, several users, energy; "
                        "format 2); default chain")
    p.add_argument("--tasks", type=_count, default=None,
                   help="sub-tasks T (overrides the system's tasks; default 10)")
    p.add_argument("--seed", type=int, default=0, help="seed of the state stream (0 .. 2**32-1)")
    p.add_argument("--solver", default=None, metavar="NAME",
                   help="exact solver: chain dp (default) or enumerate; dag bnb (pruned search, default) "
                        "or enumerate")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a system key, e.g. --set backhaul_rate_range=1e6,5e7 or, for dag, "
                        "--set users=2 --set topology=file --set topology_file=graphs.json (repeatable)")
    p.add_argument("--shard-size", type=_count, default=100_000, help="states per shard")
    p.add_argument("--batch-size", type=_batch_size, default=None, metavar="N|auto",
                   help="most states per device call (default per solver: 65536 dp, 1024 chain "
                        "enumerate, 8192 bnb, 256 dag enumerate; per device) on a CPU; 'auto' (the "
                        "default on a GPU or TPU) doubles it until states/s stops rising by 10%%; changes "
                        "neither states nor bytes")
    p.add_argument("--no-progress", action="store_true", help="no progress bar and no summary")
    g = p.add_argument_group(
        "several processes", "one JAX job (jax.distributed) of P processes, e.g. one per host, each running "
        "this command with its own --process-id, all writing into one --out that they share; the files are "
        "those of a 1-process run, byte for byte. Give all three flags or none.")
    g.add_argument("--coordinator", default=None, metavar="HOST:PORT",
                   help="where process 0 runs the coordinator (a free port on its host)")
    g.add_argument("--num-processes", type=int, default=None, metavar="P", help="number of processes P")
    g.add_argument("--process-id", type=int, default=None, metavar="I", help="this process: 0 .. P-1")
    g.add_argument("--timeout", type=int, default=None, metavar="SECONDS",
                   help="how long the processes wait for one another to connect, for process 0 to open the "
                        "job, and for a silent (lost) process before the run fails (default 60)")
    p.set_defaults(handler=_cmd_generate)


def _cmd_generate(args) -> int:
    from offload_jax import dataset, processes, scenarios
    from offload_jax.config import parse_overrides

    processes.initialize(args.coordinator, args.num_processes, args.process_id, args.timeout)
    overrides = parse_overrides(args.set)
    if args.tasks is not None:
        overrides["tasks"] = args.tasks
    scenario = scenarios.make(args.scenario, overrides)
    dataset.generate(args.out, scenario.cfg, args.num_states, args.seed, args.solver,
                     shard_size=args.shard_size, batch_size=args.batch_size, progress=not args.no_progress)
    return 0


def _add_train_droo(sub) -> None:
    p = sub.add_parser("train-droo", help="train the DROO deep-RL baseline online on a dataset's states",
                       description="Train the DROO-style baseline (offload_jax/droo.py) online over the "
                                   "first states of DIR (labels unused); save it as a run (kind 'droo').")
    p.add_argument("--data", required=True, metavar="DIR", help="dataset directory (offload-jax generate)")
    p.add_argument("--out", required=True, metavar="RUN", help="run directory to write")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--states", type=int, default=None, metavar="N",
                   help="training states from the start of DIR (default: all but the holdout)")
    p.add_argument("--holdout", type=int, default=None, metavar="N",
                   help="states left out at the end of DIR (default min(5%%, 50000), as for the student)")
    p.add_argument("--candidates", type=int, default=0, metavar="K", help="quantized candidates (0: K = T)")
    p.add_argument("--quantizer", choices=("single", "nested"), default="nested",
                   help="candidate k flips the (k-1)-th least confident sub-task, or the k-1 least confident")
    p.add_argument("--memory-size", type=int, default=1024)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--train-every", type=int, default=10, metavar="STATES")
    p.add_argument("--lr", type=float, default=1e-3)
    p.set_defaults(handler=_cmd_train_droo)


def _cmd_train_droo(args) -> int:
    from offload_jax import droo  # noqa: PLC0415

    droo_cfg = droo.DROOConfig(candidates=args.candidates, quantizer=args.quantizer,
                               memory_size=args.memory_size, batch_size=args.batch_size,
                               train_every=args.train_every, learning_rate=args.lr)
    meta = droo.train_droo_cli(args.data, args.out, seed=args.seed, train_states=args.states,
                               holdout=args.holdout, droo_cfg=droo_cfg)
    print(f"droo run {args.out}: {meta['train_states']} states, {meta['params']} params, "
          f"final {meta.get('final')}")
    return 0


def _add_evaluate(sub) -> None:
    p = sub.add_parser("evaluate", help="score trained runs and baseline policies on a dataset",
                       description="Objective, latency and energy ratios to the optimum, accuracy and exact "
                                   "match of each run and named baseline policy on DIR (chain or dag); "
                                   "prints a markdown table, writes JSON.")
    p.add_argument("--data", required=True, metavar="DIR", help="labeled dataset directory")
    p.add_argument("--runs", nargs="+", default=[], metavar="RUN", help="run directories (named by basename)")
    p.add_argument("--policies", default="", metavar="NAMES",
                   help="comma-separated baseline policies of the dataset's scenario, or 'all' for every "
                        "one (an unknown name lists them); dag also student_kd_ls (the student's placement, "
                        "then local search) and student_kd_ls1 (then one round of it), with a run named "
                        "student_kd in --runs")
    p.add_argument("--json", type=_output_file, default=None, metavar="PATH",
                   help="write the results here (atomically)")
    p.add_argument("--seed", type=int, default=0, help="key of the random policy")
    p.add_argument("--batch-size", type=_count, default=8192)
    p.add_argument("--max-states", type=_count, default=None, metavar="N", help="use only the first N states")
    p.add_argument("--decode-steps", type=_count, default=None, metavar="K",
                   help="the runs that decide in steps (and hybrids from them) decide in K passes instead "
                        "of their own; one-pass networks and DROO as trained")
    p.add_argument("--paired-with", default=None, metavar="NAME",
                   help="a policy or run evaluated here: each row also gets the mean per-state difference "
                        "of its objective ratio to NAME's on the same states, with its standard error and "
                        "the shares of states where it is better and worse (JSON)")
    p.set_defaults(handler=_cmd_evaluate)


def _cmd_evaluate(args) -> int:
    from offload_jax import evaluate  # noqa: PLC0415

    report = evaluate.evaluate_cli(args.data, args.runs, args.policies, args.json, seed=args.seed,
                                   batch_size=args.batch_size, max_states=args.max_states,
                                   decode_steps=args.decode_steps, paired_with=args.paired_with)
    print(evaluate.markdown_table(report["runs"]))
    return 0


# --- train / distill / sweep (engineer B) ---


def _csv_of(kind):
    """argparse type: comma-separated values of `kind`."""
    def parse(text: str):
        try:
            return [kind(v) for v in text.split(",") if v.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expects comma-separated {kind.__name__} values, got {text!r}") from None
    return parse


def _add_training_flags(p, *, model_default: str, steps_default: int, sweep: bool = False) -> None:
    from offload_jax.config import ACTIVATIONS, ARCHS, INPUTS, NORMS, PARTIALS, TARGETS  # noqa: PLC0415 (light module)

    p.add_argument("--data", required=True, metavar="DIR", help="dataset directory (offload-jax generate)")
    p.add_argument("--model", choices=("teacher", "student"), default=model_default,
                   help=f"network (default {model_default}): the scenario's default teacher or student at "
                        "the sizes of --data (config.default_model: on the dag, passes grow with the users)")
    p.add_argument("--hidden", type=_csv_of(int), default=None, metavar="W,W,..",
                   help="override the hidden widths of --model")
    p.add_argument("--activation", choices=ACTIVATIONS, default=None, help="override the activation")
    p.add_argument("--norm", choices=NORMS, default=None, help="override the normalization")
    p.add_argument("--inputs", choices=INPUTS, default=None,
                   help="override which features the network reads: all, or the state's fields only")
    p.add_argument("--arch", choices=ARCHS, default=None,
                   help="override the network family: mlp; for a dag, graph (a transformer over the "
                        "sub-tasks), gnn (message passing, then an MLP) or slots (message passing and a "
                        "per-slot readout, every weight shared by the slots)")
    p.add_argument("--graph-width", type=int, default=None, metavar="W",
                   help="override the message passing's width (gnn, slots)")
    p.add_argument("--graph-layers", type=int, default=None, metavar="R",
                   help="override the rounds of message passing (gnn, slots)")
    p.add_argument("--decode-steps", type=int, default=None, metavar="K",
                   help="override the passes the network decides in (1: one pass on the features; K > 1: "
                        "it also reads the decisions taken and fixes the most confident open ones each pass)")
    p.add_argument("--earlier-mean", choices=("on", "off"), default=None,
                   help="override whether each round of a slots network also reads the mean over the "
                        "slots dispatched before each slot (the schedule's queue)")
    p.add_argument("--steps", type=int, default=steps_default,
                   help=f"optimizer steps (default {steps_default})")
    if not sweep:  # a sweep takes --seeds
        p.add_argument("--seed", type=int, default=0, help="seed of initialization and shuffling")
    p.add_argument("--batch-size", type=int, default=1024)
    p.add_argument("--lr", type=float, default=2e-3, help="peak learning rate (warmup + cosine decay)")
    p.add_argument("--warmup-frac", type=float, default=0.05, help="share of steps spent warming up")
    p.add_argument("--weight-decay", type=float, default=1e-4, help="AdamW weight decay on kernels")
    p.add_argument("--clip-norm", type=float, default=1.0, help="global gradient-norm clipping")
    if sweep:
        p.add_argument("--latency-weight", type=float, default=1.0,
                       help="weight of the objective-aware term (chain: E[latency]/optimal, exact; dag: "
                            "E[J]/J*, sampled) in the 'latency' variant")
    else:
        p.add_argument("--latency-weight", type=float, default=0.0,
                       help="weight of the objective-aware term (chain: E[latency]/optimal, exact; dag: "
                            "E[J]/J* over sampled placements; default 0: off)")
    p.add_argument("--regret-weight", type=float, default=0.0,
                   help="weight of the single-change regret term: E over the network's sites of J(label "
                        "with that one decision changed) / J* - 1, summed over decisions (default 0: off)")
    p.add_argument("--objective-states", type=int, default=0, metavar="N",
                   help="the sampled objective term (dag) scores N states of each batch (default 0: all); "
                        "it is most of a small network's step")
    p.add_argument("--targets", choices=TARGETS, default="labels",
                   help="what the CE term imitates on each training state: the exact labels (default); "
                        "with --teacher, the teacher's placements, or those improved by local search "
                        "(teacher_ls, dag)")
    p.add_argument("--partials", choices=PARTIALS, default="random",
                   help="a network that decides in passes (--decode-steps > 1) is trained given its "
                        "targets' sites on a share of each state's decisions: a random share (default) or "
                        "the share it is most confident of, as its passes fix them (confident: one more "
                        "forward pass a step)")
    p.add_argument("--holdout", type=int, default=None, metavar="N",
                   help="held-out states at the end of --data (default min(5%%, 50000))")
    p.add_argument("--val-data", default=None, metavar="DIR", help="held-out dataset instead of --holdout")
    p.add_argument("--max-states", type=_count, default=None, metavar="N", help="use only the first N states")
    p.add_argument("--eval-every", type=int, default=1000, metavar="STEPS",
                   help="held-out evaluation period (0: only at the end)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _add_run_flags(p) -> None:
    p.add_argument("--out", required=True, metavar="RUN", help="run directory (resumed if it holds this run)")
    p.add_argument("--checkpoint-every", type=float, default=30.0, metavar="SECONDS",
                   help="checkpoint period in wall-clock seconds (and at the end)")
    p.add_argument("--init-from", default=None, metavar="RUN",
                   help="start from RUN's parameters (the same network, trained on the same training "
                        "split) instead of a random initialization, with a fresh optimizer and schedule: "
                        "continue a finished run for more steps, or fine-tune it with other losses")
    p.add_argument("--chunk-steps", type=int, default=50, help="steps per jitted call between checks")


def _model_config(args):
    """--model's default network for the scenario and sizes of --data (config.default_model), with the
    overrides."""
    import dataclasses  # noqa: PLC0415

    from offload_jax import dataset  # noqa: PLC0415
    from offload_jax.config import default_model  # noqa: PLC0415

    scenario = dataset.scenario_of(dataset.read_manifest(args.data))
    cfg = default_model(scenario.name, args.model, scenario.decision_shape)
    overrides = {k: v for k, v in (("hidden", tuple(args.hidden) if args.hidden else None),
                                   ("activation", args.activation), ("norm", args.norm),
                                   ("inputs", args.inputs), ("arch", args.arch),
                                   ("graph_width", args.graph_width), ("graph_layers", args.graph_layers),
                                   ("decode_steps", args.decode_steps),
                                   ("earlier_mean", None if args.earlier_mean is None
                                    else args.earlier_mean == "on")) if v is not None}
    return dataclasses.replace(cfg, **overrides).validate()


def _train_config(args, **extra):
    from offload_jax.config import TrainConfig  # noqa: PLC0415

    fields = dict(steps=args.steps, batch_size=args.batch_size, learning_rate=args.lr,
                  warmup_frac=args.warmup_frac, weight_decay=args.weight_decay, clip_norm=args.clip_norm,
                  seed=getattr(args, "seed", 0), latency_weight=args.latency_weight,
                  regret_weight=args.regret_weight, eval_every=args.eval_every, targets=args.targets,
                  objective_states=args.objective_states, partials=args.partials)
    return TrainConfig(**{**fields, **extra}).validate()


def _fit(args, kind: str, train_cfg, teacher_dir=None) -> int:
    from offload_jax import fit, locking, runs, splits  # noqa: PLC0415

    model_cfg = _model_config(args)
    teacher = runs.load_run(teacher_dir) if teacher_dir else None
    init = runs.load_run(args.init_from) if args.init_from else None
    source = splits.data_source(args.data, holdout=args.holdout, val_data=args.val_data,
                               max_states=args.max_states)
    identity = runs.run_identity(kind, model_cfg, train_cfg, teacher=teacher, data=source, init=init)
    # Locked before the data is loaded, so that a second writer is refused at once.
    with locking.hold(args.out, args.command):
        if runs.finished_meta(args.out, runs.check_run_dir(args.out, identity), train_cfg.steps):
            print(f"{args.out}: already finished ({train_cfg.steps} steps); nothing to do", file=sys.stderr)
            return 0
        data = splits.load_data(args.data, holdout=args.holdout, val_data=args.val_data,
                               max_states=args.max_states)
        try:
            meta = fit.fit(args.out, data, model_cfg, train_cfg, kind=kind, teacher=teacher,
                             teacher_dir=teacher_dir, progress=not args.no_progress,
                             chunk_steps=args.chunk_steps, checkpoint_every_s=args.checkpoint_every,
                             init=init, init_dir=args.init_from)
        except fit.TrainingError as exc:
            print(f"offload-jax {args.command}: {exc}", file=sys.stderr)
            return 1
    m = meta.get("metrics") or {}
    if m:
        print(f"{kind} {args.out}: step {meta['step']}, {meta['params']} params, held-out accuracy "
              f"{m['accuracy']:.4f}, exact match {m['exact_match']:.4f}, "
              f"objective ratio {m['objective_ratio_mean']:.4f}")
    return 0


def _add_train(sub) -> None:
    p = sub.add_parser("train", help="train a teacher or student on the optimal labels",
                       description="Train a placement network on a dataset's optimal labels "
                                   "(cross-entropy, optionally plus the latency-aware term); checkpoints "
                                   "to --out and resumes.")
    _add_training_flags(p, model_default="teacher", steps_default=20_000)
    _add_run_flags(p)
    p.set_defaults(handler=_cmd_train)


def _cmd_train(args) -> int:
    return _fit(args, args.model, _train_config(args))


def _add_distill(sub) -> None:
    p = sub.add_parser("distill", help="distill a teacher run into a student",
                       description="Train a student on alpha * CE(labels) + (1 - alpha) * T^2 * "
                                   "KL(teacher/T || student/T) [+ objective-aware term: the chain's exact "
                                   "expected latency, the dag's sampled expected J]; the teacher's logits on "
                                   "the training split are computed once, before the first step.")
    _add_training_flags(p, model_default="student", steps_default=20_000)
    _add_run_flags(p)
    p.add_argument("--teacher", required=True, metavar="RUN", help="trained teacher run directory")
    p.add_argument("--alpha", type=float, default=0.5, help="weight of the label CE (1: labels only)")
    p.add_argument("--temperature", type=float, default=2.0, help="softmax temperature of the KD term")
    p.set_defaults(handler=_cmd_distill)


def _cmd_distill(args) -> int:
    cfg = _train_config(args, alpha=args.alpha, temperature=args.temperature)
    return _fit(args, "distill", cfg, teacher_dir=args.teacher)


def _add_sweep(sub) -> None:
    p = sub.add_parser("sweep", help="train a grid of students in one vmapped program",
                       description="PureJaxRL-style ablation: jax.jit(jax.vmap(train)) over seeds x "
                                   "temperatures x alphas x loss variants; writes sweep.csv/.md/.json/.png.")
    _add_training_flags(p, model_default="student", steps_default=5_000, sweep=True)
    p.add_argument("--out", required=True, metavar="DIR", help="directory for the table and plot")
    p.add_argument("--teacher", default=None, metavar="RUN", help="teacher run (needed for alphas < 1)")
    p.add_argument("--seeds", type=_csv_of(int), default=[0, 1, 2])
    p.add_argument("--temperatures", type=_csv_of(float), default=[1.0, 4.0],
                   help="KD temperatures (alpha 1 has no KD term: its students train once, at the first)")
    p.add_argument("--alphas", type=_csv_of(float), default=[0.5, 1.0])
    p.add_argument("--losses", type=_csv_of(str), default=["ce", "latency"],
                   help="loss variants: ce (labels / KD only), latency (plus the objective-aware term: the "
                        "chain's expected latency, the dag's sampled expected J)")
    p.add_argument("--save-runs", action="store_true",
                   help="also save each member as a run directory, OUT/runs/<member> (e.g. "
                        "seed0_temp2_alpha1_latency), that evaluate, export, --teacher and --init-from take "
                        "like a train/distill run's (without optimizer state)")
    p.set_defaults(handler=_cmd_sweep)


def _cmd_sweep(args) -> int:
    from pathlib import Path  # noqa: PLC0415

    from offload_jax import runs, splits, sweep  # noqa: PLC0415

    points = sweep.grid(args.seeds, args.temperatures, args.alphas, args.losses)
    base = _train_config(args, latency_weight=0.0)  # per member: see sweep.point_config
    teacher = runs.load_run(args.teacher) if args.teacher else None
    data = splits.load_data(args.data, holdout=args.holdout, val_data=args.val_data,
                           max_states=args.max_states)
    model_cfg = _model_config(args)
    members = None
    if args.save_runs:  # every member's directory checked before the training
        members = sweep.member_runs(Path(args.out) / "runs", data, model_cfg, base, points, teacher=teacher,
                                    latency_weight=args.latency_weight)
    rows = sweep.finished_rows(members) if members is not None else None
    if rows is not None:
        print(f"every member's run in {Path(args.out) / 'runs'} finished before: the table rebuilt from "
              "their records, nothing trained", file=sys.stderr, flush=True)
        timing = {"members": len(points), "steps": base.steps, "compile_s": 0.0, "run_s": 0.0,
                  "reused_runs": True}
    else:
        print(f"training {len(points)} students x {base.steps} steps in one vmapped program "
              "(one device call: no progress bar)...", file=sys.stderr, flush=True)
        rows, params, timing = sweep.run_sweep(data, model_cfg, base, points, teacher=teacher,
                                               latency_weight=args.latency_weight)
        if members is not None:
            sweep.save_runs(members, data, model_cfg, params, rows, teacher=teacher, teacher_dir=args.teacher)
    if members is not None:
        for row, m in zip(rows, members, strict=True):
            row["run"] = str(m.run_dir.relative_to(args.out))
    info = {"data": args.data, "teacher": args.teacher, "model": model_cfg.to_dict(),
            "train": base.to_dict(), "timing": timing, **data.info}
    paths = sweep.write_results(args.out, rows, info)
    print(sweep.table_markdown(rows))
    print(f"{len(rows)} students in {timing['run_s']:.1f} s (+ {timing['compile_s']:.1f} s compile); "
          f"wrote {', '.join(str(p) for p in paths.values())}"
          + (f" and {len(rows)} run directories in {Path(args.out) / 'runs'}" if members else ""))
    return 0


def _add_export(sub) -> None:
    p = sub.add_parser("export", help="export a student run for the numpy-only runtime",
                       description="Write the run's weights and feature statistics into one .npz that "
                                   "offload_jax.export_runtime loads with numpy only (no JAX on the device).")
    p.add_argument("--run", required=True, metavar="RUN", help="trained run directory")
    p.add_argument("--out", type=_output_file, required=True, metavar="FILE", help="output .npz file")
    p.set_defaults(handler=_cmd_export)


def _cmd_export(args) -> int:
    from offload_jax import export  # noqa: PLC0415

    path = export.export_run(args.run, args.out)
    print(f"wrote {path}: load it with offload_jax.export_runtime.load({str(path)!r}) (numpy only)")
    return 0


def _add_quickstart(sub) -> None:
    p = sub.add_parser("quickstart", help="the whole method on a small default, in one command",
                       description="Generate data, train the teacher, distill the student, train the "
                                   "learning baselines, evaluate every policy, benchmark decision latency; "
                                   "writes DIR/report.json, DIR/report.md and PNG plots. Resumable.")
    p.add_argument("--out", required=True, metavar="DIR")
    p.add_argument("--scenario", default="chain", metavar="NAME",
                   help="chain (the paper's reproduction, default) or dag (T=10 layered task graphs)")
    p.add_argument("--tiny", action="store_true",
                   help="a seconds-long setting (tiny graphs and data) for smoke tests")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--train-states", type=int, default=None, metavar="N")
    p.add_argument("--teacher-steps", type=int, default=None, metavar="N")
    p.add_argument("--student-steps", type=int, default=None, metavar="N")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(handler=_cmd_quickstart)


def _cmd_quickstart(args) -> int:
    import dataclasses  # noqa: PLC0415

    from offload_jax import quickstart  # noqa: PLC0415

    if (args.scenario, args.tiny) not in quickstart.PRESETS:
        raise ConfigError(f"--scenario must be one of chain, dag, got {args.scenario!r}")
    qcfg = quickstart.PRESETS[args.scenario, args.tiny]
    overrides = {k: v for k, v in (("seed", args.seed), ("train_states", args.train_states),
                                   ("teacher_steps", args.teacher_steps),
                                   ("student_steps", args.student_steps)) if v is not None}
    qcfg = dataclasses.replace(qcfg, **overrides).validate()
    report = quickstart.run(args.out, qcfg, progress=not args.no_progress)
    quickstart.print_table(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
