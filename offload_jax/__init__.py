"""offload_jax: learned edge computation offloading in JAX.

This init imports nothing heavy on purpose: `offload_jax.export_runtime` must be
importable on an end device that has numpy but no JAX.
"""

__version__ = "0.1.0"
