"""The built book in a real browser (Debian's Chromium, driven by Playwright), without a network.

Every page of the tiny book must load nothing from outside the build folder, show typeset math,
load every image, log no console error, scroll sideways at neither 1400 nor 390 px, and show
every table for reading and no printed output; the search page must find a word of a chapter
and each verdict of the front page must land on its claim. A deliberately broken copy of the
book shows that the checks catch each of these problems.
"""
import html
import re
import shutil
from html.parser import HTMLParser
import sys
from pathlib import Path
from urllib.parse import unquote

import pytest

from bookutil import NOTEBOOKS, REPO
from sitecheck import check_site, path_leaks, remote_assets

pytestmark = pytest.mark.slow

SEARCH_WORD = "Langevin"                     # in book/intro.md
REMOTE_SCRIPT = "https://cdn.example.org/lib.js"


SCREENSHOTS = REPO / "_build" / "screenshots" / "tiny-book"


def test_every_page_works_offline(tiny_html, tiny_run):
    """Every page at 1400 and 390 px; the landing page, the methods and each kind of chapter
    once kept as screenshots in the repository's ``_build/screenshots/tiny-book/`` (pytest's
    temporary folders do not last)."""
    shutil.rmtree(SCREENSHOTS, ignore_errors=True)
    problems = check_site(tiny_html, SEARCH_WORD, SCREENSHOTS)
    assert problems == [], "\n".join(problems)
    runs = {p.name for p in (Path(tiny_html) / "book" / "runs").iterdir() if p.is_dir()}
    assert Path(tiny_run["first"]["plan"]["chapter_dir"]).name in runs
    shots = {p.name: p.stat().st_size for p in SCREENSHOTS.glob("*.png")}
    for width in (1400, 390):
        assert shots[f"index-{width}.png"] > 10_000 and shots[f"book__methods-{width}.png"] > 10_000
        for notebook in NOTEBOOKS:
            kind = f"{notebook.removesuffix('.ipynb')}-{width}.png"
            taken = [shots[f"book__runs__{run}__{kind}"] for run in sorted(runs)
                     if f"book__runs__{run}__{kind}" in shots]
            assert len(taken) == 1 and taken[0] > 10_000, (kind, taken)
    assert len(shots) == 2 * (2 + len(NOTEBOOKS)), sorted(shots)
    print(f"screenshots: {len(shots)} in {SCREENSHOTS}")


class LiveMarkup(HTMLParser):
    """Elements and attributes of a page that would run a user's markup: an ``img`` with
    ``src="x"``, any ``onerror`` attribute, a script that calls ``alert``."""

    def __init__(self):
        super().__init__()
        self.live, self._in_script = [], False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if (tag == "img" and attrs.get("src") == "x") or "onerror" in attrs:
            self.live.append(f"<{tag} {attrs}>")
        self._in_script = tag == "script"

    def handle_endtag(self, tag):
        self._in_script = False

    def handle_data(self, data):
        if self._in_script and "alert(" in data:
            self.live.append(f"<script>{data[:60]}")


def test_a_users_markup_is_shown_as_text_never_live(tiny_html):
    """The tiny run's data_root holds HTML and script (bookutil.MARKUP): every page that shows
    it shows it as text, and no page holds it as live elements."""
    shown = []
    for page in tiny_html.rglob("*.html"):
        text = page.read_text(errors="replace")
        parser = LiveMarkup()
        parser.feed(text)
        assert parser.live == [], (page.relative_to(tiny_html), parser.live)
        if "onerror=alert(1)" in html.unescape(text):
            shown.append(page.name)
    assert "index.html" in shown and "01_train.html" in shown, shown


def test_each_verdict_of_the_front_page_lands_on_its_claim(tiny_html):
    """Every verdict link of the front page points at a page of the book that holds an
    element with the link's id (the claim's block in the run's summary)."""
    front = tiny_html / "book" / "intro.html"
    hrefs = re.findall(r'<a class="verdict" href="([^"]+)"', front.read_text())
    assert len(hrefs) >= 5, hrefs
    for href in hrefs:
        page, anchor = html.unescape(href).split("#")
        assert anchor.startswith("claim-")
        assert f'id="{anchor}"' in (front.parent / unquote(page)).read_text(), href


def test_no_remote_script_or_stylesheet(tiny_html):
    assert remote_assets(tiny_html) == []


def test_no_absolute_path_of_the_build(tiny_html):
    """Neither the book root, the repository, the Python installation nor the home folder of
    the machine that built the book appears in any file of the HTML (notebook sources
    included): notebooks ran in the book root with paths relative to it."""
    root = tiny_html.parent.parent
    machine = [p for p in (root, REPO, sys.prefix, Path.home()) if Path(p) != Path("/")]
    assert path_leaks(tiny_html, machine) == []


# ------------------------------------------------------------------------------- a broken copy
def insert_before_body_end(page, html: str) -> None:
    """Insert ``html`` at the end of the body of ``page``."""
    text = page.read_text()
    page.write_text(text.replace("</body>", html + "\n</body>", 1))


def drop_mathjax(page) -> None:
    """Remove the MathJax script of ``page``, as if its source could not be reached."""
    lines = page.read_text().splitlines(keepends=True)
    page.write_text("".join(line for line in lines if "mathjax/tex-chtml.js" not in line))


@pytest.fixture
def broken_html(tiny_html, tmp_path):
    """A copy of the tiny book with one instance of every problem the checks look for."""
    html = shutil.copytree(tiny_html, tmp_path / "html")
    insert_before_body_end(html / "book/intro.html",
                           f'<img src="missing.png" alt="missing">\n'
                           f'<script src="{REMOTE_SCRIPT}"></script>\n'
                           f'<script>console.error("broken on purpose")</script>')
    insert_before_body_end(html / "book/reproduce.html", f"<p>built in {tmp_path}</p>")
    drop_mathjax(html / "book/methods.html")
    (html / "raw.html").write_text('<!DOCTYPE html><html><head><title>raw</title></head><body>'
                                   '<p>Raw <span class="math">\\(x^2\\)</span></p></body></html>')
    (html / "searchindex.js").unlink()
    insert_before_body_end(html / "book/reproduce.html", LAYOUT_FAULTS)
    figure = sorted((html / "_images").glob("*.png"))[0].name
    insert_before_body_end(html / "book/reproduce.html",   # squashed, and not a link to itself
                           f'<div class="cell_output"><img src="../_images/{figure}" '
                           f'alt="squashed" style="width: 300px; height: 20px"></div>')
    return html


#: A raw pandas table, printed output, a table wider than the column and a block wider than
#: a phone, as a notebook's outputs would hold them.
LAYOUT_FAULTS = (
    '<div class="cell_output"><table class="dataframe"><tr><th>raw_column</th></tr></table>'
    '<div class="output stream highlight-myst-ansi"><pre>printed on purpose</pre></div></div>'
    '<div class="reading-table"><table><tr>' + "<th>wide header</th>" * 40 + "</tr></table></div>"
    '<div style="width: 900px; height: 4px"></div>')


def assert_reported(problems, page: str, *fragments: str) -> None:
    """One of ``problems`` names ``page`` and holds every fragment."""
    hits = [p for p in problems if p.startswith(page) and all(f in p for f in fragments)]
    assert hits, f"nothing reported for {page} {fragments}; reported:\n" + "\n".join(problems)


#: The pages :func:`broken_html` breaks (the other pages are checked whole by
#: :func:`test_every_page_works_offline`).
BROKEN_PAGES = ["book/intro.html", "book/methods.html", "raw.html", "book/reproduce.html"]


def test_checks_catch_a_broken_page(broken_html, tmp_path):
    problems = check_site(broken_html, SEARCH_WORD, pages=BROKEN_PAGES)
    assert_reported(problems, "book/intro.html", "image does not load", "missing.png")
    assert_reported(problems, "book/intro.html", "request outside the book", REMOTE_SCRIPT)
    assert_reported(problems, "book/intro.html", "console error", "broken on purpose")
    assert_reported(problems, "book/methods.html", "none typeset")
    assert_reported(problems, "book/methods.html", "raw TeX")
    assert_reported(problems, "raw.html", "none typeset")
    assert_reported(problems, "raw.html", "raw TeX \\(")
    assert_reported(problems, f"search.html?q={SEARCH_WORD}", "found no page")
    assert_reported(problems, "book/reproduce.html", "shown raw", "raw_column")
    assert_reported(problems, "book/reproduce.html", "printed output", "printed on purpose")
    assert_reported(problems, "book/reproduce.html", "wider than the column", "wide header")
    assert_reported(problems, "book/reproduce.html", "at 390 px the page scrolls sideways")
    assert_reported(problems, "book/reproduce.html", "at 1400 px an image is squashed")
    assert_reported(problems, "book/reproduce.html", "does not open full size")
    assert f"book/intro.html: {REMOTE_SCRIPT}" in remote_assets(broken_html)
    assert f"book/reproduce.html: {tmp_path}" in path_leaks(broken_html, [tmp_path])
