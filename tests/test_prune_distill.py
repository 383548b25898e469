"""Pruning and distillation of fitted predictors, on real data (small slices, the `fast` preset).

Tolerances, and why:
- pruning reaches the asked sparsity within 2 points (global L1 pruning is exact on the pruned
  layers; the slack covers weights that were already zero);
- after the recovery fine-tune, accuracy on held-out rows drops by at most 0.02 (about 2 rows of
  penguins' 104 test rows, 3 of breast cancer's 171): 60-70% of an over-wide MLP is redundant;
- the distilled student is within 0.03 ROC AUC of the blend teacher on islr_default's test rows and
  far above the 0.5 chance floor (accuracy would say little: 96.7% of rows are the majority class).
"""
from __future__ import annotations

import time

import json

import numpy as np
import pytest
import torch

from waypost import Predictor
from waypost.deploy.distill import DistillationLoss, distill_predictor, student_hidden
from waypost.deploy.prune import prune_predictor, sparsity
from waypost.deploy.report import format_report, measure_latency
from waypost.errors import ConfigError
from waypost.scenarios.datasets import load_dataset, split

# Fewer epochs and boosting rounds than the preset: the tests measure the deploy steps, not the fit.
FAST = {"training": {"weight_histograms": False, "max_epochs": 20}, "model": {"gbm": {"n_estimators": 100}}}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One thread for torch and LightGBM. Tiny models gain nothing from threads, and on a busy
    2-core box OpenMP barriers stall: a LightGBM round on 318 rows took 39 ms instead of 0.4 ms.
    LightGBM's sklearn API passes num_threads = physical cores itself, so OpenMP limits don't reach it."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("lightgbm.sklearn._LGBMCpuCount", lambda only_physical_cores=True: 1, raising=False)
        yield
    torch.set_num_threads(before)


def _fit(name: str, target: str, model: str = "auto") -> tuple[Predictor, object, object]:
    train, test = split(load_dataset(name), target, test_size=0.3, seed=0)
    # auto picks batch 16 under 640 rows; 32 halves the steps on these small tables
    config = FAST if len(train) > 1000 else {**FAST, "training": {**FAST["training"], "batch_size": 32}}
    torch.manual_seed(0)  # MLPModel builds its net before the engine seeds: make the init repeatable
    p = Predictor(target=target, preset="fast", model=model, track=False, verbose=False, config=config).fit(train)
    return p, train, test


def _snapshot(p: Predictor) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in p.parts_["mlp"].net_.state_dict().items()}


@pytest.fixture(scope="module")
def breast_cancer():
    return _fit("breast_cancer", "target", "blend")


@pytest.fixture(scope="module")
def islr():
    return _fit("islr_default", "default")


# ---- pruning ----------------------------------------------------------------------------------
def test_prune_blend_reaches_sparsity_keeps_accuracy_and_leaves_input_alone(breast_cancer, tmp_path):
    p, train, test = breast_cancer
    state, weights, plan_len = _snapshot(p), dict(p.blend_weights_), len(p.plan_)
    proba = p.predict_proba(test).to_numpy()

    pruned, report = prune_predictor(p, train, amount=0.6, finetune_epochs=3, latency_runs=5)

    assert abs(report["sparsity"] - 0.6) <= 0.02, report["sparsity"]
    assert abs(sparsity(pruned.parts_["mlp"].net_, include_head=False)[0] - 0.6) <= 0.02
    assert not any(n.endswith(("_orig", "_mask")) for n in pruned.parts_["mlp"].net_.state_dict())
    before, after = p.evaluate(test), pruned.evaluate(test)
    assert after["accuracy"] >= before["accuracy"] - 0.02, (before, after)
    assert pruned.selected_ == p.selected_ == "blend"  # the fixture must exercise a real two-part blend
    # the blend weight was re-fitted for the pruned MLP
    assert set(pruned.blend_weights_) == {"gbm", "mlp"} and "blend weight" in pruned.plan_[-1].reason
    assert report["size_after"]["compressed_bytes"] < 0.75 * report["size_before"]["compressed_bytes"]
    assert pruned.plan_[-1].subject == "pruning" and "60% sparse" == pruned.plan_[-1].choice
    assert "pruning" in format_report(report)

    # the input predictor is untouched
    assert all(torch.equal(v, p.parts_["mlp"].net_.state_dict()[k]) for k, v in state.items())
    assert p.blend_weights_ == weights and len(p.plan_) == plan_len
    np.testing.assert_allclose(p.predict_proba(test).to_numpy(), proba)

    # zeros survive save/load, and the loaded model predicts the same
    loaded = Predictor.load(pruned.save(tmp_path / "pruned"))
    assert abs(sparsity(loaded.parts_["mlp"].net_, include_head=False)[0] - report["sparsity"]) < 1e-9
    np.testing.assert_allclose(loaded.predict_proba(test).to_numpy(), pruned.predict_proba(test).to_numpy(),
                               atol=1e-6)
    assert loaded.plan_[-1].subject == "pruning"


def test_prune_mlp_only_penguins_keeps_accuracy():
    p, train, test = _fit("penguins", "species", "mlp")
    pruned, report = prune_predictor(p, train, test, amount=0.7, finetune_epochs=3, latency_runs=5)
    assert abs(report["sparsity"] - 0.7) <= 0.02
    assert pruned.selected_ == "mlp"
    assert pruned.evaluate(test)["accuracy"] >= p.evaluate(test)["accuracy"] - 0.02
    assert report["per_layer_sparsity"]["head"] == 0.0  # the output layer stays dense by default


def test_prune_refuses_a_gbm_only_predictor():
    p, train, _ = _fit("penguins", "species", "lightgbm")
    with pytest.raises(ConfigError, match="neural part"):
        prune_predictor(p, train)


def test_prune_rejects_a_bad_amount(breast_cancer):
    p, train, _ = breast_cancer
    with pytest.raises(ConfigError, match="amount"):
        prune_predictor(p, train, amount=1.5)


# ---- distillation -------------------------------------------------------------------------------
def test_distilled_student_is_small_close_to_the_teacher_and_round_trips(islr, tmp_path):
    teacher, train, test = islr
    teacher_proba = teacher.predict_proba(test).to_numpy()

    student, report = distill_predictor(teacher, train, student="small", max_epochs=20, latency_runs=10)

    assert student.selected_ == "mlp" and set(student.parts_) == {"mlp"}
    assert student.config_.model.mlp.hidden == [64, 32]
    assert report["parameters"]["student"] * 5 <= report["parameters"]["teacher"]
    t_auc, s_auc = teacher.evaluate(test)["roc_auc"], student.evaluate(test)["roc_auc"]
    assert s_auc >= t_auc - 0.03 and s_auc >= 0.85, (t_auc, s_auc)
    student_proba = student.predict_proba(test).to_numpy()
    assert np.corrcoef(teacher_proba[:, 1], student_proba[:, 1])[0, 1] > 0.9
    assert student.plan_[-1].subject == "distillation" and student.plan_[-1].reason
    lat = report["latency"]
    assert report["speedup_batch_1"] == pytest.approx(
        lat["teacher"]["batch_1"]["p50_ms"] / lat["student"]["batch_1"]["p50_ms"])  # the ratio of what it timed
    np.testing.assert_allclose(teacher.predict_proba(test).to_numpy(), teacher_proba)  # teacher untouched

    loaded = Predictor.load(student.save(tmp_path / "student"))
    assert loaded.selected_ == "mlp"
    np.testing.assert_allclose(loaded.predict_proba(test).to_numpy(), student_proba, atol=1e-6)
    assert list(loaded.predict(test[:5])) == list(student.predict(test[:5]))


def test_regression_prune_and_distill_keep_r2():
    """diabetes (133 test rows, noisy): R2 may move by a few points either way; 0.05 is the slack."""
    p, train, test = _fit("diabetes", "target", "blend")
    dense_r2 = p.evaluate(test)["r2"]
    assert "mlp" in p.parts_, "pruning needs the MLP part in this fixture"
    pruned, report = prune_predictor(p, train, amount=0.6, finetune_epochs=3, latency_runs=5)
    assert abs(report["sparsity"] - 0.6) <= 0.02
    assert pruned.evaluate(test)["r2"] >= dense_r2 - 0.05
    student, report = distill_predictor(p, train, student="tiny", latency_runs=5)
    assert student.evaluate(test)["r2"] >= dense_r2 - 0.05
    assert report["agreement"]["pearson"] > 0.9


def test_cli_functions_load_run_save_and_print(breast_cancer, tmp_path, capsys):
    from waypost.deploy.distill_command import distill_command
    from waypost.deploy.prune import prune_command

    p, train, test = breast_cancer
    model_dir, data = p.save(tmp_path / "model"), tmp_path / "train.csv"
    train.to_csv(data, index=False)
    reports = [prune_command(model_dir, data, tmp_path / "pruned", 0.5, 1),
               distill_command(model_dir, data, tmp_path / "student", "tiny")]
    json.dumps(reports)  # plain data: the CLI can write it as JSON
    out = capsys.readouterr().out
    assert "pruning:" in out and "distillation:" in out and "latency b=1 p50" in out
    assert Predictor.load(tmp_path / "pruned").plan_[-1].subject == "pruning"
    student = Predictor.load(tmp_path / "student")
    assert student.selected_ == "mlp" and student.evaluate(test)["accuracy"] > 0.9


def test_distillation_loss_reduces_to_cross_entropy_at_the_ends():
    torch.manual_seed(0)
    logits, y = torch.randn(8, 3), torch.randint(0, 3, (8,))
    onehot = torch.nn.functional.one_hot(y, 3).float()
    target = torch.cat([torch.softmax(torch.randn(8, 3), 1), y[:, None].float()], 1)
    ce = torch.nn.functional.cross_entropy(logits, y)
    assert torch.allclose(DistillationLoss(3, 2.0, alpha=0.0)(logits, target), ce)
    # alpha=1, T=1, one-hot soft labels: KL(onehot || p) is the cross entropy
    hard_soft = torch.cat([onehot, y[:, None].float()], 1)
    assert torch.allclose(DistillationLoss(3, 1.0, alpha=1.0)(logits, hard_soft), ce, atol=1e-5)


def test_student_presets_and_bad_values():
    assert student_hidden("small") == [64, 32] and student_hidden("tiny") == [32]
    assert student_hidden("16,8") == [16, 8] and student_hidden([12]) == [12]
    with pytest.raises(ConfigError, match="student"):
        student_hidden("huge")
    with pytest.raises(ConfigError, match="positive"):
        student_hidden([0])


def test_measure_latency_reports_percentiles():
    out = measure_latency(lambda: sum(range(100)), n_runs=20)
    assert out["n_runs"] == 20 and 0 < out["p50_ms"] < 50
    slow = measure_latency(lambda: time.sleep(0.005), n_runs=5, warmup=0)
    assert slow["p50_ms"] >= 5.0 and slow["n_runs"] == 5  # milliseconds, of what was really run
