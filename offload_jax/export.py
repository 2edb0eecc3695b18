"""Export a trained student to one `.npz` for the numpy-only runtime (`export_runtime.py`)."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import numpy as np

from offload_jax import __version__, atomic
from offload_jax.export_runtime import FORMAT
from offload_jax.features import feature_spec, num_inputs


def student_arrays(model, stats, model_cfg, system_cfg) -> dict[str, np.ndarray]:
    """Weights, feature statistics and metadata of a PlacementMLP (chain or dag) as named numpy arrays."""
    if model_cfg.arch != "mlp":
        raise ValueError(f"only MLP students export to the numpy runtime, got arch {model_cfg.arch!r}")
    depth = len(model.layers)
    if model.partial_width and not depth:
        raise ValueError("a student that decodes in steps needs a hidden layer to export")
    arrays: dict[str, np.ndarray] = {}
    for i in range(depth):
        arrays[f"kernel_{i}"] = np.asarray(model.layers[i].kernel[...], np.float32)
        arrays[f"bias_{i}"] = np.asarray(model.layers[i].bias[...], np.float32)
        if model_cfg.norm == "layer":
            arrays[f"scale_{i}"] = np.asarray(model.norms[i].scale[...], np.float32)
            arrays[f"shift_{i}"] = np.asarray(model.norms[i].bias[...], np.float32)
    if model.partial_width:  # the first layer's rows for the partial placement, apart
        arrays["partial_kernel"] = arrays["kernel_0"][-model.partial_width:]
        arrays["kernel_0"] = arrays["kernel_0"][:-model.partial_width]
    arrays["head_kernel"] = np.asarray(model.head.kernel[...], np.float32)
    arrays["head_bias"] = np.asarray(model.head.bias[...], np.float32)
    arrays["feature_mean"] = np.asarray(stats.mean, np.float32)
    arrays["feature_std"] = np.asarray(stats.std, np.float32)
    spec = feature_spec(system_cfg)
    meta = {
        "format": FORMAT, "features": spec["version"], "scenario": spec.get("scenario", "chain"),
        "users": getattr(system_cfg, "users", 1), "tasks": system_cfg.tasks,
        "subcarriers": system_cfg.subcarriers, "depth": depth, "activation": model_cfg.activation,
        "norm": model_cfg.norm, "inputs": model_cfg.inputs, "decode_steps": model_cfg.decode_steps,
        "num_inputs": num_inputs(model_cfg.inputs, system_cfg),
        "layer_norm_eps": float(model.norms[0].epsilon) if model_cfg.norm == "layer" else 1e-6,
        "system": system_cfg.to_dict(), "offload_jax": __version__,
    }
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    return arrays


def export_run(run_dir: str | os.PathLike, out_file: str | os.PathLike) -> Path:
    """Write the run's model as an exported student file (atomically). Returns the path."""
    from offload_jax.runs import load_run  # noqa: PLC0415 (runs pulls in orbax)

    run = load_run(run_dir)
    arrays = student_arrays(run.model, run.stats, run.model_cfg, run.system)
    out = Path(out_file)
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return atomic.write_bytes(out, buf.getvalue())
