"""``report.html`` as a reader sees it: every image loads, no text overflows its table, the
landscape is embedded and linked when one was run.

The browser test opens the report in headless Chromium through Playwright
(``pip install playwright && playwright install chromium``, or a Chromium on PATH); where
neither is there it is skipped with the reason. The checks that need no browser (every
image a decodable PNG, every link to a file that exists) always run.
"""

from __future__ import annotations

import base64
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest

import momenta
from momenta.compare.errors import UsageError

#: the reports under test: the classic run with --inspect and --landscape, and a sweep
REPORTS = {
    "inspect+landscape": dict(epochs=8, inspect=True, landscape="rosenbrock"),
    "sweep": dict(optimizers=["sgd", "adam"], epochs=4, sweep="lr=0.01:0.1:2"),
}


class _Links(HTMLParser):
    """The report's image sources and link targets."""

    def __init__(self) -> None:
        super().__init__()
        self.images: list[str] = []
        self.links: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "img":
            self.images.append(values.get("src") or "")
        elif tag == "a":
            self.links.append(values.get("href") or "")


@pytest.fixture(scope="module", params=list(REPORTS))
def report(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp(request.param.replace("+", "-"))
    momenta.compare(**REPORTS[request.param], out=out)  # type: ignore[arg-type]
    return out / "report.html"


def test_every_image_is_inline_and_every_link_is_a_file(report: Path) -> None:
    parsed = _Links()
    parsed.feed(report.read_text(encoding="utf-8"))
    assert parsed.images
    for src in parsed.images:
        assert src.startswith("data:image/png;base64,"), src[:40]
        png = base64.b64decode(src.split(",", 1)[1], validate=True)
        assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 1000
    for href in parsed.links:
        assert (report.parent / href).is_file(), href


def test_the_landscape_is_embedded_and_linked(tmp_path: Path) -> None:
    result = momenta.compare(["sgd", "adam"], epochs=2, landscape="beale", out=tmp_path)
    assert result.landscape is not None and set(result.landscape.trajectories) == {"sgd", "adam"}
    page = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert "<h2>Landscape: beale</h2>" in page and 'href="landscape/report.html"' in page
    assert (tmp_path / "landscape" / "landscape.png").is_file()
    assert momenta.compare(["sgd"], epochs=2).landscape is None  # none without the option
    summary = result.summary()
    assert summary["config"]["landscape"] == "beale" and set(summary["landscape"]["optimizers"]) == {"sgd", "adam"}


def test_an_unknown_landscape_is_named_before_training(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="landscape: unknown test function 'nope'"):
        momenta.compare(["sgd"], epochs=2, landscape="nope", out=tmp_path / "run")
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------- in a real browser

#: run in the page: images that did not load, and cells or tables whose text overflows
_CHECK = """() => {
  const broken = [...document.images]
    .filter(img => !img.complete || img.naturalWidth === 0)
    .map(img => img.alt || img.src.slice(0, 40));
  const overflowing = [];
  for (const cell of document.querySelectorAll('th, td')) {
    if (cell.scrollWidth > cell.clientWidth + 1) overflowing.push(cell.textContent.slice(0, 60));
  }
  for (const table of document.querySelectorAll('table')) {
    const box = table.parentElement;
    const scrolls = ['auto', 'scroll'].includes(getComputedStyle(box).overflowX);
    if (!scrolls && table.getBoundingClientRect().right > box.getBoundingClientRect().right + 1) {
      overflowing.push('table: ' + table.textContent.slice(0, 60));
    }
  }
  return {broken, overflowing, images: document.images.length};
}"""


def _chromium():  # type: ignore[no-untyped-def]
    """A launched headless Chromium (Playwright's own, else one on PATH), or a skip."""
    playwright_api = pytest.importorskip(
        "playwright.sync_api", reason="no browser test: Playwright is not installed (pip install playwright)"
    )
    manager = playwright_api.sync_playwright().start()
    candidates = [None] + [p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p]
    for executable in candidates:
        try:
            return manager, manager.chromium.launch(executable_path=executable)
        except Exception:  # noqa: BLE001 - not installed here; the next candidate, else a skip
            continue
    manager.stop()
    pytest.skip("no browser test: no Chromium (playwright install chromium, or chromium on PATH)")


@pytest.mark.parametrize("width", [1280, 700])
def test_in_a_browser_images_load_and_no_text_overflows(report: Path, width: int) -> None:
    manager, browser = _chromium()
    try:
        page = browser.new_page(viewport={"width": width, "height": 900})
        page.goto(report.resolve().as_uri())
        page.wait_for_load_state("load")
        found = page.evaluate(_CHECK)
    finally:
        browser.close()
        manager.stop()
    assert found["images"] > 0
    assert found["broken"] == [], found["broken"]
    assert found["overflowing"] == [], found["overflowing"]
