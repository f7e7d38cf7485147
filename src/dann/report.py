"""``report.html``: one self-contained page per run, and a side-by-side page for several runs.

A page is a single HTML file: figures are embedded as base64 ``data:`` URIs and the style is
inline, so it opens from a mail attachment or an archive with no network and no JavaScript.
Everything is read back from the files of a run directory (``config.yaml``, ``results/``,
``metrics/``, ``plots/``, ``provenance.json``), so a report can be rebuilt at any time with
``dann report DIR``; :func:`~dann.experiments.study.run_study` writes one at the end of each run.

Layer: above the experiments (it reads what a study wrote); nothing below imports it.
"""

from __future__ import annotations

import base64
import html
import json
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dann.errors import DataError
from dann.runfiles import atomic_write_text, changed_keys, read_json, read_yaml_mapping

REPORT = "report.html"

#: the results table: (key, header, what it means); target_acc is the one column that reads target labels
COLUMNS = (
    ("source_acc", "source_acc", "accuracy on the labelled source test split"),
    ("target_acc", "target_acc", "evaluation only: reads target labels (never used to train or select)"),
    ("target_im", "target_im", "information maximisation of the target test predictions: label-free, higher is better"),
    ("domain_acc", "domain_acc", "a fresh linear probe telling the domains apart from the features: 0.5 hides them, 1.0 reveals them"),
)
#: scores that read target class labels, or are not scores: never listed as label-free
_NOT_LABEL_FREE = {"source_acc", "target_acc", "train_seconds", "images_per_second"}

_STYLE = """
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: #1d2327; margin: 0 auto;
       max-width: 1180px; padding: 1.5em 2em 4em; background: #fff; }
h1 { font-size: 1.6em; margin-bottom: .2em; } h2 { border-bottom: 1px solid #d0d7de; padding-bottom: .2em; margin-top: 2em; }
.meta { color: #57606a; margin-top: 0; }
table { border-collapse: collapse; margin: .6em 0; }
th, td { border: 1px solid #d0d7de; padding: .3em .7em; text-align: right; }
th { background: #f3f5f7; vertical-align: bottom; } td.name, th.name { text-align: left; }
th small { display: block; font-weight: normal; color: #8a4b00; font-size: .78em; max-width: 12em; }
td.eval-only { background: #fff8e6; color: #6b4a00; } td.absent { color: #8c959f; text-align: center; }
tr.pick td.name::after { content: " \\2605"; color: #b7791f; }
.note { color: #57606a; font-size: .9em; max-width: 60em; }
figure { margin: .8em 0; } figure img { max-width: 100%; height: auto; border: 1px solid #eaeef2; }
figcaption { color: #57606a; font-size: .9em; }
.grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(360px, 1fr)); gap: 1em; }
details { margin: .6em 0; } summary { cursor: pointer; font-weight: 600; }
pre { background: #f6f8fa; padding: .8em; overflow-x: auto; font-size: .85em; border-radius: 4px; }
.missing { color: #8c959f; font-style: italic; }
"""


@dataclass
class Run:
    """What a report shows of one run directory, read from its files."""

    path: Path
    config: dict[str, Any]
    config_text: str
    results: dict[str, dict[str, float]]  # finished modes only
    modes: list[str]  # every configured mode, finished or not
    metrics: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    provenance: dict[str, Any] | None = None
    data_record: dict[str, Any] | None = None  # run.json, where the data directory was recorded

    @property
    def name(self) -> str:
        return self.path.resolve().name

    @property
    def embedding(self) -> str:
        found = {p.name.split("_", 1)[0] for p in (self.path / "plots").glob("*_*.png")}
        return next((kind for kind in ("tsne", "pca") if kind in found), "pca")


def read_run(path: str | Path) -> Run:
    """Read a run directory; a directory that is not one is a one-line :class:`DataError`."""
    path = Path(path)
    config_path = path / "config.yaml"
    if not config_path.is_file():
        raise DataError(f"{path} is not a dann run directory (no config.yaml); give the folder `dann run` wrote")
    fix = "it was written by `dann run`; rerun or resume it"
    config = read_yaml_mapping(config_path, "the run's config", fix)
    modes = [str(m) for m in config.get("modes") or []]
    results = {}
    for mode in modes:
        if (result := path / "results" / f"{mode}.json").exists():
            saved = read_json(result, f"the scores of {mode}", fix)
            results[mode] = saved.get("scores", {})
    metrics = {}
    for mode in modes:
        if (log := path / "metrics" / f"{mode}.jsonl").exists():
            # a report is a best effort view: a row torn by a kill is skipped, not fatal
            metrics[mode] = [row for row in _jsonl(log) if "step" in row]
    optional = {
        name: read_json(path / name, name, f"delete {path / name} or rerun") if (path / name).exists() else None
        for name in ("provenance.json", "run.json")
    }
    return Run(
        path, config, config_path.read_text(encoding="utf-8"), results, modes, metrics,
        optional["provenance.json"], optional["run.json"],
    )


def _jsonl(path: Path) -> list[dict[str, Any]]:
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


# ------------------------------------------------------------------------------------ writing


def write_report(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Write the report of one run (default ``run_dir/report.html``) and return its path."""
    run = read_run(run_dir)
    target = Path(out) if out is not None else run.path / REPORT
    atomic_write_text(target, render_run(run))
    return target


def write_comparison(run_dirs: Sequence[str | Path], out: str | Path) -> Path:
    """Write one page comparing several runs side by side (one table row per run and mode, their curves)."""
    runs = [read_run(d) for d in run_dirs]
    target = Path(out)
    atomic_write_text(target, render_comparison(runs))
    return target


# ------------------------------------------------------------------------------------ pages


def render_run(run: Run) -> str:
    """The HTML of one run's report."""
    cfg = run.config
    about = (
        f"experiment <b>{_e(cfg.get('experiment', '?'))}</b> · recipe {_e(cfg.get('recipe', 'default'))} · "
        f"seed {_e(cfg.get('seed', '?'))} · {len(run.results)} of {len(run.modes)} modes finished · "
        f"{_e(str(run.path.resolve()))}"
    )
    plots = run.path / "plots"
    data_plot = next((p for p in (plots / "data.png", plots / "samples.png") if p.exists()), None)
    embeddings = "".join(
        _figure(plots / f"{run.embedding}_{mode}.png", f"{mode}: {run.embedding.upper()} of the learned test features "
                "(colour = class where known, marker = domain)")
        for mode in run.modes
    )
    body = [
        f"<h1>dann report: {_e(run.name)}</h1>",
        f'<p class="meta">{about}</p>',
        '<section id="results"><h2>Results</h2>',
        _results_table([("", mode, run.results.get(mode)) for mode in run.modes], with_run=False),
        _column_notes(),
        "</section>",
        '<section id="label-free"><h2>Label-free scores</h2>',
        _label_free(run.results),
        _validators(run.results),
        "</section>",
        '<section id="data"><h2>Data</h2>',
        _figure(data_plot, "training inputs of each domain") if data_plot else _missing("plots/data.png or plots/samples.png"),
        "</section>",
        '<section id="curves"><h2>Training curves</h2>',
        _figure(plots / "curves.png", "logged quantities against training step, one colour per mode"),
        "</section>",
        '<section id="embeddings"><h2>Feature embeddings</h2>',
        f'<div class="grid">{embeddings}</div>',
        "</section>",
        '<section id="config"><h2>Configuration</h2>',
        f"<details><summary>the resolved config.yaml (every setting, defaults included)</summary><pre>{_e(run.config_text)}</pre></details>",
        "</section>",
        _provenance(run),
    ]
    return _page(f"dann report: {run.name}", body)


def render_comparison(runs: Sequence[Run]) -> str:
    """The HTML of a page comparing ``runs``: one table row per run and mode, config differences, curves."""
    labels = _run_labels(runs)
    rows = [(label, mode, run.results.get(mode)) for label, run in zip(labels, runs) for mode in run.modes]
    body = [
        f"<h1>dann comparison of {len(runs)} runs</h1>",
        '<p class="meta">' + "<br>".join(f"<b>{_e(label)}</b>: {_e(str(run.path.resolve()))}" for label, run in zip(labels, runs)) + "</p>",
        '<section id="results"><h2>Results</h2>',
        _results_table(rows, with_run=True),
        _column_notes(),
        "</section>",
        '<section id="differences"><h2>Config differences</h2>',
        _config_differences(labels, runs),
        "</section>",
        '<section id="curves"><h2>Training curves</h2>',
        _comparison_curves(labels, runs),
        "</section>",
        '<section id="config"><h2>Configurations</h2>',
        *(f"<details><summary>{_e(label)}: config.yaml</summary><pre>{_e(run.config_text)}</pre></details>"
          for label, run in zip(labels, runs)),
        "</section>",
    ]
    return _page(f"dann comparison: {', '.join(labels)}", body)


def _page(title: str, body: Sequence[str]) -> str:
    generated = time.strftime("%Y-%m-%d %H:%M:%S")
    return "\n".join([
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_e(title)}</title><style>{_STYLE}</style></head><body>",
        *body,
        f'<p class="note">written by dann {_e(_version())} on {generated}; one file, no scripts, no network.</p>',
        "</body></html>",
        "",
    ])


# ------------------------------------------------------------------------------------ parts


def _results_table(rows: Sequence[tuple[str, str, Mapping[str, float] | None]], with_run: bool) -> str:
    head = ('<th class="name">run</th>' if with_run else "") + '<th class="name">mode</th>'
    for key, header, meaning in COLUMNS:
        note = "<small>evaluation only: reads target labels</small>" if key == "target_acc" else ""
        head += f'<th title="{_e(meaning)}">{_e(header)}{note}</th>'
    head += '<th title="training time, evaluation excluded">seconds</th>'
    lines = [f'<table class="results"><thead><tr>{head}</tr></thead><tbody>']
    for run, mode, result in rows:
        cells = f'<td class="name">{_e(run)}</td>' if with_run else ""
        cells += f'<td class="name">{_e(mode)}</td>'
        for key, _, _ in COLUMNS:
            value = None if result is None else result.get(key)
            extra = " eval-only" if key == "target_acc" else ""
            cells += _number_cell(value, 4, extra)
        cells += _number_cell(None if result is None else result.get("train_seconds"), 1, "")
        if result is None:
            cells += '<td class="absent">not finished</td>'
        lines.append(f"<tr>{cells}</tr>")
    lines.append("</tbody></table>")
    return "".join(lines)


def _number_cell(value: Any, digits: int, extra: str) -> str:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return f'<td class="{extra.strip()}">{value:.{digits}f}</td>' if extra else f"<td>{value:.{digits}f}</td>"
    return f'<td class="absent{extra}">-</td>'


def _column_notes() -> str:
    items = "".join(f"<li><b>{_e(key)}</b>: {_e(meaning)}</li>" for key, _, meaning in COLUMNS)
    return (
        f'<ul class="note">{items}<li><b>seconds</b>: training time, evaluation excluded</li></ul>'
        '<p class="note">"-": the score does not exist for this run (no target labels: no target_acc) or the mode has not finished.</p>'
    )


def _label_free(results: Mapping[str, Mapping[str, float]]) -> str:
    """The scores a user can select a model by without target labels; the highest target_im is starred."""
    keys = sorted({k for r in results.values() for k, v in r.items() if k not in _NOT_LABEL_FREE and "oracle" not in k
                   and isinstance(v, (int, float))}, key=lambda k: (k != "target_im", k != "domain_acc", k))
    if not keys:
        return _missing("no finished mode has label-free scores yet")
    pick = max((m for m in results if "target_im" in results[m]), key=lambda m: results[m]["target_im"], default=None)
    head = '<th class="name">mode</th>' + "".join(f"<th>{_e(k)}</th>" for k in keys)
    rows = "".join(
        f'<tr class="{"pick" if mode == pick else ""}"><td class="name">{_e(mode)}</td>'
        + "".join(_number_cell(r.get(k), 4, "") for k in keys) + "</tr>"
        for mode, r in results.items()
    )
    return (
        f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"
        '<p class="note">These read no target labels, so they may choose between modes on a target without labels. '
        "The star marks the highest target_im: a ranking aid, not an accuracy (a confidently wrong model also scores high). "
        "domain_acc reads only which domain each sample came from; lower means better aligned features.</p>"
    )


def _validators(results: Mapping[str, Mapping[str, Any]]) -> str:
    """Each mode's label-free validator scores on the held-out splits, and the checkpoint a validator chose."""
    chosen = {mode: r["selection"] for mode, r in results.items() if isinstance(r.get("selection"), Mapping)}
    names = sorted({k for s in chosen.values() for k in s.get("scores", {})})
    if not names:
        return ""
    head = '<th class="name">mode</th><th>chosen by</th><th>step</th>' + "".join(f"<th>{_e(k)}</th>" for k in names)
    rows = "".join(
        f'<tr><td class="name">{_e(mode)}</td><td>{_e(s.get("validator") or "-")}</td><td>{_e(s.get("step") or "last")}</td>'
        + "".join(_number_cell(s["scores"].get(k), 4, "") for k in names) + "</tr>"
        for mode, s in chosen.items()
    )
    return (
        "<h3>Validators on the held-out splits</h3>"
        f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"
        '<p class="note">Scores of the weights each mode ended with, on the held-out source and target validation '
        "splits (no target labels). With train.select_by, the validator named chose that step among the checks.</p>"
    )


def _provenance(run: Run) -> str:
    if run.provenance is None and run.data_record is None:
        return ""
    parts = ['<section id="provenance"><h2>Provenance</h2>']
    if run.provenance is not None:
        record = {k: v for k, v in run.provenance.items() if k != "resumed"}
        rows = "".join(f'<tr><td class="name">{_e(k)}</td><td class="name">{_e(_plain(v))}</td></tr>' for k, v in _flatten(record))
        parts.append(f"<table><tbody>{rows}</tbody></table>")
        for later in run.provenance.get("resumed", []):
            parts.append(
                f"<details><summary>resumed {_e(later.get('time', ''))}</summary><pre>{_e(json.dumps(later, indent=2))}</pre></details>"
            )
    if run.data_record is not None:
        parts.append(f"<details><summary>run.json</summary><pre>{_e(json.dumps(run.data_record, indent=2))}</pre></details>")
    parts.append("</section>")
    return "".join(parts)


def _config_differences(labels: Sequence[str], runs: Sequence[Run]) -> str:
    keys = sorted({key for run in runs[1:] for key in changed_keys(runs[0].config, run.config)})
    if not keys:
        return '<p class="note">The runs share one config.</p>' if len(runs) > 1 else ""
    head = '<th class="name">key</th>' + "".join(f'<th class="name">{_e(label)}</th>' for label in labels)
    rows = "".join(
        f'<tr><td class="name">{_e(key)}</td>' + "".join(f'<td class="name">{_e(_plain(_lookup(run.config, key)))}</td>' for run in runs) + "</tr>"
        for key in keys
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"


def _comparison_curves(labels: Sequence[str], runs: Sequence[Run]) -> str:
    from dann.plots.figures import training_curves

    rows = {f"{label}/{mode}": run.metrics[mode] for label, run in zip(labels, runs) for mode in run.modes if run.metrics.get(mode)}
    if not rows:
        return _missing("no run has logged metrics")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "curves.png"
        training_curves(rows, path)
        return _figure(path, "every run's modes in one set of panels (colour = run/mode)")


# ------------------------------------------------------------------------------------ helpers


def _figure(path: Path | None, caption: str) -> str:
    if path is None or not path.is_file():
        return _missing(f"plots/{path.name if path else '?'} was not drawn")
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return (
        f'<figure><img src="data:image/png;base64,{data}" alt="{_e(path.stem)}">'
        f"<figcaption>{_e(caption)}</figcaption></figure>"
    )


def _missing(what: str) -> str:
    return f'<p class="missing">({_e(what)})</p>'


def _run_labels(runs: Sequence[Run]) -> list[str]:
    """Each run's folder name, or its path as given where two runs share a folder name."""
    names = [run.name for run in runs]
    return [run.name if names.count(run.name) == 1 else str(run.path) for run in runs]


def _flatten(mapping: Mapping[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for key, value in mapping.items():
        if isinstance(value, Mapping):
            out += _flatten(value, f"{prefix}{key}.")
        else:
            out.append((f"{prefix}{key}", value))
    return out


def _lookup(mapping: Mapping[str, Any], dotted: str) -> Any:
    value: Any = mapping
    for part in dotted.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return "(not set)"
        value = value[part]
    return value


def _plain(value: Any) -> str:
    """A config or provenance value as one short line of text (a command as the shell would show it)."""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return " ".join(value)
    return json.dumps(value)


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _version() -> str:
    from dann import __version__

    return __version__
