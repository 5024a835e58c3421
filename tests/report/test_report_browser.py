"""The report as a browser shows it: a small outputs folder on the tiny data (two runs, a gradient
check), its HTML page rendered by a headless Chromium (not blank, every figure loaded from its data
URI) and its PDF printed (two pages or more). Skipped where no Chromium is installed."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from cifarlin.cli import app
from cifarlin.errors import ReportError
from cifarlin.report import render
from cli_helpers import TINY, train

pytestmark = pytest.mark.slow

SECONDS = 60  # each Chromium process; it takes 1-2 s here
DATA_URI = "data:image/png;base64,"
# Appended to a copy of the page: once everything has loaded, how many <img> decoded, of how many.
COUNT_IMAGES = """<script>
addEventListener("load", () => {
  const all = Array.from(document.images);
  const ok = all.filter((i) => i.complete && i.naturalWidth > 0).length;
  document.body.dataset.images = ok + "/" + all.length;
});
</script>
"""


def find_browser() -> str:
    """The Chromium the report prints with (render.chromium), else the test is skipped."""
    try:
        return render.chromium(os.environ)
    except ReportError:
        pytest.skip("no Chromium on the PATH (nor $CIFARLIN_CHROMIUM): Debian's chromium package runs these")


def outputs(runner, data: Path) -> Path:
    """outputs/ in the test's folder: setting 2 and a hinge-loss run of two epochs, and the
    gradient check on random inputs."""
    out = Path("outputs")
    train(data, out / "setting-2", *TINY, "--setting", "2", "--epochs", "2", "-q")
    train(data, out / "svm", *TINY, "--setting", "3", "--loss", "svm", "--epochs", "2", "-q")
    check = ["gradcheck", "--random", "--dims", "100", "--out", str(out / "gradcheck-ce.json")]
    r = runner.invoke(app, check)
    assert r.exit_code == 0, r.output
    return out


def report(runner, data: Path, folder: Path, target: Path) -> Path:
    r = runner.invoke(app, ["report", str(folder), "-o", str(target), "--data-dir", str(data)])
    assert r.exit_code == 0, r.output
    assert target.is_file()
    return target


def chromium(browser: str, tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``browser`` headless, offline (render.chromium_args) with ``args``, which must succeed."""
    cmd = [*render.chromium_args(browser, tmp / "profile"), "--hide-scrollbars", *args]
    done = subprocess.run(
        cmd, capture_output=True, text=True, timeout=SECONDS, stdin=subprocess.DEVNULL, errors="replace"
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done


def test_page_renders_with_every_figure(runner, tiny_py, tmp_path):
    browser = find_browser()
    from PIL import Image, ImageStat

    page = report(runner, tiny_py, outputs(runner, tiny_py), tmp_path / "report.html")
    html = page.read_text(encoding="utf-8")
    sources = re.findall(r"<img\b[^>]*\bsrc=\"([^\"]*)\"", html)
    assert sources, "the page shows no figure"
    elsewhere = [s[:60] for s in sources if not s.startswith(DATA_URI)]
    assert not elsewhere, f"figures not inline: {elsewhere}"
    assert "gradcheck-ce.json" in html, "the gradient check is not in the page"

    # (a) a screenshot of the top 1280 x 3000 pixels holds a page, not a blank or one-colour window
    shot = tmp_path / "shot.png"
    chromium(browser, tmp_path, f"--screenshot={shot}", "--window-size=1280,3000", page.as_uri())
    with Image.open(shot) as im:
        rgb = im.convert("RGB")
    assert rgb.size == (1280, 3000)
    spread = max(ImageStat.Stat(rgb.convert("L")).stddev)
    colours = rgb.getcolors(maxcolors=1 << 20)
    assert spread > 10, f"the screenshot is almost uniform (pixel standard deviation {spread:.1f})"
    assert colours is None or len(colours) > 50, f"the screenshot has only {len(colours)} colours"

    # (b) every <img> decoded: the page counts them itself once loaded, into <body data-images>
    probe = tmp_path / "probe.html"
    probe.write_text(html.replace("</body>", COUNT_IMAGES + "</body>", 1), encoding="utf-8")
    assert COUNT_IMAGES in probe.read_text(encoding="utf-8"), "the page has no </body>"
    dom = chromium(browser, tmp_path, "--dump-dom", "--virtual-time-budget=10000", probe.as_uri()).stdout
    counted = re.search(r"data-images=\"(\d+)/(\d+)\"", dom)
    assert counted, "the page's load event never ran the count: " + dom[-500:]
    ok, total = map(int, counted.groups())
    assert ok == total == len(sources) > 0, f"{ok} of {total} figures loaded ({len(sources)} in the HTML)"


def test_pdf_has_pages(runner, tiny_py, tmp_path):
    find_browser()
    pdf = report(runner, tiny_py, outputs(runner, tiny_py), tmp_path / "report.pdf")
    data = pdf.read_bytes()
    assert data.startswith(b"%PDF-")
    if shutil.which("pdfinfo"):
        info = subprocess.run(["pdfinfo", str(pdf)], capture_output=True, text=True, timeout=SECONDS)
        assert info.returncode == 0, info.stderr
        pages = int(re.search(r"^Pages:\s+(\d+)", info.stdout, re.M).group(1))
    else:
        pages = len(re.findall(rb"/Type\s*/Page(?!s)", data))
    assert pages >= 2, f"the PDF has {pages} page(s)"
