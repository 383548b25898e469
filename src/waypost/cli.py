"""`waypost` command line. Every heavy import happens inside a command, so `waypost --help` is instant."""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Optional

try:
    import typer
except ImportError:  # `pip install waypost[runtime]` alone has no command line
    sys.stderr.write("waypost's command line needs its extras: pip install 'waypost[train]' (or [serve], [all])\n")
    raise SystemExit(1) from None

from waypost.cli_show import bundle_info, print_export_report, print_metrics, print_plan  # noqa: E402
from waypost.serve.defaults import (MAX_BATCH_SIZE, MAX_BODY_BYTES, MAX_IMAGE_PIXELS, MAX_LATENCY_MS,  # noqa: E402
                                    QUEUE_SIZE, TIMEOUT_MS)

app = typer.Typer(
    help="waypost: from a table to a tracked, evaluated model, exported as a bundle and served.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        from waypost import __version__

        typer.echo(f"waypost {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                 help="Print waypost's version and exit."),
) -> None:
    """waypost: from a table to a tracked, evaluated model, exported as a bundle and served."""


def _console():  # type: ignore[no-untyped-def]
    from rich.console import Console

    return Console(highlight=False)


def _fail(exc: Exception) -> None:
    from rich.console import Console

    Console(stderr=True, highlight=False).print(f"[bold red]error:[/] {exc}")
    raise typer.Exit(code=2)


def _run(fn):  # type: ignore[no-untyped-def]
    """Turn waypost's own errors into a one-line message and exit code 2 (no traceback)."""
    from waypost.errors import WaypostError

    try:
        return fn()
    except WaypostError as exc:
        _fail(exc)


@app.command()
def init(
    data: Path = typer.Argument(..., help="Training table: CSV, TSV, Parquet, JSON lines or Feather."),
    target: str = typer.Option(..., "--target", "-t", help="Column to predict."),
    task: Optional[str] = typer.Option(None, help="binary, multiclass or regression (default: inferred)."),
    preset: str = typer.Option("medium", help="fast, medium or best."),
    output: Path = typer.Option(Path("waypost.yaml"), "--output", "-o", help="Config file to write."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing config file."),
) -> None:
    """Infer column types and the task, choose architectures, and write waypost.yaml with the reasons."""

    def go() -> None:
        from waypost.config import WaypostConfig
        from waypost.data.io import read_table
        from waypost.errors import ConfigError
        from waypost.pipelines.plan import resolve_job

        if output.exists() and not force:
            raise ConfigError(f"{output} exists; pass --force to overwrite it")
        table_path = data
        if data.is_dir():  # a folder of class subfolders is a data set: build its (image, label) table
            from waypost.data.image_folder import table_from_folder
            from waypost.data.io import TableWriter

            table = table_from_folder(data)
            table_path = output.resolve().parent / f"{data.resolve().name}_images.csv"
            with TableWriter(table_path) as w:
                w.write(table.rename(columns={"label": target}) if target != "label" else table)
            _console().print(f"{len(table)} images in {table['label'].nunique()} classes -> {table_path}")
        df = read_table(table_path)
        rel = os.path.relpath(Path(table_path).resolve(), output.resolve().parent)
        cfg = WaypostConfig.create(target, preset, task=task, data={"train": rel})
        cfg, plan = resolve_job(df, cfg)
        output.parent.mkdir(parents=True, exist_ok=True)
        cfg.to_yaml(output)
        print_plan(plan, f"plan for {data.name} ({len(df)} rows)")
        _console().print(f"wrote [bold]{output}[/]; next: waypost train {output}")

    _run(go)


@app.command()
def train(
    config: Path = typer.Argument(..., help="waypost.yaml written by `waypost init`."),
    output: Path = typer.Option(Path("runs"), "--output", "-o", help="Folder for model directories."),
    name: Optional[str] = typer.Option(None, help="Model directory name (default: target + time)."),
    tracking_uri: Optional[str] = typer.Option(None, "--tracking-uri", help="MLflow URI (default WAYPOST_TRACKING_URI or .waypost/)."),
    no_track: bool = typer.Option(False, "--no-track", help="Do not log to MLflow."),
    time_limit: Optional[float] = typer.Option(None, help="Seconds for the whole fit, saving and logging included."),
    resume: bool = typer.Option(False, "--resume", help="Continue the interrupted fit of this config and data "
                                "from its checkpoint (a fresh fit when none matches)."),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
) -> None:
    """Train with the production defaults, track in MLflow, register the model and save it under runs/.

    Every epoch is checkpointed under training.checkpoint_dir (default .waypost/checkpoints); the checkpoint is removed when the fit succeeds.

    Ctrl-C or SIGTERM stops the fit at the next batch: the MLflow run ends KILLED, one line says how to resume, and the exit code is 130 (SIGINT) or 143 (SIGTERM).
    """
    started = time.perf_counter()
    from waypost.cli_train import interrupted_line, point_latest, train_command

    again = train_command(config, output, name, tracking_uri, no_track, time_limit, quiet)

    def go() -> None:
        from waypost.config import WaypostConfig
        from waypost.errors import ConfigError
        from waypost.pipelines.fit import fit
        from waypost.predictor import Predictor

        cfg = WaypostConfig.from_yaml(config)
        if tracking_uri:
            cfg.tracking.uri = tracking_uri
        if no_track:
            cfg.tracking.enabled = False
        if time_limit:
            cfg.training.time_limit = time_limit
        if cfg.training.checkpoint_dir is None:
            cfg.training.checkpoint_dir = str(Path(".waypost") / "checkpoints")
        if not cfg.data.train:
            raise ConfigError(f"{config}: 'data.train' is not set: name the training table")
        base = config.resolve().parent
        train_path = base / cfg.data.train
        valid_path = base / cfg.data.valid if cfg.data.valid else None
        run_name = name or f"{cfg.target}-{time.strftime('%Y%m%d-%H%M%S')}"
        model_dir = output / run_name
        predictor = Predictor.from_fitted(fit(cfg, train_path, valid_path, verbose=not quiet, resume=resume,
                                              save_to=model_dir, started=started))
        latest = point_latest(output, run_name)
        print_plan(predictor.plan_)
        print_metrics(predictor.validation_metrics_, "validation metrics")
        reg = predictor.registered_model_
        if reg:
            _console().print(f"MLflow run {predictor.lineage_.get('mlflow_run_id')}; registered "
                             f"[bold]{reg.get('registered_model')}[/] version {reg.get('version')}")
        _console().print(f"saved [bold]{model_dir}[/] ({latest} points to it)")

    from waypost.train.interrupt import FitInterrupted, interrupt_guard

    with interrupt_guard() as guard:
        try:
            _run(go)
        except FitInterrupted as exc:
            sys.stderr.write(interrupted_line(exc, again) + "\n")
            raise typer.Exit(code=exc.exit_code) from None
    if guard.late_signal is not None:
        import signal

        sys.stderr.write(f"{signal.Signals(guard.late_signal).name} arrived while the finished model was being "
                         "registered and saved; that was allowed to complete (nothing was lost)\n")


@app.command()
def evaluate(
    model: Path = typer.Argument(..., help="Model directory (e.g. runs/latest) or bundle."),
    data: Path = typer.Argument(..., help="Labelled table."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Also write the metrics to this JSON file."),
) -> None:
    """Metrics of a saved model or bundle on labelled data, as a table and JSON."""

    def go() -> None:
        from waypost.data.io import read_table

        from waypost.runtime.bundle import is_bundle

        from waypost.data.target import drop_missing_target

        if is_bundle(model):
            import waypost.runtime as rt
            from waypost.deploy.bundle import bundle_metrics

            scorer: Any = rt.load(model)
            evaluate_on = lambda df: bundle_metrics(scorer, df)  # noqa: E731
        else:
            from waypost.predictor import Predictor

            scorer = Predictor.load(model)
            evaluate_on = scorer.evaluate
        df = read_table(data)
        target = scorer.target if is_bundle(model) else scorer.target_
        kept, dropped = (drop_missing_target(df, target) if target in df.columns else (df, 0))
        metrics = evaluate_on(kept)
        if dropped:
            _console().print(f"[yellow]{dropped} of {len(df)} rows have no '{target}' value and are not "
                             f"scored[/]; the metrics are on the other {len(kept)}")
        print_metrics(metrics, f"metrics on {data.name} ({len(kept)} rows)")
        text = json.dumps(metrics, indent=2)
        if json_out:
            json_out.write_text(text)
        typer.echo(text)

    _run(go)


@app.command()
def predict(
    model: Path = typer.Argument(..., help="Bundle (waypost export) or model directory (e.g. runs/latest)."),
    data: Path = typer.Argument(..., help="Table to score (CSV or Parquet, streamed in chunks), or a folder "
                                          "of images (any depth) for an image model."),
    output: Path = typer.Option(..., "--output", "-o", help="Output CSV or Parquet."),
    chunk_rows: Optional[int] = typer.Option(
        None, help="Rows (or images) per chunk, 50,000 by default and 256 for image models: "
                   "memory stays flat whatever the input's size."),
    proba: bool = typer.Option(True, help="Add one probability column per class."),
    keep: Optional[str] = typer.Option(None, help="Comma-separated input columns to copy into the output."),
    on_bad_image: str = typer.Option("error", help="error: stop at an unreadable image, naming it; skip: leave "
                                     "it out of the output, count it and name the first."),
) -> None:
    """Batch prediction, streamed chunk by chunk with a progress bar. A bundle runs on onnxruntime.

    A folder of images gives one row per image: its path, the prediction and one probability per class.
    The summary counts unseen categories and values clipped to the training range, per column.
    """

    def go() -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        from waypost.data.io import TableWriter
        from waypost.serve.batch import batch_job, issues_summary, load_scorer

        scorer = load_scorer(model)
        keep_cols = [c.strip() for c in keep.split(",")] if keep else []
        total, scored = batch_job(scorer, data, chunk_rows=chunk_rows, keep=keep_cols, proba=proba,
                                  on_bad_image=on_bad_image)
        n = 0
        with TableWriter(output) as writer, Progress(
            TextColumn("predicting"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), transient=True
        ) as bar:
            task = bar.add_task("rows", total=total)
            for frame in scored:
                writer.write(frame)
                n += len(frame)
                bar.update(task, completed=n)
        _console().print(f"wrote {n} predictions to [bold]{output}[/] ({scorer.kind})")
        if scorer.skipped:
            _console().print(f"[yellow]skipped {len(scorer.skipped)} unreadable image(s)[/]; first: {scorer.skipped[0]}")
        if scorer.issues:
            _console().print(f"[yellow]input warnings:[/] {issues_summary(scorer.issues)}")

    _run(go)


@app.command()
def export(
    model: Path = typer.Argument(..., help="Model directory (e.g. runs/latest)."),
    output: Path = typer.Option(..., "--output", "-o", help="Bundle directory to write."),
    optimize: str = typer.Option("none", help="none, int8 (dynamic quantisation) or fp16 (GPU)."),
    data: Optional[Path] = typer.Option(None, help="Labelled rows to compare the optimised metric with fp32."),
    register: bool = typer.Option(True, help="Register the bundle in MLflow when the model was tracked."),
    alias: str = typer.Option("champion", help="Registry alias for the new version (champion: only if none yet)."),
) -> None:
    """ONNX bundle with preprocessing inside: runs with numpy + onnxruntime, no torch."""

    def go() -> None:
        from waypost.predictor import Predictor

        report = Predictor.load(model).export(output, optimize=optimize, data=data, register=register, alias=alias)
        print_export_report(report)
        reg = report.get("registered")
        if reg:
            _console().print(f"registered [bold]{reg['registered_model']}[/] version {reg['version']}"
                             + (f" as @{reg['alias']}" if reg.get("alias") else ""))
            if reg.get("alias_withheld"):
                _console().print(f"[bold red]{reg['alias_withheld']}[/]")
            _console().print(f"serve it through MLflow: {reg['serve_command']}", soft_wrap=True)
        _console().print(f"wrote bundle [bold]{output}[/]; try: waypost serve {output}")

    _run(go)


@app.command()
def prune(
    model: Path = typer.Argument(..., help="Model directory (e.g. runs/latest)."),
    data: Path = typer.Option(..., "--data", help="Training table, for the recovery fine-tune."),
    output: Path = typer.Option(..., "--output", "-o", help="Directory for the pruned model."),
    amount: float = typer.Option(0.5, help="Fraction of the MLP's weights to zero (global magnitude)."),
    finetune_epochs: int = typer.Option(5, help="Recovery fine-tune epochs with the masks in place."),
    valid: Optional[Path] = typer.Option(None, help="Validation table (default: the fit's own split)."),
) -> None:
    """Global magnitude pruning of the MLP + a short recovery fine-tune; sparsity, size, latency, metric."""

    def go() -> None:
        from waypost.data.io import read_table
        from waypost.deploy.prune import prune_command

        prune_command(model, read_table(data), output, amount=amount, finetune_epochs=finetune_epochs,
                      valid_data=read_table(valid) if valid else None)

    _run(go)


@app.command()
def distill(
    teacher: Path = typer.Argument(..., help="Teacher model directory (e.g. runs/latest)."),
    data: Path = typer.Option(..., "--data", help="Training table the student learns from."),
    output: Path = typer.Option(..., "--output", "-o", help="Directory for the student model."),
    student: str = typer.Option("small", help="Tabular: small ([64, 32]), tiny ([32]) or widths like 64,32. "
                                              "Text Transformer: small (2 layers), tiny (1) or a layer count."),
    temperature: float = typer.Option(2.0, help="Softening of the teacher's probabilities."),
    alpha: float = typer.Option(0.5, help="Weight of the teacher's soft labels vs the true labels."),
    valid: Optional[Path] = typer.Option(None, help="Validation table (default: the fit's own split)."),
) -> None:
    """Knowledge distillation: a smaller student trained on the teacher's soft labels (an MLP for
    tabular models; a shallower Transformer, started from the teacher's layers, for text)."""

    def go() -> None:
        from waypost.data.io import read_table
        from waypost.deploy.distill_command import distill_command

        distill_command(teacher, read_table(data), output, student=student, temperature=temperature,
                        alpha=alpha, valid_data=read_table(valid) if valid else None)

    _run(go)


@app.command()
def serve(
    bundle: Path = typer.Argument(..., help="Bundle directory written by `waypost export`."),
    host: str = typer.Option("127.0.0.1", help="Interface to bind (0.0.0.0 exposes it to the network)."),
    port: int = typer.Option(8080),
    workers: int = typer.Option(1, help="Uvicorn worker processes."),
    max_batch_size: int = typer.Option(MAX_BATCH_SIZE, help="Rows per model call in the dynamic batcher."),
    max_latency_ms: float = typer.Option(MAX_LATENCY_MS, help="Longest wait to fill a batch."),
    queue_size: int = typer.Option(QUEUE_SIZE, help="Requests waiting at most; beyond it, 503 + Retry-After."),
    timeout_ms: float = typer.Option(TIMEOUT_MS, help="A request not in the model this long after it arrived gets "
                                     "503 + Retry-After, so latency stays bounded under a flood (0 = no deadline)."),
    api_key_file: Optional[Path] = typer.Option(None, help="File holding the API key clients send as X-API-Key "
                                                "(or set $WAYPOST_API_KEY). It guards /predict, /predict/columns, "
                                                "/info and /metrics; /health, /ready and /docs stay open."),
    metrics_public: bool = typer.Option(False, "--metrics-public", help="With an API key, leave /metrics open "
                                        "(for a Prometheus scraper without the key)."),
    max_body_bytes: int = typer.Option(MAX_BODY_BYTES, help="Larger request bodies get 413."),
    max_image_pixels: int = typer.Option(MAX_IMAGE_PIXELS, help="Images declaring more pixels get 422 from their "
                                         "header, never decoded (0 = no limit)."),
    log_path: Optional[str] = typer.Option(None, help="SQLite prediction log (default .waypost/predictions.sqlite; 'none' = off)."),
    log_durability: str = typer.Option("answered", help="answered: a prediction is answered only once it is "
                                       "committed to the log; async: faster, a crash loses the last ~200 ms."),
) -> None:
    """Online prediction: FastAPI on uvicorn, dynamic batching, /metrics, prediction log.

    The API key is never an argument (a command line is visible to every user in `ps`): put it in a
    file (--api-key-file, readable by the server's user only) or in $WAYPOST_API_KEY.
    """

    def go() -> None:
        from waypost.serve.cli import serve as run_server

        run_server(bundle, host=host, port=port, workers=workers, max_batch_size=max_batch_size,
                   max_latency_ms=max_latency_ms, queue_size=queue_size, api_key_file=api_key_file,
                   max_body_bytes=max_body_bytes, log_path=log_path, log_durability=log_durability,
                   timeout_ms=timeout_ms, metrics_public=metrics_public, max_image_pixels=max_image_pixels)

    _run(go)


@app.command()
def info(
    model: Path = typer.Argument(..., help="Model directory (e.g. runs/latest) or bundle (waypost export)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of tables."),
) -> None:
    """The plan (every decision with its reason), validation metrics and lineage of a model or bundle."""

    def go() -> None:
        from waypost.runtime.bundle import is_bundle

        if is_bundle(model):
            bundle_info(model, as_json)
            return
        # the manifest holds all of it: no weights loaded, so no torch imported (seconds saved)
        from waypost.persistence import check_model_manifest, read_manifest
        from waypost.plan import Decision

        m = read_manifest(model)
        check_model_manifest(m, model)
        summary = {"target": m["target"], "task": m["task"], "selected": m["selected"], "plan": m["plan"],
                   "validation_metrics": m.get("validation_metrics", {}), "lineage": m.get("lineage", {})}
        if as_json:
            typer.echo(json.dumps(summary, indent=2, default=str))
            return
        print_plan([Decision.from_dict(d) for d in m["plan"]], f"plan of {model}")
        print_metrics(summary["validation_metrics"], "validation metrics")
        print_metrics({k: str(v) for k, v in summary["lineage"].items() if not isinstance(v, (list, dict))},
                       "lineage", key="field")

    _run(go)


@app.command("datasets")
def datasets_list() -> None:
    """List the real data sets that ship offline."""
    from waypost.scenarios.datasets import DATASETS

    for info in DATASETS.values():
        typer.echo(f"{info.name:<16} target={info.target:<10} {info.task:<11} {info.description}")


@app.command()
def dataset(
    name: str = typer.Argument(..., help="A real data set that ships offline (`waypost datasets` lists them)."),
    output: Path = typer.Option(..., "--output", "-o", help="CSV or Parquet to write (the training part); a "
                                "folder for an image data set (one subfolder of PNGs per class)."),
    test_output: Optional[Path] = typer.Option(None, help="Also write a held-out test part here."),
    test_size: float = typer.Option(0.3, help="Fraction held out when --test-output is given."),
    sample: Optional[int] = typer.Option(None, help="Keep this many rows (stratified) before splitting."),
    seed: int = typer.Option(0),
) -> None:
    """Write one of the real data sets that ship offline (for demos and trying waypost out)."""

    def go() -> None:
        from waypost.scenarios.datasets import write_dataset

        for line in write_dataset(name, output, test_output, test_size=test_size, sample=sample, seed=seed):
            _console().print(line)

    _run(go)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
