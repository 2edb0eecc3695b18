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


def _slot_arrays(model) -> dict[str, np.ndarray]:
    """A SlotNetwork's weights as named arrays (`export_runtime.StudentPolicy._init_slots` reads them)."""
    def f32(x):
        return np.asarray(x[...], np.float32)

    arrays = {"embed_kernel": f32(model.embed.kernel), "embed_bias": f32(model.embed.bias),
              "slot_embedding": f32(model.slot_embedding), "user_embedding": f32(model.user_embedding),
              "readout_kernel": f32(model.readout.kernel), "readout_bias": f32(model.readout.bias)}
    if model.given is not None:
        arrays["given_kernel"] = f32(model.given.kernel)
    for i, layer in enumerate(model.rounds):
        arrays[f"round_kernel_{i}"], arrays[f"round_bias_{i}"] = f32(layer.kernel), f32(layer.bias)
    return arrays


def student_arrays(model, stats, model_cfg, system_cfg) -> dict[str, np.ndarray]:
    """Weights, feature statistics and metadata of a student (a PlacementMLP, chain or dag, or a dag
    SlotNetwork) as named numpy arrays."""
    if model_cfg.arch not in ("mlp", "slots"):
        raise ValueError(f"only MLP and slots students export to the numpy runtime, got arch "
                         f"{model_cfg.arch!r}")
    if model_cfg.arch == "slots":
        arrays = _slot_arrays(model)
        return _with_stats_and_meta(arrays, stats, model_cfg, system_cfg, {
            "arch": "slots", "rounds": len(model.rounds), "width": model_cfg.graph_width,
            "earlier_mean": model_cfg.earlier_mean})
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
    return _with_stats_and_meta(arrays, stats, model_cfg, system_cfg, {
        "depth": depth,
        "layer_norm_eps": float(model.norms[0].epsilon) if model_cfg.norm == "layer" else 1e-6})


def _with_stats_and_meta(arrays, stats, model_cfg, system_cfg, network_meta: dict) -> dict[str, np.ndarray]:
    """`arrays` with the feature statistics and the metadata every exported student carries."""
    arrays["feature_mean"] = np.asarray(stats.mean, np.float32)
    arrays["feature_std"] = np.asarray(stats.std, np.float32)
    spec = feature_spec(system_cfg)
    meta = {
        "format": FORMAT, "features": spec["version"], "scenario": spec.get("scenario", "chain"),
        "users": getattr(system_cfg, "users", 1), "tasks": system_cfg.tasks,
        "subcarriers": system_cfg.subcarriers, "activation": model_cfg.activation,
        "norm": model_cfg.norm, "inputs": model_cfg.inputs, "decode_steps": model_cfg.decode_steps,
        "num_inputs": num_inputs(model_cfg.inputs, system_cfg), **network_meta,
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
