"""Numpy-only decision function for end devices that cannot carry JAX.

`offload-jax export` writes a student's weights and feature statistics into one
`.npz`; this module loads it and decides placements from the packed state vector
(`offload_jax.system.pack` layout: the SPEC fields in order, flattened to float32).

Importing this module imports numpy only (tests check that no JAX is loaded).
The feature computation and the stage cost tables below deliberately restate
`features.raw_features` and `cost.stage_costs` in numpy; a test keeps them equal.
"""

from __future__ import annotations

import json
import os

import numpy as np

FORMAT = "offload-jax-student/1"
COST_EPS = np.float32(1e-6)  # must equal features.COST_EPS


def _gelu(x):  # tanh approximation, as jax.nn.gelu's default
    return 0.5 * x * (1.0 + np.tanh(np.float32(0.7978845608028654) * (x + np.float32(0.044715) * x**3)))


_ACTIVATIONS = {
    "relu": lambda x: np.maximum(x, 0.0),
    "gelu": _gelu,
    "silu": lambda x: x / (1.0 + np.exp(-x)),
    "tanh": np.tanh,
}


class StudentPolicy:
    """Decides placements from packed state vectors with numpy only."""

    def __init__(self, path: str | os.PathLike):
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
        meta = json.loads(bytes(arrays.pop("meta")).decode())
        if meta.get("format") != FORMAT:
            raise ValueError(f"{path}: not an exported student (format {meta.get('format')!r}, "
                             f"expected {FORMAT!r})")
        self.meta = meta
        self.tasks = t = int(meta["tasks"])
        self.subcarriers = n = int(meta["subcarriers"])
        self.activation = _ACTIVATIONS[meta["activation"]]
        self.layer_norm = meta["norm"] == "layer"
        self.layer_norm_eps = np.float32(meta.get("layer_norm_eps", 1e-6))
        depth = int(meta["depth"])
        self.kernels = [arrays[f"kernel_{i}"] for i in range(depth)]
        self.biases = [arrays[f"bias_{i}"] for i in range(depth)]
        self.scales = [arrays[f"scale_{i}"] for i in range(depth)] if self.layer_norm else []
        self.shifts = [arrays[f"shift_{i}"] for i in range(depth)] if self.layer_norm else []
        self.head_kernel, self.head_bias = arrays["head_kernel"], arrays["head_bias"]
        self.mean, self.inv_std = arrays["feature_mean"], 1.0 / arrays["feature_std"]
        # Offsets of the SPEC fields in the packed vector.
        sizes = [("cycles", t), ("data_bits", t + 1), ("f_local", 1), ("edge_cores_free", 1),
                 ("f_edge", 1), ("f_cloud", 1), ("snr", n), ("subcarrier_free", n), ("rate_up", 1),
                 ("rate_down", 1), ("backhaul_rate", 1), ("cloud_delay", 1)]
        self.slices, start = {}, 0
        for name, size in sizes:
            self.slices[name] = slice(start, start + size)
            start += size
        self.packed_size = start
        s = self.slices
        self._log_idx = np.r_[s["cycles"], s["data_bits"], s["f_local"], s["f_edge"], s["f_cloud"],
                              s["rate_up"], s["rate_down"], s["backhaul_rate"]]

    def features(self, packed: np.ndarray) -> np.ndarray:
        """(n, P) packed states -> (n, F) normalized features (same as features.features)."""
        x = np.asarray(packed, dtype=np.float32)
        s, t = self.slices, self.tasks
        cycles, bits = x[:, s["cycles"]], x[:, s["data_bits"]]
        speeds = np.concatenate([x[:, s["f_local"]], x[:, s["f_edge"]], x[:, s["f_cloud"]]], axis=1)
        iu, idn, ib = (1.0 / x[:, s["rate_up"]], 1.0 / x[:, s["rate_down"]],
                       1.0 / x[:, s["backhaul_rate"]])
        tau, zero = x[:, s["cloud_delay"]], np.zeros_like(iu)
        k = np.stack([np.concatenate([zero, iu, iu + ib], 1), np.concatenate([idn, zero, ib], 1),
                      np.concatenate([ib + idn, ib, zero], 1)], axis=1)  # (n, 3, 3)
        f = np.stack([np.concatenate([zero, zero, tau], 1), np.concatenate([zero, zero, tau], 1),
                      np.concatenate([tau, tau, zero], 1)], axis=1)
        compute = cycles[:, :, None] / speeds[:, None, :]  # (n, T, 3)
        first = bits[:, 0, None] * k[:, 0, :] + f[:, 0, :] + compute[:, 0, :]
        step = bits[:, 1:t, None, None] * k[:, None] + f[:, None] + compute[:, 1:, None, :]
        last = bits[:, t, None] * k[:, :, 0] + f[:, :, 0]
        n = x.shape[0]
        logs = np.log(x[:, self._log_idx])
        raw = np.concatenate([
            logs, x[:, s["cloud_delay"]],
            np.log1p(x[:, s["snr"]]), x[:, s["subcarrier_free"]],
            np.log(np.concatenate([first, step.reshape(n, -1), last], axis=1) + COST_EPS),
        ], axis=1)
        return (raw - self.mean) * self.inv_std

    def logits(self, packed: np.ndarray) -> np.ndarray:
        h = self.features(packed)
        for i, (w, b) in enumerate(zip(self.kernels, self.biases, strict=True)):
            h = h @ w + b
            if self.layer_norm:
                mu = h.mean(axis=-1, keepdims=True)
                var = ((h - mu) ** 2).mean(axis=-1, keepdims=True)
                h = (h - mu) / np.sqrt(var + self.layer_norm_eps) * self.scales[i] + self.shifts[i]
            h = self.activation(h)
        return (h @ self.head_kernel + self.head_bias).reshape(h.shape[0], self.tasks, 3)

    def __call__(self, packed: np.ndarray) -> np.ndarray:
        """(n, P) or (P,) packed states -> placements (n, T) or (T,) int8."""
        packed = np.asarray(packed, dtype=np.float32)
        single = packed.ndim == 1
        out = np.argmax(self.logits(packed[None] if single else packed), axis=-1).astype(np.int8)
        return out[0] if single else out


def load(path: str | os.PathLike) -> StudentPolicy:
    return StudentPolicy(path)
