"""``run`` and ``demo``: a YAML pipeline (or the bundled example) through :mod:`modelpress.pipeline`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from ..errors import InputError
from .common import DEFAULT_OUT
from .options import code_options, threads_option


@click.command("run")
@click.argument("pipeline", type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), default=DEFAULT_OUT, show_default=True,
              help="Reports folder; the run goes to OUT/<name>/.")
@click.option("--resume/--no-resume", default=True, show_default=True,
              help="Reuse stages whose inputs are unchanged; --no-resume recomputes and re-measures everything.")
@click.option("--dry-run", is_flag=True, help="Validate the spec, data and model, print the plan; run nothing.")
@click.option("--quiet", "-q", is_flag=True, help="No progress display.")
@code_options
def run_command(pipeline: Path, out: Path, resume: bool, dry_run: bool, quiet: bool) -> None:
    """Run the stages of PIPELINE (YAML) in order; evaluate each; write OUT/<name>/report.html/.md/.json.

    Everything is validated before any stage runs. A stage whose inputs did not change is reused; an interrupted
    run resumes at the first unfinished stage. Exit 1 when a gate in the spec fails.

    \b
    Example:
      modelpress run examples/digits.yaml --dry-run
      modelpress run examples/digits.yaml && open reports/digits/report.html
    """
    from .. import progress
    from ..pipeline import execute_pipeline, load_spec, plan_pipeline

    if quiet:
        progress.set_quiet(True)
    spec = load_spec(pipeline)
    run_dir = out / spec.name
    if dry_run:
        data, items = plan_pipeline(spec, out_dir=run_dir, resume=resume)
        click.echo(f"pipeline {spec.name} ({pipeline}) -> {run_dir}")
        click.echo(f"model: {spec.model}" + (f" (weights {spec.weights})" if spec.weights else ""))
        roles = [("eval", data.eval), ("train", data.train), ("calibration", data.calibration)]
        for role, ds in roles:
            if ds is not None:
                click.echo(f"data {role}: {ds.source} ({ds.split}), {len(ds)} samples, {ds.n_classes} classes")
        ev = spec.evaluate
        latency = "off" if not ev.measure_latency else f"min {ev.latency.min_calls} calls / {ev.latency.min_s:g} s"
        click.echo(f"evaluate: backends {', '.join(ev.backends) or 'native'}; batch sizes "
                   f"{', '.join(map(str, ev.batch_sizes))}; threads {ev.threads}; latency {latency}")
        for item in items:
            params = ", ".join(f"{k}={v}" for k, v in item.params.items())
            flag = " (optional)" if item.optional else ""
            click.echo(f"  {item.name:<16} {item.status:<9} {params}{flag}")
        if spec.gates:
            click.echo("gates: " + ", ".join(f"{k}={v}" for k, v in spec.gates.items()))
        click.echo("dry run: nothing was run", err=True)
        return
    outcome = execute_pipeline(spec, out_dir=run_dir, resume=resume)
    _print_outcome(outcome)


def _print_outcome(outcome: Any) -> None:
    """One line per stage (status, time, accuracy, first latency row, size), then where the reports are."""
    stages = {s["name"]: s for s in outcome.report["stages"]}
    for item in outcome.stages:
        stage = stages.get(item.name, {})
        parts = [f"{item.name:<16} {item.status:<12} {item.seconds:7.1f} s"]
        accuracy = (stage.get("metrics") or {}).get("accuracy")
        if accuracy is not None:
            parts.append(f"accuracy {accuracy * 100:6.2f}%")
        latency = stage.get("latency") or []
        if latency and latency[0].get("median_ms") is not None:
            parts.append(f"p50 {latency[0]['median_ms']:.3g} ms ({latency[0]['backend']} b{latency[0]['batch_size']})")
        size = (stage.get("footprint") or {}).get("size_bytes")
        if size:
            parts.append(f"{size / 1024:.1f} KiB")
        if item.note:
            parts.append(item.note)
        click.echo("  ".join(parts))
    click.echo(f"report: {outcome.out_dir / 'report.html'} (also report.md, report.json)", err=True)


@click.command()
@click.option("--out", type=click.Path(path_type=Path), default=DEFAULT_OUT, show_default=True)
@click.option("--epochs", type=click.IntRange(1, 200), help="Override the train stage's epochs.")
@click.option("--resume/--no-resume", default=True, show_default=True, help="Reuse finished stages of OUT/digits/.")
@threads_option
def demo(out: Path, epochs: int | None, resume: bool, threads: int) -> None:
    """Run the bundled examples/digits.yaml: train a CNN on sklearn digits, compress it, write OUT/demo/.

    \b
    Example:
      modelpress demo && open reports/demo/report.html
    """
    import dataclasses

    from ..pipeline import execute_pipeline, load_spec

    spec = load_spec(_bundled_example("digits.yaml"))
    if epochs is not None:
        stages = tuple(dataclasses.replace(c, epochs=epochs) if c.kind == "train" else c for c in spec.stages)
        spec = dataclasses.replace(spec, stages=stages)
    spec = dataclasses.replace(spec, name="demo", evaluate=dataclasses.replace(spec.evaluate, threads=threads))
    outcome = execute_pipeline(spec, out_dir=out / spec.name, resume=resume)
    _print_outcome(outcome)


def _bundled_example(name: str) -> Path:
    """An example pipeline shipped inside the package (modelpress/examples/, a copy of the repo's examples/)."""
    from importlib import resources

    path = Path(str(resources.files("modelpress") / "examples" / name))
    if not path.is_file():
        raise InputError(f"the bundled example {name} is missing from this installation", hint="reinstall modelpress")
    return path
