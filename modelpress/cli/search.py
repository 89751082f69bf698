"""``search``: find the best compression recipe under constraints (:mod:`modelpress.search`)."""

from __future__ import annotations

from pathlib import Path

import click

from .common import DEFAULT_OUT


@click.command("search")
@click.argument("spec_file", metavar="SPEC", type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), default=DEFAULT_OUT, show_default=True,
              help="Reports folder; the search goes to OUT/<name>/.")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="Trials run at the same time (local processes, or Ray CPUs with --ray).")
@click.option("--ray", "ray_address", is_flag=False, flag_value="local", default=None, metavar="[ADDRESS]",
              help="Run trials on Ray: alone, a local Ray on this machine; with HOST:PORT, join that cluster.")
@click.option("--restart", is_flag=True, help="Discard the finished trials of an earlier run of this search.")
@click.option("--rounds", type=click.IntRange(min=1), default=5, show_default=True,
              help="Interleaved rounds of the finalists' final latency timing.")
@click.option("--dry-run", is_flag=True, help="Validate the spec and print the space; run nothing.")
@click.option("--quiet", "-q", is_flag=True, help="Only the summary.")
def search_command(spec_file: Path, out: Path, workers: int, ray_address: str | None, restart: bool, rounds: int,
                   dry_run: bool, quiet: bool) -> None:
    """Search SPEC (YAML: a base pipeline, a space, objectives, constraints) for the best recipe.

    Trials are ordinary pipeline runs that share one stage store, so stages they have in common run once. A killed
    search resumes (finished trials are kept). The finalists' latency is re-timed side by side in one process.
    Writes OUT/<name>/: trials.json, trials/<id>/ (run folders), summary.md/.json/.html, best.yaml.
    Exit 1 when no trial meets the constraints (the closest is named).

    \b
    Example:
      modelpress search examples/digits-search.yaml --workers 2
      modelpress run reports/digits-search/best.yaml
    """
    from ..search import load_search
    from ..search.execute import run_search
    from ..search.report import finalize

    spec = load_search(spec_file)
    if dry_run:
        click.echo(f"search {spec.name} ({spec_file}) -> {out / spec.name}")
        click.echo(f"base pipeline {spec.base.name}: {', '.join(c.kind for c in spec.base.stages)}")
        for param in spec.params:
            click.echo(f"  {param.path}: {param.describe()}")
        click.echo("objectives: " + ", ".join(f"{o.direction} {o.name}" for o in spec.objectives))
        click.echo("constraints: " + (", ".join(c.describe() for c in spec.constraints) or "none"))
        size = f", grid of {len(spec.grid())}" if spec.sampler == "grid" and all(
            p.kind == "choice" or p.step for p in spec.params) else ""
        budget = ", ".join(x for x in (f"{spec.trials} trials" if spec.trials else "",
                                       f"{spec.minutes:g} min" if spec.minutes else "") if x) or "the whole grid"
        click.echo(f"sampler {spec.sampler} (seed {spec.seed}){size}; budget {budget}; threads {spec.threads}")
        click.echo("dry run: nothing was run", err=True)
        return
    log = None if quiet else (lambda message: click.echo(message, err=True))
    result = run_search(spec, out=out, workers=workers, ray=ray_address, restart=restart, log=log)
    summary = finalize(spec, result, rounds=rounds)
    counts = summary["counts"]
    click.echo(f"{len(result.trials)} trials ({counts['ok']} ok, {counts['infeasible']} infeasible, "
               f"{counts['failed']} failed) in {result.seconds:.0f} s; stage runs "
               f"{result.stage_counts.get('stage_runs', 0)}, from the shared store "
               f"{result.stage_counts.get('stages_from_store', 0)}")
    for row in summary["front"]:
        values = ", ".join(f"{o.label} {o.metric.format(v)}{' (final)' if n == 'final' else ''}"
                           for o, v, n in zip(spec.objectives, row["values"], row["numbers"], strict=True))
        tie = f"  tie: {', '.join(row['ties'])}" if row["ties"] else ""
        click.echo(f"front {row['id']}{' (best)' if row['id'] == summary['best'] else ''}: {values}{tie}")
    click.echo(f"best: {result.folder / 'best.yaml'}; summary: {result.folder / 'summary.md'}")
