"""What the command line prints: plans, metric tables, export reports, a bundle's summary (rich,
imported when something is printed, so `waypost --help` stays instant)."""
from __future__ import annotations

import json
from pathlib import Path

import typer


def _console():  # type: ignore[no-untyped-def]
    from rich.console import Console

    return Console(highlight=False)


def print_plan(plan: list, title: str = "plan") -> None:  # type: ignore[type-arg]
    from rich.table import Table

    table = Table(title=title, show_lines=False, title_justify="left")
    for col in ("subject", "choice", "reason"):
        table.add_column(col, overflow="fold")
    for d in plan:
        table.add_row(d.subject, d.choice, d.reason)
    _console().print(table)


def print_metrics(metrics: dict, title: str = "metrics", key: str = "metric") -> None:  # type: ignore[type-arg]
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    table.add_column(key)
    table.add_column("value", justify="right")
    for k, v in metrics.items():
        table.add_row(k, f"{v:.4f}" if isinstance(v, float) else str(v))
    _console().print(table)


def print_export_report(report: dict) -> None:  # type: ignore[type-arg]
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
    print_metrics(rows, "export report", key="measure")
    from rich.console import Console

    if report.get("note"):
        Console(stderr=True).print(f"[yellow]note:[/] {report['note']}")
    if report.get("warning"):
        Console(stderr=True).print(f"[bold red]WARNING:[/] {report['warning']}")


def bundle_info(path: Path, as_json: bool) -> None:
    from waypost.plan import Decision
    from waypost.runtime.bundle import read_bundle_manifest

    m = read_bundle_manifest(path)
    summary = {"target": m["target"], "task": m["task"], "model_version": m.get("model_version"),
               "optimize": m["model"]["optimize"], "parts": m["model"]["parts"], "plan": m["plan"],
               "validation_metrics": m["metrics"]["validation"], "lineage": m["lineage"]}
    if as_json:
        typer.echo(json.dumps(summary, indent=2, default=str))
        return
    print_plan([Decision.from_dict(d) for d in m["plan"]], f"plan of bundle {path}")
    print_metrics(m["metrics"]["validation"], "validation metrics (at training)")
    print_metrics({"model_version": str(m.get("model_version")), "optimize": m["model"]["optimize"],
                    "digest": m["model"]["digest"][:19], "waypost": m["waypost_version"]}, "bundle", key="field")
