"""report.html: escaped, self-contained, the right numbers in the table, plots embedded, renders in a real browser."""

from __future__ import annotations

import re
import shutil
import subprocess
import numpy as np
import pytest

from modelpress.reports import new_report, validate_report, write_report
from modelpress.reports import plots
from modelpress.reports.html import load_predictions, render_html, write_html

EVIL = "<script>alert(1)</script>"


def make_report(run_name: str = "html-test", class_names: tuple[str, str] = ("benign", "malignant")):
    """A two-class report with three stages, valid against the schema, and its predictions."""
    rng = np.random.default_rng(0)
    y = np.array([0, 1] * 20)
    report = new_report(run_name, data={"source": "sklearn:breast_cancer", "n_samples": 40, "n_classes": 2,
                                        "class_names": list(class_names), "sha256": "ab" * 32}, threads=1)
    predictions = {"y_true": y}
    specs = [("00-original", "original", 0.93, 1.00, 400_000, "torch"),
             ("01-prune", "prune", 0.91, 0.80, 200_000, "torch"),
             ("02-export", "export", 0.91, 0.20, 210_000, "onnxruntime")]
    for name, kind, accuracy, median, size, backend in specs:
        score = np.clip(y * 0.6 + rng.normal(0.2, 0.25, size=40), 0.01, 0.99)
        predictions[f"proba::{name}"] = np.stack([1 - score, score], axis=1).astype(np.float32)
        wrong = round((1 - accuracy) * 40)
        report["stages"].append({
            "name": name, "kind": kind, "params": {"amount": 0.5} if kind == "prune" else {},
            "notes": [], "artifact": {"path": f"stages/{name}/model", "format": "onnx" if kind == "export" else
                                      "torch", "sha256": "cd" * 32, "size_bytes": size},
            "metrics": {"accuracy": accuracy, "f1_macro": accuracy - 0.01, "roc_auc": 0.97,
                        "confusion_matrix": [[20 - wrong // 2, wrong // 2],
                                             [wrong - wrong // 2, 20 - wrong + wrong // 2]]},
            "fidelity": None if kind == "original" else {"reference": "00-original", "top1_agreement": 0.95,
                                                          "max_abs_diff": 0.125, "mean_kl": 0.01},
            "latency": [{"backend": backend, "batch_size": bs, "threads": 1, "n": 100, "median_ms": median * bs,
                         "p99_ms": median * bs * 1.5, "unstable": False} for bs in (1, 32)],
            "footprint": {"params": 1000, "nonzero_params": 500 if kind != "original" else 1000,
                          "sparsity": 0.5 if kind != "original" else 0.0, "size_bytes": size},
            "gates": [],
        })
    return validate_report(report, source="test"), predictions


def test_every_name_from_the_report_is_escaped():
    report, predictions = make_report(run_name=EVIL, class_names=(EVIL, "a|b"))
    report["stages"][1]["name"] = f"01-{EVIL}"
    report["stages"][1]["notes"] = ['<img src=x onerror="alert(2)">']
    report["stages"][1]["params"] = {"<b>key</b>": "<i>v</i>"}
    predictions[f"proba::01-{EVIL}"] = predictions.pop("proba::01-prune")
    html = render_html(report, predictions=predictions)
    assert "<script" not in html and "<img src=x" not in html and "<b>key" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "&lt;img src=x onerror=&#34;alert(2)&#34;&gt;" in html


def test_page_is_self_contained_with_embedded_plots():
    report, predictions = make_report()
    html = render_html(report, predictions=predictions)
    assert not re.search(r"""(?:src|href)\s*=\s*["']?(?:https?:)?//""", html)
    # Pareto, size bars, ROC curves, and the confusion matrices of the original and the final stage
    assert html.count('src="data:image/png;base64,') == 5
    assert "Confusion matrix: 00-original (original)" in html and "Confusion matrix: 02-export (final)" in html
    assert render_html(report, predictions=predictions, with_plots=False).count("data:image/png") == 0


def test_table_shows_the_stage_numbers_and_changes():
    report, predictions = make_report()
    html = render_html(report, predictions=predictions)
    rows = re.findall(r"<tr>\s*<td>(\d)</td>(.*?)</tr>", html, flags=re.S)
    assert [number for number, _ in rows] == ["1", "2", "3"]
    prune = rows[1][1]
    assert "91.00%" in prune and "−2.00 pts" in prune  # accuracy 0.91 vs 0.93
    assert "0.8 ms / 1.2 ms" in prune  # p50 / p99 at batch 1
    assert "195 KiB" in prune and "0.50× of first" in prune
    assert "95.00%" in prune and "0.125" in prune  # fidelity: top-1 agreement, max abs diff


def test_incomplete_run_and_pending_gates_are_said_plainly():
    report, _ = make_report()
    report["pipeline"] = {"complete": False, "stages_planned": ["a", "b", "c", "d"], "skipped": [],
                          "gates": {"max_accuracy_drop": 1}}
    html = render_html(report)
    assert "This run is incomplete (3 of 4 planned stages)" in html
    assert "Gates declared but not evaluated: max_accuracy_drop = 1" in html


def test_pareto_front_and_plot_edge_cases():
    stages = [{"name": n, "metrics": {"accuracy": a}, "latency": [{"backend": "torch", "batch_size": 1,
                                                                   "median_ms": ms}]}
              for n, a, ms in (("fast", 0.90, 1.0), ("best", 0.95, 2.0), ("dominated", 0.93, 3.0))]
    batch, points = plots.pareto_points(stages)
    assert batch == 1
    assert {p["stage"]: p["pareto"] for p in points} == {"fast": True, "best": True, "dominated": False}
    assert plots.roc_png(np.zeros(10, dtype=int), {"one-class": np.full((10, 2), 0.5)}) is None
    assert plots.confusion_png([[1, 2, 3]], None, "not square") is None
    assert plots.size_png([{"name": "x", "footprint": {}}]) is None
    assert plots.pareto_png([{"name": "x", "metrics": {"accuracy": 0.9}, "latency": []}]) is None


def test_report_command_writes_html(tmp_path, run_cli):
    report, predictions = make_report()
    write_report(report, tmp_path / "run", predictions=predictions)
    assert load_predictions(tmp_path / "run")["y_true"].shape == (40,)
    result = run_cli("report", tmp_path / "run", "--format", "html")
    assert result.exit_code == 0 and result.stdout.startswith("<!DOCTYPE html>")
    assert result.stdout.count("data:image/png;base64,") == 5
    result = run_cli("report", tmp_path / "run", "--format", "html", "-o", tmp_path / "page.html")
    assert result.exit_code == 0 and (tmp_path / "page.html").read_text(encoding="utf-8").startswith("<!DOCTYPE")
    before = (tmp_path / "run" / "report.json").read_bytes()
    result = run_cli("report", tmp_path / "run", "--format", "html", "-o", tmp_path / "run" / "report.json")
    assert result.exit_code == 2 and "would overwrite" in result.stderr
    assert (tmp_path / "run" / "report.json").read_bytes() == before


def _chromium() -> str | None:
    return next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)


CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.mark.skipif(_chromium() is None, reason="needs a headless chromium (Debian: apt-get install -y chromium)")
def test_page_renders_in_a_headless_browser(tmp_path):
    from PIL import Image

    report, predictions = make_report()
    page = write_html(report, tmp_path, predictions=predictions)
    url = page.resolve().as_uri()
    base = [_chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run([*base, "--dump-dom", url], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert len(re.findall(r"<tr>\s*<td>\d</td>", dom.stdout)) == 3  # the parsed DOM has the three stage rows
    shot = tmp_path / "shot.png"
    done = subprocess.run([*base, f"--screenshot={shot}", "--window-size=1280,2000", url], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0 and shot.is_file(), done.stderr[-2000:]
    image = np.asarray(Image.open(shot).convert("RGB"))
    assert image.shape == (2000, 1280, 3)
    not_white = (image < 240).any(axis=2).mean()
    colours = len(np.unique(image.reshape(-1, 3), axis=0))
    assert not_white > 0.05, f"only {not_white:.1%} of the screenshot is not white"
    assert colours > 100, f"the screenshot has only {colours} colours"
