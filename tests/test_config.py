from __future__ import annotations

import pytest

from waypost.config import WaypostConfig
from waypost.errors import ConfigError


def test_yaml_round_trip_keeps_every_value_and_reason(tmp_path):
    cfg = WaypostConfig.create(
        "species", "fast", task="multiclass", task_reason="3 classes",
        features={"bill_length_mm": {"type": "numeric", "reason": "float64, 2 missing"}},
        dropped={"rowid": "ID-like"},
    )
    path = tmp_path / "waypost.yaml"
    cfg.to_yaml(path)
    back = WaypostConfig.from_yaml(path)
    assert back == cfg
    assert "float64, 2 missing" in path.read_text()
    assert back.training.max_epochs == 40  # the preset's value is materialised, visible in the file


def test_unknown_key_is_an_error_naming_the_dotted_key(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("target: y\ntraining:\n  max_epoch: 3\n")
    with pytest.raises(ConfigError, match=r"unknown key 'training.max_epoch'"):
        WaypostConfig.from_yaml(path)


def test_bad_value_names_key_and_value():
    with pytest.raises(ConfigError, match=r"'training.learning_rate'.*got -1"):
        WaypostConfig.create("y", training={"learning_rate": -1})
    with pytest.raises(ConfigError, match=r"'features.a.type'"):
        WaypostConfig.create("y", features={"a": {"type": "spreadsheet"}})


def test_preset_defaults_yield_to_user_values():
    cfg = WaypostConfig.create("y", "best", training={"max_epochs": 7})
    assert cfg.training.max_epochs == 7
    assert cfg.training.early_stopping_patience == 40  # still from the preset
    with pytest.raises(ConfigError, match="preset"):
        WaypostConfig.create("y", "turbo")


def test_missing_file_and_non_mapping(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        WaypostConfig.from_yaml(tmp_path / "nope.yaml")
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="mapping"):
        WaypostConfig.from_yaml(tmp_path / "list.yaml")
