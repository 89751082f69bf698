"""``report`` and ``compare``: read finished runs, print or write them, gate a candidate against a baseline."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import click

from ..errors import InputError


@click.command()
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--format", "fmt", type=click.Choice(["md", "html", "json"]), default="md", show_default=True)
@click.option("-o", "--output", type=click.Path(path_type=Path),
              help="Write to this file (atomically) instead of stdout.")
def report(run_dir: Path, fmt: str, output: Path | None) -> None:
    """Print the report of RUN_DIR (a report.json, its run folder or a folder holding one run) as Markdown, HTML, JSON.

    HTML is one self-contained page (plots embedded); ROC curves need the run's predictions.npz.

    \b
    Example:
      modelpress report reports/digits --format html -o digits.html
    """
    from ..io import write_text
    from ..reports import load_report, render_markdown
    from ..reports.storage import report_path

    run_dir = report_path(run_dir)  # a report.json, its run folder, or a reports folder holding one run
    loaded = load_report(run_dir)
    if fmt == "html":
        from ..reports.html import load_predictions, render_html

        text = render_html(loaded, predictions=load_predictions(run_dir))
    else:
        text = render_markdown(loaded) if fmt == "md" else json.dumps(loaded, indent=2) + "\n"
    if output is None:
        click.echo(text, nl=False)
        return
    if output.is_dir():
        raise InputError(f"output {output} is a folder", hint="give a file path")
    folder = run_dir if run_dir.is_dir() else run_dir.parent
    if output.resolve() in {(folder / n).resolve() for n in ("report.json", "predictions.npz")}:
        raise InputError(f"output {output} would overwrite the run's own data", hint="write it elsewhere")
    write_text(output, text)
    click.echo(f"wrote {output}", err=True)


@click.command()
@click.argument("baseline", type=click.Path(path_type=Path))
@click.argument("candidate", type=click.Path(path_type=Path))
@click.option("--baseline-stage", metavar="NAME", help="Stage of BASELINE to compare (default: its last stage).")
@click.option("--candidate-stage", metavar="NAME", help="Stage of CANDIDATE to compare (default: its last stage).")
@click.option("--max-accuracy-drop", metavar="PTS|PCT%",
              help="Fail if accuracy falls by more than PTS percentage points (1.5) or PCT% of the baseline's value "
                   "(2%) AND the fall is significant (exact McNemar test).")
@click.option("--max-f1-drop", metavar="PTS|PCT%", help="The same for macro F1 (paired bootstrap CI).")
@click.option("--max-auc-drop", metavar="PTS|PCT%", help="The same for ROC-AUC (paired bootstrap CI).")
@click.option("--max-latency-ratio", type=float, metavar="F",
              help="Fail if candidate/baseline median latency has a 95% CI lower bound above F (1.1 = 10% slower).")
@click.option("--max-size-bytes", type=int, metavar="N", help="Fail if the candidate artifact exceeds N bytes.")
@click.option("--max-size-ratio", type=float, metavar="F", help="Fail if candidate/baseline size exceeds F.")
@click.option("--min-fidelity", metavar="F|PCT%",
              help="Fail if top-1 agreement with the baseline is significantly below F (0.99 or 99%).")
@click.option("--alpha", type=float, default=0.05, show_default=True, help="Significance level of every test.")
@click.option("--force-latency", is_flag=True,
              help="Gate latency even when the runs differ in CPU, CPU flags, threads or runtime versions.")
@click.option("--bootstrap", "n_boot", type=int, default=2000, show_default=True, help="Bootstrap resamples.")
@click.option("--seed", type=int, default=0, show_default=True, help="Bootstrap seed (results are reproducible).")
@click.option("--junit", "junit_path", type=click.Path(path_type=Path), help="Write JUnit XML (one test per gate).")
@click.option("--markdown", "markdown_path", type=click.Path(path_type=Path),
              help="Write the comparison as Markdown (PR comment, $GITHUB_STEP_SUMMARY).")
@click.option("--json", "as_json", is_flag=True, help="Print the comparison as JSON on stdout instead of Markdown.")
def compare(baseline: Path, candidate: Path, baseline_stage: str | None, candidate_stage: str | None,
            max_accuracy_drop: str | None, max_f1_drop: str | None, max_auc_drop: str | None,
            max_latency_ratio: float | None, max_size_bytes: int | None, max_size_ratio: float | None,
            min_fidelity: str | None, alpha: float, force_latency: bool, n_boot: int, seed: int,
            junit_path: Path | None, markdown_path: Path | None, as_json: bool) -> None:
    """Compare CANDIDATE with BASELINE (report.json files, run folders, or folders holding one run); exit 1 when a gate
    fails.

    A metric gate fails only when the drop exceeds its limit AND is statistically significant at --alpha, on the
    paired per-sample predictions in predictions.npz; a latency gate only when the ratio's 95% CI lies above the
    limit, and only between runs on the same CPU, threads and runtime versions (else skipped, see --force-latency).

    \b
    Example:
      modelpress compare reports/main reports/pr --max-accuracy-drop 1 --max-latency-ratio 1.1 \\
          --junit gates.xml --markdown gates.md
    """
    from ..reports import GateConfig, compare_runs, render_comparison_markdown, write_comparison_markdown, write_junit

    gates = GateConfig.from_mapping({
        "max_accuracy_drop": max_accuracy_drop, "max_f1_drop": max_f1_drop, "max_auc_drop": max_auc_drop,
        "max_latency_ratio": max_latency_ratio, "max_size_bytes": max_size_bytes, "max_size_ratio": max_size_ratio,
        "min_fidelity": min_fidelity, "alpha": alpha, "force_latency": force_latency, "n_boot": n_boot, "seed": seed,
    })
    from ..reports.storage import report_path

    baseline, candidate = report_path(baseline), report_path(candidate)  # DIR holding one run → DIR/NAME/report.json
    _check_compare_outputs([p for p in (junit_path, markdown_path) if p is not None], [baseline, candidate])
    comparison = compare_runs(baseline, candidate, gates=gates, baseline_stage=baseline_stage,
                              candidate_stage=candidate_stage)
    if junit_path is not None:
        write_junit(comparison, junit_path)
    if markdown_path is not None:
        write_comparison_markdown(comparison, markdown_path)
    if as_json:
        click.echo(comparison.to_json())
    else:
        click.echo(render_comparison_markdown(comparison), nl=False)
    comparison.raise_for_gates()
    click.echo(f"compare: {comparison.summary()}", err=True)


def _check_compare_outputs(outputs: Sequence[Path], inputs: Sequence[Path]) -> None:
    """Refuse an output that is a folder, an input report or its predictions, or the other output."""
    from ..reports import PREDICTIONS_FILENAME, REPORT_FILENAME

    protected = set()
    for given in inputs:
        folder = given if given.is_dir() else given.parent
        protected |= {(folder / REPORT_FILENAME).resolve(), (folder / PREDICTIONS_FILENAME).resolve(),
                      given.resolve()}
    if len(outputs) == 2 and outputs[0].resolve() == outputs[1].resolve():
        raise InputError(f"--junit and --markdown are the same file {outputs[0]}", hint="give two different paths")
    for out in outputs:
        if out.is_dir():
            raise InputError(f"output {out} is a folder", hint="give a file path")
        if out.resolve() in protected:
            raise InputError(f"output {out} is one of the compared reports' files", hint="write it elsewhere")
