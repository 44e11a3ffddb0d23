"""MLflow's own UI in headless Chromium (Debian's package, driven by Playwright): the compare page of
some runs, read row by row (its tables are virtualized: only the rows in view are in the page, so
each scrolling box is scrolled through), and a metric's page (the compare page's link for a metric),
whose table gives each run's value in full. Screenshots of each are kept.
"""

from __future__ import annotations

import json
import shutil
import urllib.parse
from pathlib import Path

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"

# Scrolls every scrolling box from top to bottom, half a box at a time, and returns the page's text
# at each step: a table's names column and its values grid are separate elements, so the whole page
# is read, not the box.
READ_ALL_ROWS = """async () => {
  const texts = [document.body.innerText];
  const boxes = [...document.querySelectorAll('*')].filter(e => e.scrollHeight > e.clientHeight + 4
      && ['auto', 'scroll'].includes(getComputedStyle(e).overflowY));
  for (const box of boxes) {
    for (let y = 0; y <= box.scrollHeight; y += Math.max(50, box.clientHeight / 2)) {
      box.scrollTop = y;
      await new Promise(r => setTimeout(r, 150));
      texts.push(document.body.innerText);
    }
    box.scrollTop = 0;
  }
  return texts.join('\\n');
}"""


def _json(value: object) -> str:
    return urllib.parse.quote(json.dumps(value))


def compare_url(server: str, experiment_id: str, run_ids: list[str]) -> str:
    return f"{server}/#/compare-runs?runs={_json(run_ids)}&experiments={_json([experiment_id])}"


def metric_url(server: str, experiment_id: str, run_ids: list[str], metric: str) -> str:
    """The page the compare view links a metric's name to (MLflow's getMetricPageRoute)."""
    return (f"{server}/#/metric?runs={_json(run_ids)}&metric={_json(metric)}&experiments={_json([experiment_id])}"
            f"&plot_metric_keys={_json([metric])}&plot_layout={{}}&x_axis=step&y_axis_scale=linear"
            "&line_smoothness=1&show_point=false&deselected_curves=[]&last_linear_y_axis_range=[]")


class Browser:
    """One headless Chromium for a test; each page opened at 1600×1000 with MLflow's assistant
    panel closed (MLflow 3.17 opens it beside every page; a reviewer closes it to see the tables)."""

    def __init__(self, out: Path):
        from playwright.sync_api import sync_playwright

        self.out = out
        out.mkdir(parents=True, exist_ok=True)
        self._playwright = sync_playwright().start()
        self._browser = self._playwright.chromium.launch(executable_path=CHROMIUM,
                                                          args=["--no-sandbox", "--disable-gpu"])

    def __enter__(self) -> "Browser":
        return self

    def __exit__(self, *exc: object) -> None:
        self._browser.close()
        self._playwright.stop()

    def _open(self, url: str, ready_text: str):
        page = self._browser.new_page(viewport={"width": 1600, "height": 1000})
        page.goto(url)
        page.get_by_text(ready_text).first.wait_for(timeout=90_000)
        page.wait_for_timeout(1500)
        close = page.get_by_role("button", name="Close", exact=True)
        if close.count():
            close.first.click()
            page.wait_for_timeout(500)
        return page

    def compare_page(self, url: str, runs: int, screenshot: str) -> str:
        """Every row of the compare page's tables, as text. Screenshots: the top of the page, then
        its Parameters, Metrics and Tags sections each scrolled to the top of the view
        (`<screenshot>-<section>.png`)."""
        page = self._open(url, f"Comparing {runs} Runs")
        page.screenshot(path=str(self.out / f"{screenshot}.png"))
        for section in ("Parameters", "Metrics", "Tags"):
            heading = page.get_by_text(section, exact=True).first
            heading.evaluate("e => e.scrollIntoView({block: 'start'})")
            page.wait_for_timeout(500)
            page.screenshot(path=str(self.out / f"{screenshot}-{section.lower()}.png"))
        text = page.evaluate(READ_ALL_ROWS)
        page.close()
        return text

    def metric_values(self, url: str, metric: str, screenshot: str) -> dict[str, float]:
        """Run name -> the metric's latest value, from the metric page's table."""
        page = self._open(url, "Latest")
        page.screenshot(path=str(self.out / f"{screenshot}.png"))
        values = {}
        for row in page.locator("tr").all():
            cells = [c.strip() for c in row.locator("td").all_inner_texts()]
            if len(cells) >= 2 and "(step=" in cells[1]:
                values[cells[0]] = float(cells[1].split(" (step=")[0])
        page.close()
        return values
