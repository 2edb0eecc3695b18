"""SystemConfig: SPEC defaults and keys, validation with errors naming the field, overrides."""

import dataclasses
import json
import math

import pytest
from reference import SPEC_DEFAULTS

from offload_jax.config import ConfigError, SystemConfig, field_names, parse_overrides


def test_defaults_are_the_spec_table():
    d = SystemConfig().to_dict()
    assert list(d) == list(SPEC_DEFAULTS)  # exactly the SPEC keys, in SPEC order
    assert d == SPEC_DEFAULTS
    for key, value in d.items():
        assert type(value) is type(SPEC_DEFAULTS[key]), key
    assert field_names() == tuple(SPEC_DEFAULTS)
    assert json.loads(json.dumps(d)) == SPEC_DEFAULTS


def test_defaults_validate_and_config_is_hashable():
    cfg = SystemConfig()
    assert cfg.validate() is cfg
    assert hash(cfg) == hash(SystemConfig())  # usable as a static jit argument
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.tasks = 3


BAD_VALUES = [
    ("tasks", 0), ("tasks", -2), ("tasks", True), ("tasks", 2.5), ("tasks", "3"),
    ("edge_cores", 0), ("edge_cores", -1), ("edge_cores", False),
    ("subcarriers", 0), ("subcarriers", 1.0),
    ("cycles_range", (-1.0, 2.0e9)), ("cycles_range", (0.0, 2.0e9)), ("cycles_range", (2.0e9, 5.0e7)),
    ("cycles_range", (math.nan, 1.0)), ("cycles_range", (1.0, math.inf)), ("cycles_range", (1.0,)),
    ("cycles_range", (1.0, 2.0, 3.0)), ("cycles_range", [1.0, 2.0]), ("cycles_range", (True, 2.0)),
    ("cycles_range", ("1", "2")),
    ("data_bits_range", (0.0, 1.0)), ("data_bits_range", (4.0e7, 4.0e5)),
    ("f_local_range", (-1.0e9, 1.0e9)), ("f_local_range", (4.0e9, 1.0e9)),
    ("f_cloud_range", (0.0, 0.0)), ("f_cloud_range", (4.0e10, 2.0e10)),
    ("backhaul_rate_range", (-5.0e6, 1.0e8)), ("backhaul_rate_range", (1.0e8, 5.0e6)),
    ("cloud_delay_range", (-0.01, 0.1)), ("cloud_delay_range", (0.15, 0.02)),
    ("cloud_delay_range", (0.0, math.nan)),
    ("mean_snr_db_range", (20.0, 0.0)), ("mean_snr_db_range", (0.0, math.inf)),
    ("edge_core_hz", 0.0), ("edge_core_hz", -2.5e9), ("edge_core_hz", math.nan), ("edge_core_hz", math.inf),
    ("edge_core_hz", True), ("edge_core_hz", "2.5e9"),
    ("subcarrier_bandwidth", 0.0), ("subcarrier_bandwidth", -1.0e6),
    ("downlink_factor", 0.0), ("downlink_factor", math.nan),
    ("subcarrier_free_prob", -0.1), ("subcarrier_free_prob", 1.01), ("subcarrier_free_prob", math.nan),
    ("subcarrier_free_prob", True),
]


@pytest.mark.parametrize(("field", "value"), BAD_VALUES)
def test_validate_rejects_bad_value_naming_the_field(field, value):
    cfg = dataclasses.replace(SystemConfig(), **{field: value})
    with pytest.raises(ConfigError, match=field):
        cfg.validate()


@pytest.mark.parametrize(("field", "value"), [
    ("tasks", 1), ("subcarriers", 1), ("edge_cores", 1),
    ("subcarrier_free_prob", 0.0), ("subcarrier_free_prob", 1.0),
    ("cloud_delay_range", (0.0, 0.0)), ("mean_snr_db_range", (-10.0, -3.0)),
    ("cycles_range", (1.0e9, 1.0e9)), ("f_local_range", (1, 2)),
])
def test_validate_accepts_edge_values(field, value):
    cfg = dataclasses.replace(SystemConfig(), **{field: value})
    assert cfg.validate() is cfg


def test_parse_overrides_and_with_overrides():
    items = ["backhaul_rate_range=1e6,5e7", "tasks=6", " subcarrier_free_prob = 0.25 ",
             "cloud_delay_range=[0.01, 0.02]"]
    overrides = parse_overrides(items)
    assert overrides == {"backhaul_rate_range": "1e6,5e7", "tasks": "6", "subcarrier_free_prob": "0.25",
                         "cloud_delay_range": "[0.01, 0.02]"}
    cfg = SystemConfig().with_overrides(overrides)
    assert cfg.backhaul_rate_range == (1.0e6, 5.0e7)
    assert cfg.tasks == 6 and type(cfg.tasks) is int
    assert cfg.subcarrier_free_prob == 0.25
    assert cfg.cloud_delay_range == (0.01, 0.02)
    # Everything else keeps its default.
    assert dataclasses.replace(cfg, backhaul_rate_range=(5.0e6, 1.0e8), tasks=10, subcarrier_free_prob=0.5,
                               cloud_delay_range=(0.02, 0.15)) == SystemConfig()
    # Non-string values are taken as they are.
    cfg = SystemConfig().with_overrides({"tasks": 3, "f_cloud_range": [1e10, 2e10]})
    assert cfg.tasks == 3 and cfg.f_cloud_range == (1e10, 2e10)
    assert parse_overrides(None) == {} and parse_overrides([]) == {}
    assert parse_overrides(["a=b=c"]) == {"a": "b=c"}


def test_unknown_override_key_lists_the_allowed_ones():
    for apply in (lambda: SystemConfig().with_overrides({"backhaul_rate": "1e6"}),
                  lambda: SystemConfig().with_overrides(parse_overrides(["nope=1"])),
                  lambda: SystemConfig.from_dict({**SPEC_DEFAULTS, "extra": 1})):
        with pytest.raises(ConfigError, match="allowed") as info:
            apply()
        for key in SPEC_DEFAULTS:
            assert key in str(info.value)


def test_parse_overrides_rejects_item_without_equals():
    with pytest.raises(ConfigError, match="key=value"):
        parse_overrides(["backhaul_rate_range"])


@pytest.mark.parametrize(("key", "text"), [
    ("tasks", "0"), ("tasks", "abc"), ("tasks", "6.5"), ("tasks", "nan"), ("tasks", "inf"),
    ("cycles_range", "1e9"), ("cycles_range", "1,2,3"), ("cycles_range", "a,b"), ("cycles_range", "2e9,1e9"),
    ("backhaul_rate_range", "0,1e6"), ("subcarrier_free_prob", "1.5"), ("subcarrier_free_prob", "nan"),
    ("edge_core_hz", "-1"), ("edge_core_hz", "fast"), ("cloud_delay_range", "-1,0"),
])
def test_bad_override_strings_name_the_field(key, text):
    with pytest.raises(ConfigError, match=key):
        SystemConfig().with_overrides(parse_overrides([f"{key}={text}"]))


def test_from_dict_round_trip_and_partial_dicts():
    cfg = SystemConfig(tasks=4, cycles_range=(1.0e8, 3.0e9), subcarriers=3, subcarrier_free_prob=0.0,
                       mean_snr_db_range=(-5.0, 5.0))
    assert SystemConfig.from_dict(cfg.to_dict()) == cfg
    assert SystemConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    assert SystemConfig.from_dict({}) == SystemConfig()
    assert SystemConfig.from_dict({"tasks": 12.0}).tasks == 12  # JSON may give 12.0
    with pytest.raises(ConfigError, match="cycles_range"):
        SystemConfig.from_dict({"cycles_range": [True, 2.0]})
    with pytest.raises(ConfigError, match="edge_cores"):
        SystemConfig.from_dict({"edge_cores": True})
    with pytest.raises(ConfigError, match="tasks"):
        SystemConfig.from_dict({"tasks": 0})


def test_model_inputs_validated_and_old_dicts_read_all_features():
    from offload_jax.config import INPUTS, ModelConfig

    assert ModelConfig.from_dict({"hidden": [8], "activation": "relu", "norm": "none"}).inputs == "all"
    cfg = ModelConfig(hidden=(8,), activation="relu", norm="none", inputs="fields").validate()
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ConfigError, match=r"inputs must be one of \('all', 'fields'\), got 'raw'"):
        ModelConfig(inputs="raw").validate()
    assert INPUTS == ("all", "fields")
