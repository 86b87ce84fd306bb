"""The book as a reader sees it, in a real browser: headless Chromium (Debian's ``chromium``
package; ``.ci/run`` installs it), driven through its DevTools protocol over a pipe
(``--remote-debugging-pipe``: no port, no driver, no Python package beyond the standard library).

The committed run is published again with today's ``cxr_utils.publish`` into a copy of the book
(so the check holds for the book as ``publish_to_book`` makes it), the book is built, and every
page of ``_toc.yml`` is opened at 1280 px: it is at most ``MAX_SCREENS`` windows long, no table is
wider than the content column, every image has loaded, no absolute path of a machine and no log
line (``LOG_LINE_PATTERNS``) is in the text, no number in a table is split across lines, and the
Colab launch links open ``notebooks/``. At 400 px a wide table scrolls inside itself, never the
page, and still splits no number, and every figure either shows its smallest text at
``MIN_TEXT_PX`` or more, or opens full size on tap (``book/_static/figures.js``). Takes a few
minutes on a 2-core CPU (building the book is most of it).
"""

import fcntl
import json
import os
import re
import shutil
import struct
import subprocess
import time
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest
import yaml

from cxr_utils import paths, plots, portable, publish, run

WIDE, NARROW = 1280, 400
WINDOW_HEIGHT = 900  # px: the window the pages are opened in
MAX_SCREENS = 8  # a page is at most this many windows long at WIDE px (issue: the report in pages)
MIN_TEXT_PX = 9  # the smallest text of a figure, as shown at NARROW px, in CSS pixels
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
# What a machine's own folder looks like in a page's text (cxr_utils.portable.MACHINE_PATH), and
# this machine's folders besides.
MACHINE_FOLDERS = [str(paths.REPO_ROOT), str(paths.REPO_ROOT.parent / "shared"), str(Path.home())]

# Lines that belong in a run's log, not on a page a reader opens: each pattern matches one kind,
# searched line by line in the text the page shows (a planted line of each kind is caught:
# test_log_line_patterns_catch_planted_lines). Absolute folders of a machine are checked apart
# (MACHINE_FOLDERS, portable.MACHINE_PATH).
LOG_LINE_PATTERNS = [
    r"\bchecked against\b",                    # a consistency check reporting itself: "split.csv checked against ..."
    r"^\s*\[\d+/\d+\]",                        # the series runner's progress: "[1/8] 01_data_collection ..."
    r"\bdone in \d",                           # ... and its timings: "... done in 12.3 s"
    r"^\s*INFO\b",                              # logging records: "INFO:cxr_utils...", "INFO 12:00 ..."
    r"^\s*(?:WARNING|ERROR|DEBUG|CRITICAL):",   # Python's logging and absl: "WARNING:absl:..."
    r"^\s*Epoch \d+/\d+",                       # Keras' fit progress: "Epoch 1/15"
    r"\d+/\d+ \[=*>?\.*\]",                     # ... and its bar: "13/25 [=====>......]"
    r"\d(?:\.\d+)?\s?(?:it/s|s/it)\b",           # tqdm's rate: "3.2it/s", "1.5s/it"
    r"\d+%\|",                                  # tqdm's bar: " 45%|████▌     |"
    r"\bRESULTS_DIR/",                          # a printed path in the run's folder, as publishing writes
                                                # it ("Saved in RESULTS_DIR/lstm"); the placeholder named
                                                # alone (the run record's list of placeholders) is prose
]
LOG_LINE = re.compile("|".join(f"(?:{pattern})" for pattern in LOG_LINE_PATTERNS))


def log_lines(text: str) -> list[str]:
    """The lines of ``text`` that match one of ``LOG_LINE_PATTERNS``."""
    return [line.strip() for line in text.splitlines() if LOG_LINE.search(line)]


def png_dpi(path: Path) -> float | None:
    """The resolution a PNG records (its pHYs chunk, which matplotlib's savefig writes from its
    ``dpi``), in dots per inch; None when it records none."""
    data = Path(path).read_bytes()
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        return None
    position = 8
    while position + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[position:position + 8])
        if kind == b"pHYs":
            per_unit, _, unit = struct.unpack(">IIB", data[position + 8:position + 17])
            return per_unit * 0.0254 if unit == 1 else None  # unit 1: per metre
        if kind in (b"IDAT", b"IEND"):
            return None  # pHYs comes before the image data
        position += 12 + length
    return None


def smallest_text_px(path: Path) -> float:
    """The smallest text of a figure at its natural size, in pixels. Assumed, not measured: the
    book's figures are drawn by ``cxr_utils.plots``, whose ``_legible`` raises every text to at
    least ``plots.MIN_POINTS`` points (more for a figure wider than ``plots.PAGE_WIDTH_IN``), so
    the smallest is taken as ``MIN_POINTS`` points at the dpi the PNG was saved with (``plots.DPI``
    for the saved figures, the notebook's inline dpi for a chapter's output; ``plots.DPI`` when the
    PNG records none)."""
    return plots.MIN_POINTS * (png_dpi(path) or plots.DPI) / 72


class Chromium:
    """Headless Chromium and the few DevTools commands the test needs, over the pipe Chromium
    reads on fd 3 and writes on fd 4 (JSON messages ending in a NUL byte)."""

    def __init__(self, binary: str, profile: Path, width: int = WIDE, height: int = WINDOW_HEIGHT):
        to_browser, from_browser = os.pipe(), os.pipe()
        # Moved above the standard descriptors, so that placing them on 3 and 4 clobbers nothing.
        reads = fcntl.fcntl(to_browser[0], fcntl.F_DUPFD_CLOEXEC, 10)
        writes = fcntl.fcntl(from_browser[1], fcntl.F_DUPFD_CLOEXEC, 10)
        os.close(to_browser[0])
        os.close(from_browser[1])

        def on_fds_3_and_4():  # in the child, before exec: dup2 clears close-on-exec
            os.dup2(reads, 3)
            os.dup2(writes, 4)

        self.process = subprocess.Popen(
            [binary, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
             "--remote-debugging-pipe", f"--user-data-dir={profile}", f"--window-size={width},{height}",
             "--no-first-run", "--no-default-browser-check", "--disable-extensions",
             "--disable-background-networking", "--host-resolver-rules=MAP * ~NOTFOUND", "about:blank"],
            preexec_fn=on_fds_3_and_4, close_fds=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(reads)
        os.close(writes)
        self.writer = os.fdopen(to_browser[1], "wb", buffering=0)
        self.reader = os.fdopen(from_browser[0], "rb", buffering=0)
        self.buffer, self.last_id, self.events = b"", 0, []
        page = next(t for t in self.send("Target.getTargets")["targetInfos"] if t["type"] == "page")
        self.session = self.send("Target.attachToTarget", targetId=page["targetId"], flatten=True)["sessionId"]
        self.send("Page.enable", session=True)
        self.resize(width, height)

    def _receive(self) -> dict:
        while b"\0" not in self.buffer:
            chunk = self.reader.read(1 << 16)
            if not chunk:
                raise RuntimeError("Chromium closed its DevTools pipe")
            self.buffer += chunk
        message, self.buffer = self.buffer.split(b"\0", 1)
        return json.loads(message)

    def send(self, method: str, session: bool = False, **params) -> dict:
        self.last_id += 1
        message = {"id": self.last_id, "method": method, "params": params}
        if session:
            message["sessionId"] = self.session
        self.writer.write(json.dumps(message).encode() + b"\0")
        while True:
            reply = self._receive()
            if reply.get("id") == self.last_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def resize(self, width: int, height: int = WINDOW_HEIGHT) -> None:
        self.send("Emulation.setDeviceMetricsOverride", session=True, width=width, height=height,
                  deviceScaleFactor=1, mobile=False)

    def open(self, url: str, timeout: float = 60) -> None:
        self.events.clear()
        self.send("Page.navigate", session=True, url=url)
        deadline = time.monotonic() + timeout
        while not any(e.get("method") == "Page.loadEventFired" for e in self.events):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{url} did not load in {timeout} s")
            self.events.append(self._receive())

    def evaluate(self, expression: str):
        result = self.send("Runtime.evaluate", session=True, expression=expression, returnByValue=True,
                           awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(result["exceptionDetails"].get("exception", {}).get("description", result))
        return result["result"].get("value")

    def close(self) -> None:
        try:
            self.send("Browser.close")
            self.process.wait(timeout=10)
        except Exception:  # noqa: BLE001 - closing must not hide the test's own failure
            self.process.kill()
            self.process.wait()


# Run in the page: load every image (lazy ones too), then measure the article column, its tables
# and images, and collect the text and the Colab links.
MEASURE = r"""
(async () => {
  for (const image of document.images) { image.loading = "eager"; }
  await Promise.all([...document.images].map(image => image.complete ? null :
    new Promise(done => { image.onload = image.onerror = done; })));
  const article = document.querySelector("article.bd-article");
  if (!article) { return null; }
  const style = getComputedStyle(article);
  const column = article.clientWidth - parseFloat(style.paddingLeft) - parseFloat(style.paddingRight);
  return {
    column: column,
    tables: [...article.querySelectorAll("table")].map(table => ({
      width: table.getBoundingClientRect().width,
      head: table.innerText.trim().split("\n")[0].slice(0, 80)})),
    images: [...document.images].map(image => ({src: image.getAttribute("src"), width: image.naturalWidth})),
    // The article's figures: where each is read from, its natural and its displayed width, and the
    // address of the link around it, if any.
    figures: [...article.querySelectorAll("img")].map(image => ({
      url: image.src, natural: image.naturalWidth, shown: image.getBoundingClientRect().width,
      link: image.closest("a") ? image.closest("a").href : null})),
    height: document.documentElement.scrollHeight,
    text: document.body.innerText,
    colab: [...document.querySelectorAll("a[href*='colab.research.google.com']")].map(a => a.href),
    // Numbers in table cells laid out on more than one line: a value split mid-way ("0./95").
    broken_numbers: [...article.querySelectorAll("td, th")].flatMap(cell => {
      const broken = [];
      const walker = document.createTreeWalker(cell, NodeFilter.SHOW_TEXT);
      for (let node = walker.nextNode(); node; node = walker.nextNode()) {
        // A number starts a word (a date's "-12" or a name's "ResNet50" are not numbers of their own).
        for (const match of node.data.matchAll(/(?<![\w.,+-])[-+]?\d[\d.,]*\d|(?<![\w.,+-])\d/g)) {
          const number = match[0];
          const range = document.createRange();
          range.setStart(node, match.index);
          range.setEnd(node, match.index + number.length);
          const lines = new Set([...range.getClientRects()].filter(r => r.width > 0).map(r => Math.round(r.top)));
          if (lines.size > 1) { broken.push(number); }
        }
      }
      return broken;
    }),
    page_width: document.documentElement.scrollWidth,
    window_width: window.innerWidth,
  };
})()
"""


def _chromium() -> str:
    found = os.environ.get("CXR_CHROMIUM") or next(filter(None, map(shutil.which, BROWSERS)), None)
    if found:
        return found
    message = ("Chromium not found (looked for CXR_CHROMIUM and " + ", ".join(BROWSERS) + "); install it, "
               "e.g. `apt-get install chromium` (what .ci/run does)")
    if os.environ.get("CXR_REQUIRE_DATA") == "1":
        pytest.fail(message + " (CXR_REQUIRE_DATA=1 makes this a failure)")
    pytest.skip(message)


def _pages(root: Path) -> list[str]:
    toc = yaml.safe_load((root / "_toc.yml").read_text())
    pages = [toc["root"]]
    for part in toc.get("parts", []):
        pages += [chapter["file"] for chapter in part.get("chapters", [])]
    return pages


def test_log_line_patterns_catch_planted_lines():
    """Each kind of log line, planted in a page's text, is found; the prose that names the same
    words is not."""
    planted = [
        "split.csv checked against the manifest: 1000 rows",
        "[1/8] 01_data_collection done in 12.3 s",
        "03_resnet50 done in 4 min 2 s",
        "INFO:cxr_utils.training:fitting resnet50",
        "INFO 2026-12-03 12:00:01 loading images",
        "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
        "WARNING:absl:Compiled the loaded model, but the compiled metrics have yet to be built.",
        "ERROR: could not read image",
        "Epoch 1/15",
        "13/25 [=============>................] - ETA: 4s - loss: 0.69",
        "decoding images: 100%|##########| 120/120 [00:01<00:00, 95.3it/s]",
        " 45%|████▌     | 54/120 [00:03<00:04, 1.5s/it]",
        "Saved in RESULTS_DIR/resnet50",
    ]
    page = "Some prose.\n" + "\n".join(planted) + "\nMore prose."
    assert log_lines(page) == [line.strip() for line in planted]
    prose = [
        "Each claim is judged by one rule, the same at any number of test images.",
        "The folders of the machine that ran are written as placeholders: DATA_DIR, RESULTS_DIR (…/book-sample).",
        "The split is drawn once (seed 42) and every chapter checks its own copy against it.",
        "Training took 15 epochs; the kept epoch was epoch 9 of 15.",
        "Accuracy 0.95 [0.89, 0.98]; 95% of the images were read in under 2 s.",
        "Information about the run is in its record.",
    ]
    assert log_lines("\n".join(prose)) == []


def test_png_dpi_reads_the_resolution_matplotlib_saves(tmp_path):
    import matplotlib.pyplot as plt

    figure, ax = plt.subplots(figsize=(2, 1))
    ax.plot([0, 1], [0, 1])
    for dpi in (plots.DPI, 100):
        figure.savefig(tmp_path / f"at_{dpi}.png", dpi=dpi)
        assert png_dpi(tmp_path / f"at_{dpi}.png") == pytest.approx(dpi, abs=0.1)
        assert smallest_text_px(tmp_path / f"at_{dpi}.png") == pytest.approx(plots.MIN_POINTS * dpi / 72, abs=0.01)
    plt.close(figure)
    (tmp_path / "not.png").write_bytes(b"GIF89a")
    assert png_dpi(tmp_path / "not.png") is None


def _figure_problems(page: str, figures: list[dict]) -> tuple[list[str], list[str]]:
    """At NARROW px, each figure's smallest text as shown (``smallest_text_px`` times displayed
    over natural width) must reach ``MIN_TEXT_PX``, or the figure must be a link to its own PNG
    (open full size on tap). Returns (problems, the figures below the size that open full size)."""
    problems, opened = [], []
    for figure in figures:
        if not figure["natural"]:
            continue  # reported as not loaded
        path = Path(unquote(urlparse(figure["url"]).path))
        scale = figure["shown"] / figure["natural"]
        natural_px = smallest_text_px(path)
        shown_px = natural_px * scale
        if shown_px >= MIN_TEXT_PX:
            continue
        described = (f"{page}: figure {path.name}: smallest text {shown_px:.1f} px at {NARROW} px "
                     f"({natural_px:.1f} px x {figure['shown']:.0f}/{figure['natural']} px), below {MIN_TEXT_PX}")
        if figure["link"] == figure["url"]:
            opened.append(described + "; opens full size on tap")
        else:
            problems.append(described + f", and it does not open full size on tap (link: {figure['link']})")
    return problems, opened


def test_every_page_reads_well_in_chromium(book_copy, tmp_path):
    browser_binary = _chromium()
    if not (publish.BOOK_EXECUTED_DIR / "run.json").is_file():
        pytest.skip("no run published in book/executed/ yet")
    started = time.perf_counter()
    root = book_copy(with_executed=False)
    results = portable.results_of_published(publish.BOOK_EXECUTED_DIR, tmp_path / "results")
    publish.publish_to_book(results, root / "book" / "executed", log=lambda *_: None)
    html = publish.build_book(root, log=lambda *_: None)
    built = time.perf_counter()

    # No file that ships with the book names a machine's folder: the pages, and the notebooks and
    # Markdown sources offered for download.
    shipped = [line for line in portable.machine_paths(html, MACHINE_FOLDERS)
               if line.startswith(("book/", "_sources/", "index.html"))]
    assert shipped == [], "\n".join(shipped[:20])

    machine_path = re.compile(portable.MACHINE_PATH.pattern + "|" + "|".join(map(re.escape, MACHINE_FOLDERS)))
    settings = yaml.safe_load((root / "_config.yml").read_text())
    repository = settings["repository"]["url"].removeprefix("https://github.com/")
    problems, heights, opened = [], {}, []
    browser = Chromium(browser_binary, tmp_path / "chromium-profile")
    try:
        for page in _pages(root):
            url = (html / f"{page}.html").as_uri()
            browser.resize(WIDE)
            browser.open(url)
            seen = browser.evaluate(MEASURE)
            if seen is None:
                problems.append(f"{page}: no article element")
                continue
            heights[page] = seen["height"]
            if seen["height"] > MAX_SCREENS * WINDOW_HEIGHT:
                problems.append(f"{page}: {seen['height']} px long at {WIDE} px, "
                                f"{seen['height'] / WINDOW_HEIGHT:.1f} windows of {WINDOW_HEIGHT} px; "
                                f"at most {MAX_SCREENS} ({MAX_SCREENS * WINDOW_HEIGHT} px)")
            for table in seen["tables"]:
                if table["width"] > seen["column"] + 1:
                    problems.append(f"{page}: table {table['head']!r} is {table['width']:.0f} px wide, "
                                    f"the column {seen['column']:.0f} px")
            if seen["broken_numbers"]:
                problems.append(f"{page}: at {WIDE} px numbers split across lines in tables: "
                                f"{seen['broken_numbers'][:5]}")
            for image in seen["images"]:
                if not image["width"]:
                    problems.append(f"{page}: image {image['src']} did not load")
            for match in machine_path.finditer(seen["text"]):
                problems.append(f"{page}: machine path in the text: {seen['text'][match.start():][:80]!r}")
            for line in log_lines(seen["text"]):
                problems.append(f"{page}: a log line in the text: {line[:100]!r}")
            name = page.rsplit("/", 1)[-1]
            if page.startswith("book/executed/") and name in run.series():  # the chapters, not the card
                expected = [f"https://colab.research.google.com/github/{repository}/blob/"
                            f"{settings['repository']['branch']}/notebooks/{name}.ipynb"]
                if seen["colab"] != expected:
                    problems.append(f"{page}: Colab links {seen['colab']}, expected {expected}")
            elif [link for link in seen["colab"] if not link.endswith(f"/notebooks/{run.RUN_ALL}.ipynb")]:
                # A prose page has no launch button; it may link the run-all notebook in its text.
                problems.append(f"{page}: a prose page with Colab links {seen['colab']}")
            if seen["tables"] or seen["figures"]:  # on a phone
                browser.resize(NARROW)
                browser.open(url)
                narrow = browser.evaluate(MEASURE)
                # A wide table scrolls inside itself, not the page.
                if narrow["page_width"] > narrow["window_width"] + 1:
                    problems.append(f"{page}: at {NARROW} px the page is {narrow['page_width']} px wide")
                if narrow["broken_numbers"]:
                    problems.append(f"{page}: at {NARROW} px numbers split across lines in tables: "
                                    f"{narrow['broken_numbers'][:5]}")
                # A figure's text stays readable, or the figure opens full size.
                too_small, small_but_linked = _figure_problems(page, narrow["figures"])
                problems += too_small
                opened += small_but_linked
    finally:
        browser.close()
    browsed = time.perf_counter()
    print(f"published and built in {built - started:.0f} s, {len(_pages(root))} pages checked in "
          f"{browsed - built:.0f} s")
    print("page heights at 1280 px: " + ", ".join(f"{page} {height} px" for page, height in heights.items()))
    print(f"figures whose text is below {MIN_TEXT_PX} px at {NARROW} px, opened full size on tap:\n  "
          + "\n  ".join(opened))
    assert problems == [], "\n".join(problems)
