"""`waypost` command line. Every heavy import happens inside a command, so `waypost --help` is instant."""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Optional

try:
    import typer
except ImportError:  # `pip install waypost[runtime]` alone has no command line
    sys.stderr.write("waypost's command line needs its extras: pip install 'waypost[train]' (or [serve], [all])\n")
    raise SystemExit(1) from None

from waypost.serve.defaults import MAX_BATCH_SIZE, MAX_BODY_BYTES, MAX_LATENCY_MS, QUEUE_SIZE  # noqa: E402

app = typer.Typer(
    help="waypost: from a table to a tracked, evaluated model, exported as a bundle and served.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


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


def _print_plan(plan: list, title: str = "plan") -> None:  # type: ignore[type-arg]
    from rich.table import Table

    table = Table(title=title, show_lines=False, title_justify="left")
    for col in ("subject", "choice", "reason"):
        table.add_column(col, overflow="fold")
    for d in plan:
        table.add_row(d.subject, d.choice, d.reason)
    _console().print(table)


def _print_metrics(metrics: dict, title: str = "metrics", key: str = "metric") -> None:  # type: ignore[type-arg]
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    table.add_column(key)
    table.add_column("value", justify="right")
    for k, v in metrics.items():
        table.add_row(k, f"{v:.4f}" if isinstance(v, float) else str(v))
    _console().print(table)


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
        from waypost.planning import resolve_job

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
        _print_plan(plan, f"plan for {data.name} ({len(df)} rows)")
        _console().print(f"wrote [bold]{output}[/]; next: waypost train {output}")

    _run(go)


@app.command()
def train(
    config: Path = typer.Argument(..., help="waypost.yaml written by `waypost init`."),
    output: Path = typer.Option(Path("runs"), "--output", "-o", help="Folder for model directories."),
    name: Optional[str] = typer.Option(None, help="Model directory name (default: target + time)."),
    tracking_uri: Optional[str] = typer.Option(None, "--tracking-uri", help="MLflow URI (default WAYPOST_TRACKING_URI or .waypost/)."),
    no_track: bool = typer.Option(False, "--no-track", help="Do not log to MLflow."),
    time_limit: Optional[float] = typer.Option(None, help="Seconds for the whole fit."),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
) -> None:
    """Train with the production defaults, track in MLflow, register the model and save it under runs/."""

    def go() -> None:
        from waypost.config import WaypostConfig
        from waypost.errors import ConfigError
        from waypost.predictor import Predictor

        cfg = WaypostConfig.from_yaml(config)
        if tracking_uri:
            cfg.tracking.uri = tracking_uri
        if no_track:
            cfg.tracking.enabled = False
        if time_limit:
            cfg.training.time_limit = time_limit
        if not cfg.data.train:
            raise ConfigError(f"{config}: 'data.train' is not set: name the training table")
        base = config.resolve().parent
        train_path = base / cfg.data.train
        valid_path = base / cfg.data.valid if cfg.data.valid else None
        predictor = Predictor.from_config(cfg, verbose=not quiet).fit(train_path, valid_path)
        run_name = name or f"{cfg.target}-{time.strftime('%Y%m%d-%H%M%S')}"
        model_dir = predictor.save(output / run_name)
        latest = output / "latest"
        if latest.is_symlink() or latest.exists():
            latest.unlink()
        latest.symlink_to(run_name, target_is_directory=True)
        _print_plan(predictor.plan_)
        _print_metrics(predictor.validation_metrics_, "validation metrics")
        reg = predictor.registered_model_
        if reg:
            _console().print(f"MLflow run {predictor.lineage_.get('mlflow_run_id')}; registered "
                             f"[bold]{reg.get('registered_model')}[/] version {reg.get('version')}")
        _console().print(f"saved [bold]{model_dir}[/] ({latest} points to it)")

    _run(go)


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

        if is_bundle(model):
            import waypost.runtime as rt
            from waypost.deploy.bundle import bundle_metrics

            metrics = bundle_metrics(rt.load(model), read_table(data))
        else:
            from waypost.predictor import Predictor

            metrics = Predictor.load(model).evaluate(data)
        _print_metrics(metrics, f"metrics on {data.name}")
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
) -> None:
    """Batch prediction, streamed chunk by chunk with a progress bar. A bundle runs on onnxruntime.

    A folder of images gives one row per image: its path, the prediction and one probability per class.
    """

    def go() -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        from waypost.data.io import TableWriter
        from waypost.serve.batch import batch_job, load_scorer

        scorer = load_scorer(model)
        keep_cols = [c.strip() for c in keep.split(",")] if keep else []
        total, scored = batch_job(scorer, data, chunk_rows=chunk_rows, keep=keep_cols, proba=proba)
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
        _print_export_report(report)
        reg = report.get("registered")
        if reg:
            _console().print(f"registered [bold]{reg['registered_model']}[/] version {reg['version']}"
                             + (f" as @{reg['alias']}" if reg.get("alias") else ""))
            if reg.get("alias_withheld"):
                _console().print(f"[bold red]{reg['alias_withheld']}[/]")
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
    _run(lambda: _prune(model, data, output, amount, finetune_epochs, valid))


def _prune(model: Path, data: Path, output: Path, amount: float, epochs: int, valid: Optional[Path]) -> None:
    from waypost.data.io import read_table
    from waypost.deploy.prune import prune_command

    prune_command(model, read_table(data), output, amount=amount, finetune_epochs=epochs,
                  valid_data=read_table(valid) if valid else None)


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
    _run(lambda: _distill(teacher, data, output, student, temperature, alpha, valid))


def _distill(teacher: Path, data: Path, output: Path, student: str, temperature: float, alpha: float,
             valid: Optional[Path]) -> None:
    from waypost.data.io import read_table
    from waypost.deploy.distill import distill_command

    distill_command(teacher, read_table(data), output, student=student, temperature=temperature, alpha=alpha,
                    valid_data=read_table(valid) if valid else None)


def _print_export_report(report: dict) -> None:  # type: ignore[type-arg]
    lat = report["latency"]
    rows = {"optimize": report["optimize"], "size (KiB)": f"{report['size_bytes'] / 1024:.1f}",
            "p50 1 row (ms)": f"{lat['p50_ms_1row']:.3f}", f"rows/s (batch {lat['batch_rows']})": f"{lat['rows_per_s_batch']:,.0f}",
            "max |diff| vs model": f"{report['max_abs_diff_vs_model']:.2e}"}
    if "fp32" in report:
        ref = report["fp32"]
        rows["fp32 size (KiB)"] = f"{ref['size_bytes'] / 1024:.1f}"
        rows["fp32 p50 1 row (ms)"] = f"{ref['latency']['p50_ms_1row']:.3f}"
    if "metrics" in report:
        m = report["metrics"]
        rows[f"{m['primary']} fp32 -> {report['optimize']}"] = (
            f"{m['fp32'][m['primary']]:.4f} -> {m[report['optimize']][m['primary']]:.4f}")
    _print_metrics(rows, "export report", key="measure")
    from rich.console import Console

    if report.get("note"):
        Console(stderr=True).print(f"[yellow]note:[/] {report['note']}")
    if report.get("warning"):
        Console(stderr=True).print(f"[bold red]WARNING:[/] {report['warning']}")


def _bundle_info(path: Path, as_json: bool) -> None:
    from waypost.plan import Decision
    from waypost.runtime.bundle import read_bundle_manifest

    m = read_bundle_manifest(path)
    summary = {"target": m["target"], "task": m["task"], "model_version": m.get("model_version"),
               "optimize": m["model"]["optimize"], "parts": m["model"]["parts"], "plan": m["plan"],
               "validation_metrics": m["metrics"]["validation"], "lineage": m["lineage"]}
    if as_json:
        typer.echo(json.dumps(summary, indent=2, default=str))
        return
    _print_plan([Decision.from_dict(d) for d in m["plan"]], f"plan of bundle {path}")
    _print_metrics(m["metrics"]["validation"], "validation metrics (at training)")
    _print_metrics({"model_version": str(m.get("model_version")), "optimize": m["model"]["optimize"],
                    "digest": m["model"]["digest"][:19], "waypost": m["waypost_version"]}, "bundle", key="field")


@app.command()
def serve(
    bundle: Path = typer.Argument(..., help="Bundle directory written by `waypost export`."),
    host: str = typer.Option("127.0.0.1", help="Interface to bind (0.0.0.0 exposes it to the network)."),
    port: int = typer.Option(8080),
    workers: int = typer.Option(1, help="Uvicorn worker processes."),
    max_batch_size: int = typer.Option(MAX_BATCH_SIZE, help="Rows per model call in the dynamic batcher."),
    max_latency_ms: float = typer.Option(MAX_LATENCY_MS, help="Longest wait to fill a batch."),
    queue_size: int = typer.Option(QUEUE_SIZE, help="Requests waiting at most; beyond it, 503 + Retry-After."),
    api_key: Optional[str] = typer.Option(None, help="Require X-API-Key (default: $WAYPOST_API_KEY if set)."),
    max_body_bytes: int = typer.Option(MAX_BODY_BYTES, help="Larger request bodies get 413."),
    log_path: Optional[str] = typer.Option(None, help="SQLite prediction log (default .waypost/predictions.sqlite; 'none' = off)."),
) -> None:
    """Online prediction: FastAPI on uvicorn, dynamic batching, /metrics, prediction log."""

    def go() -> None:
        from waypost.serve.cli import serve as run_server

        run_server(bundle, host=host, port=port, workers=workers, max_batch_size=max_batch_size,
                   max_latency_ms=max_latency_ms, queue_size=queue_size, api_key=api_key,
                   max_body_bytes=max_body_bytes, log_path=log_path)

    _run(go)


@app.command()
def info(
    model: Path = typer.Argument(..., help="Model directory."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of tables."),
) -> None:
    """The plan (every decision with its reason), validation metrics and lineage of a model or bundle."""

    def go() -> None:
        from waypost.runtime.bundle import is_bundle

        if is_bundle(model):
            _bundle_info(model, as_json)
            return
        from waypost.predictor import Predictor

        predictor = Predictor.load(model)
        if as_json:
            typer.echo(json.dumps(predictor.summary(), indent=2, default=str))
            return
        _print_plan(predictor.plan_, f"plan of {model}")
        _print_metrics(predictor.validation_metrics_, "validation metrics")
        _print_metrics({k: str(v) for k, v in predictor.lineage_.items() if not isinstance(v, (list, dict))}, "lineage", key="field")

    _run(go)


@app.command("datasets")
def datasets_list() -> None:
    """List the real data sets that ship offline."""
    from waypost.scenarios.datasets import DATASETS

    for info in DATASETS.values():
        typer.echo(f"{info.name:<16} target={info.target:<10} {info.task:<11} {info.description}")


@app.command()
def dataset(
    name: str = typer.Argument(..., help="A bundled real data set (see --list)."),
    output: Path = typer.Option(..., "--output", "-o", help="CSV or Parquet to write (the training part)."),
    test_output: Optional[Path] = typer.Option(None, help="Also write a held-out test part here."),
    test_size: float = typer.Option(0.3, help="Fraction held out when --test-output is given."),
    seed: int = typer.Option(0),
) -> None:
    """Write one of the real data sets that ship offline (for demos and trying waypost out)."""

    def go() -> None:
        from waypost.data.io import TableWriter
        from waypost.scenarios.datasets import DATASETS, load_dataset, split

        df = load_dataset(name)
        info = DATASETS[name]
        parts = {output: df}
        if test_output is not None:
            train_df, test_df = split(df, info.target, test_size=test_size, seed=seed)
            parts = {output: train_df, test_output: test_df}
        for path, part in parts.items():
            path.parent.mkdir(parents=True, exist_ok=True)
            with TableWriter(path) as w:
                w.write(part.reset_index(drop=True))
            _console().print(f"wrote {len(part)} rows of '{name}' to {path} (target column: '{info.target}')")

    _run(go)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
