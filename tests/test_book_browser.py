"""The book as a reader sees it, in a real browser: headless Chromium (Debian's ``chromium``
package; ``.ci/run`` installs it), driven through its DevTools protocol over a pipe
(``--remote-debugging-pipe``: no port, no driver, no Python package beyond the standard library).

The committed run is published again with today's ``cxr_utils.publish`` into a copy of the book
(so the check holds for the book as ``publish_to_book`` makes it), the book is built, and every
page of ``_toc.yml`` is opened at 1280 px: no table is wider than the content column, every
image has loaded, no absolute path of a machine is in the text, no number in a table is split
across lines, and the Colab launch links open ``notebooks/``. At 400 px a wide table scrolls
inside itself, never the page, and still splits no number. Takes about a
minute on a 2-core CPU (building the book is most of it).
"""

import fcntl
import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from cxr_utils import portable, publish, run

WIDE, NARROW = 1280, 400
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
# What a machine's own folder looks like in a page's text (cxr_utils.portable.MACHINE_PATH), and
# this machine's folders besides.
MACHINE_FOLDERS = [str(run.REPO_ROOT), str(run.REPO_ROOT.parent / "shared"), str(Path.home())]


class Chromium:
    """Headless Chromium and the few DevTools commands the test needs, over the pipe Chromium
    reads on fd 3 and writes on fd 4 (JSON messages ending in a NUL byte)."""

    def __init__(self, binary: str, profile: Path, width: int = WIDE, height: int = 900):
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

    def resize(self, width: int, height: int = 900) -> None:
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
    problems = []
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
            name = page.rsplit("/", 1)[-1]
            if page.startswith("book/executed/") and name in run.series():  # the chapters, not the card
                expected = [f"https://colab.research.google.com/github/{repository}/blob/"
                            f"{settings['repository']['branch']}/notebooks/{name}.ipynb"]
                if seen["colab"] != expected:
                    problems.append(f"{page}: Colab links {seen['colab']}, expected {expected}")
            elif [link for link in seen["colab"] if not link.endswith(f"/notebooks/{run.RUN_ALL}.ipynb")]:
                # A prose page has no launch button; it may link the run-all notebook in its text.
                problems.append(f"{page}: a prose page with Colab links {seen['colab']}")
            if seen["tables"]:  # on a phone, a wide table scrolls inside itself, not the page
                browser.resize(NARROW)
                browser.open(url)
                narrow = browser.evaluate(MEASURE)
                if narrow["page_width"] > narrow["window_width"] + 1:
                    problems.append(f"{page}: at {NARROW} px the page is {narrow['page_width']} px wide")
                if narrow["broken_numbers"]:
                    problems.append(f"{page}: at {NARROW} px numbers split across lines in tables: "
                                    f"{narrow['broken_numbers'][:5]}")
    finally:
        browser.close()
    browsed = time.perf_counter()
    print(f"published and built in {built - started:.0f} s, {len(_pages(root))} pages checked in "
          f"{browsed - built:.0f} s")
    assert problems == [], "\n".join(problems)
