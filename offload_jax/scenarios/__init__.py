"""Scenarios by name: `chain` (the paper's) and `dag` (task graphs, several users, energy).

A third scenario is one new module implementing `base.Scenario`, registered in `SCENARIOS`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from offload_jax.config import ConfigError, SystemConfig
from offload_jax.scenarios.base import Scenario
from offload_jax.scenarios.chain import ChainScenario
from offload_jax.scenarios.dag import DagScenario
from offload_jax.scenarios.dag.config import DagConfig

SCENARIOS: dict[str, type[Scenario]] = {"chain": ChainScenario, "dag": DagScenario}
_CONFIGS = {"chain": SystemConfig, "dag": DagConfig}


def _check_name(name: str) -> None:
    if name not in SCENARIOS:
        raise ConfigError(f"scenario must be one of {list(SCENARIOS)}, got {name!r}")


def make(name: str, overrides: Mapping[str, Any] | None = None) -> Scenario:
    """Scenario `name` with its default system, some keys replaced (values may be strings as typed
    after `--set`); errors name the key and what is allowed."""
    _check_name(name)
    return SCENARIOS[name](_CONFIGS[name]().with_overrides(dict(overrides or {})))


def of(cfg: Any) -> Scenario:
    """The scenario of a system configuration (SystemConfig: chain, DagConfig: dag)."""
    for name, config_type in _CONFIGS.items():
        if isinstance(cfg, config_type):
            return SCENARIOS[name](cfg.validate())
    raise TypeError(f"not a scenario configuration: {type(cfg).__name__}")


def as_scenario(scenario_or_system: Any) -> Scenario:
    """A scenario, given one or its system configuration."""
    return scenario_or_system if isinstance(scenario_or_system, Scenario) else of(scenario_or_system)


def from_system(name: str, system: Mapping[str, Any]) -> Scenario:
    """Scenario `name` with the system section of a manifest or a run (validated)."""
    _check_name(name)
    return SCENARIOS[name](_CONFIGS[name].from_dict(system))


def name_of_format(fmt: str) -> str:
    """The scenario whose datasets have format `fmt`."""
    for name, scenario in SCENARIOS.items():
        if scenario.format == fmt:
            return name
    raise ConfigError(f"unknown dataset format {fmt!r}; known: {[s.format for s in SCENARIOS.values()]}")
