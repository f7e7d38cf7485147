"""report.html after every run, `dann report` for one or several runs, and provenance.json."""

import base64
import json
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser

import pytest

from dann.cli import main
from dann.experiments.provenance import git_commit
from dann.report import read_run, render_run, write_comparison

ARGS = ["run", "blobs", "--set", "train.steps=20", "--set", "train.eval_every=10", "--set", "modes=[source_only,dann]"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("report") / "run"
    assert main([*ARGS, "--out", str(out)]) == 0
    return out


class _Page(HTMLParser):
    """The tags a test checks: images, links, scripts, table cells, details blocks."""

    def __init__(self) -> None:
        super().__init__()
        self.images, self.links, self.scripts, self.cells, self.details = [], [], 0, [], 0
        self._in_cell = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            self.images.append(attrs)
        if tag in ("a", "link") and "href" in attrs:
            self.links.append(attrs["href"])
        self.scripts += tag == "script"
        self.details += tag == "details"
        if tag in ("td", "th"):
            self._in_cell = True
            self.cells.append("")

    def handle_endtag(self, tag):
        if tag in ("td", "th"):
            self._in_cell = False

    def handle_data(self, data):
        if self._in_cell:
            self.cells[-1] += data


def parse(text: str) -> _Page:
    page = _Page()
    page.feed(text)
    return page


def test_every_run_writes_one_self_contained_report(run_dir):
    text = (run_dir / "report.html").read_text()
    page = parse(text)
    assert page.scripts == 0 and page.links == []
    assert not re.search(r"""(src|href)=["']?(https?:|//)""", text)
    # data, curves and one embedding per mode, each a PNG inside the page
    assert [img["alt"] for img in page.images] == ["data", "curves", "pca_source_only", "pca_dann"]
    for img in page.images:
        prefix = "data:image/png;base64,"
        assert img["src"].startswith(prefix)
        assert base64.b64decode(img["src"][len(prefix):])[:8] == b"\x89PNG\r\n\x1a\n"
    assert page.details >= 1 and "train:" in text  # the resolved config, collapsed
    assert "evaluation only: reads target labels" in text
    for section in ("results", "label-free", "data", "curves", "embeddings", "config", "provenance"):
        assert f'id="{section}"' in text


def test_results_table_shows_the_scores_and_dashes_what_is_absent(run_dir, tmp_path):
    results = json.loads((run_dir / "results" / "dann.json").read_text())["scores"]
    page = parse((run_dir / "report.html").read_text())
    assert f"{results['target_acc']:.4f}" in page.cells and f"{results['domain_acc']:.4f}" in page.cells
    copy = tmp_path / "unlabelled"
    shutil.copytree(run_dir, copy)
    for mode in ("source_only", "dann"):  # as a target without labels leaves them
        path = copy / "results" / f"{mode}.json"
        saved = json.loads(path.read_text())
        saved["scores"].pop("target_acc")
        path.write_text(json.dumps(saved))
    cells = parse(render_run(read_run(copy))).cells
    header = cells.index("target_accevaluation only: reads target labels")
    width = 6  # mode, four scores, seconds
    assert [cells[header + width * row] for row in (1, 2)] == ["-", "-"]


def test_an_unfinished_mode_is_listed_with_dashes(run_dir, tmp_path):
    copy = tmp_path / "half"
    shutil.copytree(run_dir, copy)
    (copy / "results" / "dann.json").unlink()
    text = render_run(read_run(copy))
    assert "not finished" in text and "1 of 2 modes finished" in text


def test_resume_rewrites_the_report_and_keeps_the_first_provenance(run_dir, tmp_path):
    copy = tmp_path / "resumed"
    shutil.copytree(run_dir, copy)
    (copy / "results" / "dann.json").unlink()  # dann is redone from its final checkpoint
    (copy / "report.html").unlink()
    assert main(["run", "--resume", str(copy)]) == 0
    assert "pca_dann" in (copy / "report.html").read_text()
    record = json.loads((copy / "provenance.json").read_text())
    first = json.loads((run_dir / "provenance.json").read_text())
    assert record["time"] == first["time"] and len(record["resumed"]) == 1


def test_provenance_records_versions_device_and_threads(run_dir):
    record = json.loads((run_dir / "provenance.json").read_text())
    import torch

    import dann

    assert record["dann"] == dann.__version__ and record["torch"] == torch.__version__
    assert record["python"] == ".".join(map(str, sys.version_info[:3]))
    assert record["device"] == "cpu"
    assert record["threads"]["torch_per_job"] == 1 and record["threads"]["jobs"] == 1  # blobs: threads=1
    assert record["git"] is None or re.fullmatch(r"[0-9a-f]{40}", record["git"]["commit"])


def test_git_commit_is_none_outside_a_checkout(tmp_path):
    assert git_commit(tmp_path) is None
    # a folder inside a repository but not tracked by it is not mistaken for a checkout of dann
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("")
    assert git_commit(tmp_path / "pkg") is None


def test_report_command_rebuilds_one_and_compares_several(run_dir, tmp_path, capsys):
    other = tmp_path / "other"
    assert main([*ARGS, "--set", "seed=1", "--out", str(other)]) == 0
    rebuilt = tmp_path / "one.html"
    assert main(["report", str(run_dir), "--out", str(rebuilt)]) == 0
    assert parse(rebuilt.read_text()).images
    assert main(["report", str(run_dir), str(other), "--out", str(tmp_path / "both.html")]) == 0
    text = (tmp_path / "both.html").read_text()
    page = parse(text)
    for run in ("run", "other"):
        for mode in ("source_only", "dann"):
            assert any(page.cells[i] == run and page.cells[i + 1] == mode for i in range(len(page.cells) - 1))
    assert [img["alt"] for img in page.images] == ["curves"]
    assert ">seed<" in text  # the one config difference
    assert page.scripts == 0


def test_comparison_labels_runs_with_the_same_folder_name_by_path(run_dir, tmp_path):
    twin = tmp_path / "x" / run_dir.name
    shutil.copytree(run_dir, twin)
    text = write_comparison([run_dir, twin], tmp_path / "c.html").read_text()
    assert str(twin) in text and "The runs share one config." in text


def test_report_of_a_folder_that_is_no_run_is_one_line(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("dann: error:") and "not a dann run directory" in err and err.count("\n") == 1
