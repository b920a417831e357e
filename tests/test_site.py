"""The rendered site, in a real browser: every chapter page shows its figures, no traceback, no
"kernel connection is required", and every static tau player changes its figure when scrubbed.

Renders the site (quick mode) from the notebooks the chapter tests executed (``bookrun``: each
chapter runs once per session) with a copy of ``../shared/myst-book-theme`` in a temporary folder,
serves it on 127.0.0.1 and drives Debian's ``chromium`` with Playwright (its own browser
download is unreachable). Every request to another host is blocked, as offline: the site must
carry its own stylesheets and fonts (KaTeX's, font-awesome's: ``qam_lite/book/vendor``), and no
formula may show twice (KaTeX's MathML copy is hidden only by KaTeX's stylesheet).
Set ``QAM_LITE_SCREENSHOTS=DIR`` to keep a screenshot of each chapter page.
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import json
import os
import threading
from pathlib import Path

import bookrun
import pytest

from qam_lite.book import chapters
from qam_lite.book.site import build_site, check_site

CHROMIUM = Path("/usr/bin/chromium")
THEME = chapters.ROOT.parent / "shared" / "myst-book-theme"


def _missing() -> str | None:
    if not CHROMIUM.exists():
        return f"{CHROMIUM} missing (apt-get install chromium; .ci/run installs it)"
    if not (THEME / "template.yml").exists():
        return f"no site theme at {THEME}"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright not installed (pip install playwright)"
    return None


# CI must run this test: there a missing piece is a failure, not a skip.
if _missing() and not os.environ.get("CI"):
    pytest.skip(_missing(), allow_module_level=True)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """The site (quick mode) rendered from the chapters this session executed; its html folder.

    test_book.py's chapter tests execute the chapters (``bookrun``); any not executed yet (this
    file run alone) are executed here, once. A chapter that fails is left out of the site (its
    page test then fails) and the others are still checked.
    """
    assert _missing() is None, _missing()
    executed = bookrun.executed_dir(tmp_path_factory)
    for md in chapters.chapters():
        with contextlib.suppress(Exception, pytest.fail.Exception):
            bookrun.execute(md, executed)
    out = tmp_path_factory.mktemp("site")
    build_site(executed, quick_mode=True, theme=THEME, build_dir=out, timeout=1200, strict=False)
    return out / "html"


@pytest.fixture(scope="module")
def server(site):
    handler = functools.partial(QuietHandler, directory=str(site))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        yield chromium
        chromium.close()


def chapter_pages(html_dir: Path) -> dict[str, str]:
    """``{chapter stem: url path}`` for every chapter, from the site's page JSON files."""
    urls = {}
    for page in html_dir.glob("*.json"):
        data = json.loads(page.read_text())
        if isinstance(data, dict) and "location" in data and "slug" in data:
            urls[Path(data["location"]).stem] = "/" + data["slug"].replace(".", "/")
    return urls


def test_site_build_check_passes(site):
    # Built from the executed notebooks: a chapter page without outputs, or with a traceback, a
    # live widget or a progress bar, is reported here.
    assert check_site(site) == []


def _route(blocked):
    """Serve only the loopback server (and inline data); record and block everything else."""

    def handle(route):
        url = route.request.url
        if url.startswith(("http://127.0.0.1", "data:", "blob:")):
            return route.continue_()
        blocked.append(f"{route.request.resource_type} {url}")
        return route.abort()

    return handle


# Formulas (KaTeX) whose MathML copy is laid out on the page: without KaTeX's stylesheet that copy
# shows beside the typeset formula. And the KaTeX fonts that loaded.
_KATEX = """() => {
    const formulas = [...document.querySelectorAll('article .katex')];
    const twice = formulas.filter(k => {
        const mathml = k.querySelector('.katex-mathml');
        if (!mathml) return false;
        const box = mathml.getBoundingClientRect();
        return box.width > 1 || box.height > 1;
    });
    const fonts = [...document.fonts].filter(f => f.family.includes('KaTeX'));
    return {
        formulas: formulas.length,
        twice: twice.slice(0, 3).map(k => k.textContent.slice(0, 60)),
        twiceCount: twice.length,
        fontsLoaded: fonts.filter(f => f.status === 'loaded').length,
    };
}"""


def test_site_ships_its_stylesheets(site):
    # Pages and the theme's scripts name no stylesheet on another host, and the copies exist.
    from qam_lite.book.site import outside_stylesheets

    assert outside_stylesheets(site) == []
    index = (site / "index.html").read_text()
    for css in ("vendor/katex/katex.min.css", "vendor/font-awesome/css/font-awesome.min.css"):
        assert css in index
        assert (site / css).is_file()


@pytest.mark.parametrize("chapter", [md.stem for md in chapters.chapters()])
def test_chapter_page_in_chromium(chapter, site, server, browser, tmp_path_factory):
    url = chapter_pages(site).get(chapter)
    failure = bookrun.executed_dir(tmp_path_factory) / f"{chapter}.error.txt"
    if not url and failure.exists():
        pytest.fail(f"{chapter} is not in the site: it failed to execute:\n{failure.read_text()}")
    assert url, f"no page for {chapter} in {site}"
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    blocked: list[str] = []
    page.route("**/*", _route(blocked))
    page.goto(server + url, wait_until="networkidle", timeout=60_000)
    page.wait_for_selector("article", timeout=30_000)
    # Figures: outputs render after the page hydrates; wait for one, then for all to load.
    page.wait_for_function(
        "() => [...document.querySelectorAll('article img')]"
        ".some(i => !(i.getAttribute('src') || '').includes('colab-badge'))",
        timeout=60_000,
    )
    page.wait_for_function(
        "() => [...document.querySelectorAll('article img')].every(i => i.complete)",
        timeout=30_000,
    )
    images = page.eval_on_selector_all(
        "article img", "els => els.map(i => [i.getAttribute('src'), i.naturalWidth])"
    )
    figures = [src for src, width in images if "colab-badge" not in (src or "")]
    assert figures, f"{chapter}: no figure on the page"
    broken = [src for src, width in images if not width]
    assert not broken, f"{chapter}: images that did not load: {broken[:3]}"
    text = page.inner_text("article")
    for bad in ("Traceback", "kernel connection is required", "interactive(children"):
        assert bad not in text, f"{chapter}: page shows {bad!r}"
    # The theme renders HTML outputs (the tau players) only once scrolled into view.
    for _ in range(200):
        page.mouse.wheel(0, 1000)
        page.wait_for_timeout(100)
        if page.evaluate("window.scrollY + window.innerHeight >= document.body.scrollHeight - 2"):
            break
    page.wait_for_timeout(500)
    # Static tau players (to_jshtml): moving the scrub bar changes the figure.
    players = page.locator("article input[type=range]")
    calls = (chapters.BOOK_DIR / f"{chapter}.md").read_text().count("tau_explorer(")
    assert players.count() >= min(calls, 1), f"{chapter}: its tau player is not on the page"
    for i in range(players.count()):
        slider = players.nth(i)
        slider.scroll_into_view_if_needed()
        image = slider.locator("xpath=ancestor::div[contains(@class,'animation')]//img").first
        before = image.get_attribute("src")
        last = slider.get_attribute("max")
        slider.evaluate("(el, v) => { el.value = v; el.dispatchEvent(new Event('input')); }", last)
        assert image.get_attribute("src") != before, f"{chapter}: tau player {i} did not change"
    # Offline, every formula is typeset once (KaTeX's stylesheet and fonts come with the site).
    math = page.evaluate(_KATEX)
    if "$" in (chapters.BOOK_DIR / f"{chapter}.md").read_text():
        assert math["formulas"], f"{chapter}: no typeset formula on the page"
        assert math["fontsLoaded"], f"{chapter}: no KaTeX font loaded"
    assert not math["twiceCount"], (
        f"{chapter}: {math['twiceCount']} formulas shown twice (typeset and as raw MathML), "
        f"e.g. {math['twice']}"
    )
    outside = [b for b in blocked if b.split()[0] in ("stylesheet", "font")]
    assert not outside, f"{chapter}: stylesheets or fonts requested from outside: {outside[:3]}"
    # Other outside requests are blocked without harm: the theme's output renderer asks cdnjs for
    # MathJax 2.7.5 (a script, to typeset math inside HTML outputs, which the players have none of).
    favicon = page.eval_on_selector("link[rel~=icon]", "el => el.href")
    assert page.request.get(favicon).ok, f"favicon {favicon} not served"
    shots = os.environ.get("QAM_LITE_SCREENSHOTS")
    if shots:
        Path(shots).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(shots) / f"{chapter}.png"), full_page=False)
    page.close()
