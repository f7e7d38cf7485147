"""The report of a tiny Blobs run, opened in a real browser (headless Chromium, no network).

Needs Debian's ``chromium`` at /usr/bin/chromium (``apt-get install -y chromium``); skipped without it.
Chromium reports whether each figure decoded: the test opens a copy of the report with a small
probe script appended (the report itself has none) that, once the page has loaded, records each
image's decoded size in the DOM, which ``--dump-dom`` then prints.
"""

import os
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from dann.cli import main

CHROMIUM = Path("/usr/bin/chromium")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs /usr/bin/chromium (Debian: apt-get install -y chromium)"),
]

MODES = ["source_only", "dann", "domain_only", "dann_deep"]

PROBE = """<script>
window.addEventListener("load", () => {
  const images = Array.from(document.images);
  const loaded = images.filter(img => img.complete && img.naturalWidth > 0 && img.naturalHeight > 0);
  document.body.setAttribute("data-probe", loaded.length + "/" + images.length);
});
</script>"""


def chromium(tmp: Path, *args: str) -> subprocess.CompletedProcess:
    """Headless Chromium with nothing reaching out: no GPU, sync, updates, first-run, or host names."""
    command = [
        str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run", "--host-resolver-rules=MAP * ~NOTFOUND",
        f"--user-data-dir={tmp / 'profile'}", "--enable-logging=stderr", "--v=0", "--virtual-time-budget=10000", *args,
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=180, env={**os.environ, "HOME": str(tmp)})


class _Dom(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tables, self.images, self.rows, self.probe = [], [], 0, None
        self._table = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "table":
            self._table = attrs.get("class")
            self.tables.append(self._table)
        if tag == "tr" and self._table == "results":
            self.rows += 1
        if tag == "img":
            self.images.append(attrs.get("alt"))
        if tag == "body":
            self.probe = attrs.get("data-probe")

    def handle_endtag(self, tag):
        if tag == "table":
            self._table = None


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("browser") / "run"
    assert main(["run", "blobs", "--set", "train.steps=50", "--out", str(out)]) == 0
    return out / "report.html"


def test_every_figure_loads_and_the_table_is_there(report, tmp_path):
    probed = tmp_path / "probed.html"
    probed.write_text(report.read_text().replace("</body>", PROBE + "</body>"))
    done = chromium(tmp_path, "--dump-dom", probed.as_uri())
    assert done.returncode == 0, done.stderr[-2000:]
    dom = _Dom()
    dom.feed(done.stdout)
    assert "results" in dom.tables and dom.rows == 1 + len(MODES)  # header + one row per mode
    assert dom.images == ["data", "curves", *(f"pca_{mode}" for mode in MODES)]
    assert dom.probe == f"{len(dom.images)}/{len(dom.images)}", "some figure did not decode in Chromium"
    console = [line for line in done.stderr.splitlines() if "CONSOLE" in line or "Uncaught" in line]
    assert console == []


def test_screenshot_is_not_blank(report, tmp_path):
    from matplotlib.image import imread

    shot = tmp_path / "report.png"
    done = chromium(tmp_path, f"--screenshot={shot}", "--window-size=1200,3000", report.as_uri())
    assert done.returncode == 0 and shot.exists(), done.stderr[-2000:]
    pixels = imread(shot)[..., :3]
    assert pixels.shape[:2] == (3000, 1200)
    colours = np.unique((pixels.reshape(-1, 3) * 255).astype(np.uint8), axis=0)
    assert len(colours) > 50  # text, table shading and plotted data, not one flat colour
    not_white = (pixels < 0.95).any(axis=2).mean()
    assert 0.05 < not_white < 0.9
