"""Checks of a built HTML book: in a real browser (Debian's Chromium driven by Playwright) and by
reading its files.

:func:`check_site` opens every page over a local HTTP server, one after another in one tab as a
reader browsing the book would, and returns a list of problems: requests that leave the server
(which no page can reach by a host name: the browser resolves none but 127.0.0.1), math left
untypeset, images that do not load, console errors, and a search that finds nothing.
:func:`remote_assets` and :func:`path_leaks` read the files.
"""
from __future__ import annotations

import sys
import threading
import time
from contextlib import contextmanager
from functools import partial
from html.parser import HTMLParser
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterator
from urllib.parse import urlsplit

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"]
LOCAL_SCHEMES = ("data", "blob", "about")
TIMEOUT_MS = 30_000

# Resolves once MathJax (if the page loads it) has typeset the page.
MATH_DONE_JS = """async () => {
  const done = window.MathJax && MathJax.startup && MathJax.startup.promise;
  if (done) await Promise.race([done, new Promise(r => setTimeout(r, 20000))]);
}"""

# The src of every image that did not load, after forcing lazy images to load.
BROKEN_IMAGES_JS = """async () => {
  const images = Array.from(document.images);
  images.forEach(img => { img.loading = "eager"; });
  const loaded = img => img.complete ? null : new Promise(r => { img.onload = img.onerror = r; });
  await Promise.race([Promise.all(images.map(loaded)), new Promise(r => setTimeout(r, 10000))]);
  return images.filter(img => !img.complete || img.naturalWidth === 0)
               .map(img => img.getAttribute("src"));
}"""

# Counts of math elements, typeset ones and MathJax errors; the visible text outside code.
MATH_STATE_JS = """() => {
  const skip = "pre, code, script, style, textarea, mjx-container";
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  const parts = [];
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    const el = node.parentElement;
    if (el && !el.closest(skip) && el.checkVisibility()) parts.push(node.textContent);
  }
  return {math: document.querySelectorAll(".math").length,
          typeset: document.querySelectorAll("mjx-container").length,
          errors: document.querySelectorAll("mjx-merror").length,
          text: parts.join(" ")};
}"""

RAW_TEX = ("\\(", "\\[", "$$")

# True once Sphinx's search page has listed its results.
SEARCH_DONE_JS = ("() => document.querySelector('#search-results h2')?.innerText"
                  " === 'Search Results'")

# What a reader of a narrow or wide screen stumbles on: how far the page scrolls sideways,
# tables wider than their box, tables dumped raw (pandas' own HTML) and printed output.
LAYOUT_JS = """() => {
  const snippet = el => el.innerText.replace(/\\s+/g, " ").trim().slice(0, 60);
  return {overflow: document.documentElement.scrollWidth - window.innerWidth,
          wide: Array.from(document.querySelectorAll("div.reading-table"))
                  .filter(box => box.querySelector("table").scrollWidth > box.clientWidth + 1)
                  .map(box => snippet(box.querySelector("tr"))),
          raw: Array.from(document.querySelectorAll("div.cell_output table.dataframe"))
                  .map(t => snippet(t.querySelector("tr"))),
          printed: Array.from(document.querySelectorAll("div.cell_output div.output.stream"))
                  .map(snippet),
          images: Array.from(document.querySelectorAll("div.cell_output img, figure img"))
                  .filter(img => img.complete && img.naturalWidth > 0 && img.clientHeight > 0)
                  .map(img => ({src: img.getAttribute("src"),
                                squashed: Math.abs(img.clientWidth / img.clientHeight /
                                                   (img.naturalWidth / img.naturalHeight) - 1)
                                          > 0.03,
                                linked: !!img.closest("a") && img.closest("a").href === img.src}))};
}"""
#: The two widths a page is read at: a desktop window and a phone.
WIDE, NARROW = {"width": 1400, "height": 900}, {"width": 390, "height": 844}


class _QuietHandler(SimpleHTTPRequestHandler):
    """A static file handler that does not log every request."""

    def log_message(self, *args) -> None:
        pass


@contextmanager
def serve(folder: Path) -> Iterator[str]:
    """Serve ``folder`` over HTTP on 127.0.0.1; yield its base URL (ending in ``/``)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(_QuietHandler, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def chromium() -> Iterator:
    """The system's Chromium, headless, driven by Playwright."""
    from playwright.sync_api import sync_playwright
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def html_pages(html_dir: Path) -> list[str]:
    """Every page of the book: ``*.html`` paths relative to ``html_dir``, outside ``_static``."""
    return sorted(p.relative_to(html_dir).as_posix() for p in html_dir.rglob("*.html")
                  if "_static" not in p.relative_to(html_dir).parts)


def is_local(url: str, base: str) -> bool:
    """Whether ``url`` stays on the local server or needs no network at all."""
    return url.startswith(base) or urlsplit(url).scheme in LOCAL_SCHEMES


class Visit:
    """One browser tab that reads the book's pages in turn, as a reader browsing it does (the
    theme's scripts and styles come from the browser's cache after the first page), recording
    what goes wrong on each into :attr:`problems`, each line prefixed with the page's name.

    Requests that would leave the local server are recorded (and reach no named host:
    Chromium resolves no host name but 127.0.0.1, :data:`CHROMIUM_ARGS`)."""

    def __init__(self, browser, base: str):
        self.base, self.name, self.problems = base, "", []
        self.page = browser.new_context(viewport=WIDE).new_page()
        self.page.on("request", lambda r: None if is_local(r.url, base) else self.problems.append(
            f"{self.name}: request outside the book: {r.url}"))
        self.page.on("console", lambda m: m.type == "error" and not self._browsers_own(m)
                     and self.problems.append(f"{self.name}: console error: {m.text}"))
        self.page.on("pageerror", lambda err: self.problems.append(
            f"{self.name}: script error: {err}"))
        self.page.on("response", lambda r: r.status >= 400 and self.problems.append(
            f"{self.name}: HTTP {r.status} for {r.url}"))

    def _browsers_own(self, message) -> bool:
        """Whether a console message is about the browser's own request for the site's icon
        (``/favicon.ico``, asked once a visit whatever the pages declare), not the page's."""
        return message.location.get("url") == self.base + "favicon.ico"

    def open(self, name: str):
        """Go to ``base + name`` at 1400x900 and wait until the network is idle and MathJax
        (where the page loads it) has typeset the page; the page."""
        self.name = name
        self.page.set_viewport_size(WIDE)
        self.page.goto(self.base + name, wait_until="networkidle", timeout=TIMEOUT_MS)
        self.page.wait_for_load_state("networkidle", timeout=TIMEOUT_MS)   # after a redirect
        self.page.evaluate(MATH_DONE_JS)
        return self.page

    def close(self) -> None:
        self.page.context.close()


def math_problems(page, name: str) -> list[str]:
    """Math that is not typeset, MathJax errors and raw TeX delimiters in the visible text."""
    state, found = page.evaluate(MATH_STATE_JS), []
    if state["math"] and not state["typeset"]:
        found.append(f"{name}: {state['math']} math elements but none typeset")
    if state["errors"]:
        found.append(f"{name}: {state['errors']} MathJax errors")
    raw = [d for d in RAW_TEX if d in state["text"]]
    if raw:
        found.append(f"{name}: raw TeX {' '.join(raw)} in the visible text")
    return found


def layout_problems(page, name: str, wide: bool) -> list[str]:
    """At 1400 px: tables wider than the text column, and a figure that does not link to
    itself (so that a reader can open it full size). At either width: a page that scrolls
    sideways, and a figure drawn at another aspect ratio than its own (squashed). Always: a
    table shown raw instead of for reading, and printed output."""
    state, width = page.evaluate(LAYOUT_JS), page.viewport_size["width"]
    found = []
    if state["overflow"] > 1:
        found.append(f"{name}: at {width} px the page scrolls sideways by {state['overflow']} px")
    found += [f"{name}: at {width} px an image is squashed (not at its own aspect ratio): "
              f"{image['src']}" for image in state["images"] if image["squashed"]]
    if wide:
        found += [f"{name}: an image does not open full size (no link to itself): "
                  f"{image['src']}" for image in state["images"] if not image["linked"]]
        found += [f"{name}: table wider than the column at {width} px: {row}"
                  for row in state["wide"]]
        found += [f"{name}: a table shown raw (not through punl's table): {row}"
                  for row in state["raw"]]
        found += [f"{name}: printed output in the page: {text}" for text in state["printed"]]
    return found


def shoot(page, folder: Path, name: str) -> None:
    """A full-page PNG of ``page`` in ``folder``, named after the page and the width."""
    stem = name.removesuffix(".html").replace("/", "__")
    folder.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(folder / f"{stem}-{page.viewport_size['width']}.png"), full_page=True)


def check_page(visit: Visit, name: str, screenshots: Path | None = None) -> None:
    """Every problem of one page, read at 1400 px and at 390 px: requests, console, math,
    images and layout, into ``visit.problems``; with ``screenshots``, a full-page PNG at each
    width in that folder."""
    page = visit.open(name)
    problems = math_problems(page, name)
    problems += [f"{name}: image does not load: {src}" for src in page.evaluate(BROKEN_IMAGES_JS)]
    for viewport in (WIDE, NARROW):
        page.set_viewport_size(viewport)
        problems += layout_problems(page, name, viewport is WIDE)
        if screenshots:
            shoot(page, screenshots, name)
    visit.problems += problems


def check_search(visit: Visit, word: str) -> None:
    """``search.html?q=word`` lists at least one page. The search is waited for until it
    shows its results, a request of the page has failed (a missing index: it never will), or
    :data:`TIMEOUT_MS` has passed."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    name = f"search.html?q={word}"
    page = visit.open(name)
    deadline = time.monotonic() + TIMEOUT_MS / 1000
    while True:
        try:
            page.wait_for_function(SEARCH_DONE_JS, timeout=250)
            break
        except PlaywrightTimeout:
            if time.monotonic() > deadline or any(p.startswith(f"{name}: HTTP")
                                                  for p in visit.problems):
                visit.problems.append(f"{name}: the search did not finish")
                break
    hits = page.eval_on_selector_all("#search-results ul.search li a",
                                     "links => links.map(a => a.getAttribute('href'))")
    if not hits:
        visit.problems.append(f"{name}: the search found no page")


def check_site(html_dir: str | Path, search_word: str, screenshots: Path | None = None,
               pages: list[str] | None = None) -> list[str]:
    """Open every page of ``html_dir`` (or only ``pages``, paths relative to it) in Chromium,
    one after another in one tab (:class:`Visit`), then search it for ``search_word``; the
    problems found (empty when all is well).

    With ``screenshots`` (a folder), the pages of :func:`photographed` are photographed there
    at both widths after they are checked."""
    html_dir = Path(html_dir)
    names = html_pages(html_dir) if pages is None else pages
    shot = set(photographed(names)) if screenshots else set()
    with serve(html_dir) as base, chromium() as browser:
        visit = Visit(browser, base)
        for name in names:
            check_page(visit, name, screenshots if name in shot else None)
        check_search(visit, search_word)
        visit.close()
    return visit.problems


# ----------------------------------------------------------------------------- reading the files
class _AssetParser(HTMLParser):
    """Collects the ``src`` of scripts and the ``href`` of stylesheets."""

    def __init__(self):
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "script" and attrs.get("src"):
            self.urls.append(attrs["src"])
        rel = (attrs.get("rel") or "").lower().split()
        if tag == "link" and "stylesheet" in rel and attrs.get("href"):
            self.urls.append(attrs["href"])


def remote_assets(html_dir: str | Path) -> list[str]:
    """Every ``<script src>`` or ``<link rel=stylesheet href>`` with an http(s) URL."""
    html_dir, found = Path(html_dir), []
    for path in sorted(html_dir.rglob("*.html")):
        parser = _AssetParser()
        parser.feed(path.read_text(errors="replace"))
        found += [f"{path.relative_to(html_dir)}: {url}" for url in parser.urls
                  if urlsplit(url.strip()).scheme in ("http", "https")
                  or url.strip().startswith("//")]
    return found


def path_leaks(html_dir: str | Path, paths: list[str | Path]) -> list[str]:
    """Every file of ``html_dir`` that contains one of the absolute ``paths``."""
    html_dir = Path(html_dir)
    needles = sorted({str(p) for p in paths} | {str(Path(p).resolve()) for p in paths})
    found = []
    for path in sorted(p for p in html_dir.rglob("*") if p.is_file()):
        text = path.read_bytes().decode("utf-8", errors="ignore")
        found += [f"{path.relative_to(html_dir)}: {n}" for n in needles if n in text]
    return found


def photographed(pages: list[str]) -> list[str]:
    """The pages of ``pages`` a reader judges the book by: the landing page, the methods and
    each kind of run chapter once (in the first run, in page order, that has it). Every run's
    chapters come from the same notebooks, so one of each shows how they read; a book of many
    runs would otherwise leave hundreds of near-identical pictures."""
    chosen, kinds = [], set()
    for name in pages:
        kind = name.rsplit("/", 1)[-1]
        if name in ("index.html", "book/methods.html"):
            chosen.append(name)
        elif name.startswith("book/runs/") and kind != "index.html" and kind not in kinds:
            kinds.add(kind)
            chosen.append(name)
    return chosen


def main(argv: list[str] | None = None) -> int:
    """``python tests/sitecheck.py [HTML_DIR] [SEARCH_WORD]``: check a built book (``_build/html``
    by default), print its problems and write screenshots of its landing page, methods and
    chapters (each kind once, :func:`photographed`) at 1400 and 390 px next to it
    (``_build/screenshots/``)."""
    args = sys.argv[1:] if argv is None else argv
    html_dir = Path(args[0] if args else "_build/html")
    shots = html_dir.parent / "screenshots"
    problems = check_site(html_dir, args[1] if len(args) > 1 else "Langevin", shots)
    print("\n".join(problems) or f"no problems; screenshots in {shots}")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
