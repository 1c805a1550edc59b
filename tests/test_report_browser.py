"""The report in a real browser (headless Chromium, offline, from a file): every chart drawn,
nothing in the console, numbers as the files hold them, hover and the legend working, and what
a file names shown as text, never run.

Debian's chromium and chromium-driver packages (.ci/run installs them); without them these
tests skip, saying so. The screenshots stay in pytest's temporary folder (report-*.png).
"""

from __future__ import annotations

import io
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from reportdocs import CPU_RUN, PLANS, SCRIPT, loaded, two_runs

from bench.measure.ops import load_results
from bench.present import report
from bench.present.plots import timed
from bench.record.units import fmt_ms, fmt_rate

selenium = pytest.importorskip("selenium", reason="selenium is a test extra")
from selenium import webdriver  # noqa: E402
from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.remote.webelement import WebElement  # noqa: E402

CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(
    not (CHROMIUM and DRIVER),
    reason="no Chromium here: apt-get install chromium chromium-driver (.ci/run does)",
)
MARKS = ".role-mark.mark-symbol path, .role-mark.mark-line path, .role-mark.mark-rect path"
POINTS = ".role-mark.mark-symbol path"
CHARTS = "return JSON.parse(document.getElementById('tokbench-charts').textContent)"


@pytest.fixture(scope="module")
def browser() -> Iterator[webdriver.Chrome]:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                 "--window-size=1280,1000", "--force-device-scale-factor=1"):  # fmt: skip
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=webdriver.ChromeService(DRIVER), options=options)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Path]]:
    """The files of each report: a CPU run, a two-file comparison, a capacity plan."""
    return {
        "cpu-run": [CPU_RUN],
        "comparison": two_runs(tmp_path_factory.mktemp("runs")),
        "capacity-plan": list(PLANS.values()),
    }


@pytest.fixture(scope="module")
def pages(files, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("reports")
    project = {"comparison": ["b200"]}
    return {
        name: report.write(paths, out / f"{name}.html", project=project.get(name, ()))
        for name, paths in files.items()
    }


def opened(browser: webdriver.Chrome, page: Path) -> list[dict]:
    """Open the page and wait for its charts; the console's messages meanwhile."""
    browser.get(page.as_uri())
    deadline = time.monotonic() + 30
    while browser.execute_script("return document.body.dataset.charts") == "drawing":
        assert time.monotonic() < deadline, "the charts were not drawn within 30 s"
        time.sleep(0.05)
    return browser.get_log("browser")


def blank(png: bytes) -> bool:
    """Whether a screenshot is (nearly) all one colour."""
    from PIL import Image

    image = Image.open(io.BytesIO(png)).convert("L")
    return image.getextrema()[1] - image.getextrema()[0] < 32


@pytest.mark.parametrize("name", ["cpu-run", "comparison", "capacity-plan"])
def test_every_chart_is_drawn_and_the_console_is_quiet(browser, pages, name: str) -> None:
    log = opened(browser, pages[name])
    assert [e for e in log if e["level"] in ("SEVERE", "WARNING")] == []
    assert browser.execute_script("return document.body.dataset.charts") == "drawn"
    wanted = len(browser.execute_script(CHARTS))
    charts = browser.find_elements(By.CSS_SELECTOR, ".chart")
    assert len(charts) == wanted > 0
    for chart in charts:
        assert chart.find_elements(By.CSS_SELECTOR, MARKS), chart.get_attribute("id")
        browser.execute_script("arguments[0].scrollIntoView()", chart)
        assert not blank(chart.screenshot_as_png), chart.get_attribute("id")
    height = browser.execute_script("window.scrollTo(0, 0); return document.body.scrollHeight")
    browser.set_window_size(1280, min(height + 40, 12000))
    browser.save_screenshot(str(pages[name].with_name(f"report-{name}.png")))
    browser.set_window_size(1280, 1000)


def chart_titled(browser: webdriver.Chrome, start: str) -> WebElement:
    """The first chart whose title starts so."""
    charts = browser.execute_script(CHARTS)
    found = next(c["id"] for c in charts if c["spec"]["title"].startswith(start))
    return browser.find_element(By.ID, found)


def cells(browser: webdriver.Chrome) -> list[str]:
    """Every table cell's text, in one call (a call per cell takes seconds)."""
    return browser.execute_script(
        "return Array.from(document.querySelectorAll('td'), td => td.innerText)"
    )


def test_the_numbers_are_the_files(browser, pages, files) -> None:
    opened(browser, pages["cpu-run"])
    shown = cells(browser)
    run = load_results(CPU_RUN)
    assert all(fmt_ms(c.timing.median_ms) in shown for c in run.cases if c.comparable)
    roofline = chart_titled(browser, "Roofline")
    assert len(roofline.find_elements(By.CSS_SELECTOR, POINTS)) == len(timed(run))

    opened(browser, pages["capacity-plan"])
    shown = cells(browser)
    plans = {p.stem: loaded(p) for p in files["capacity-plan"]}
    assert fmt_rate(plans["capacity"]["per_gpu_output_tokens_s"]) in shown
    assert all(fmt_rate(r["tokens_per_s"]) in shown for r in plans["estimate"]["rows"])
    assert fmt_rate(plans["simulate-slo"]["output_tokens_s_per_gpu"]) in shown


def test_hovering_shows_a_point_and_the_legend_picks_a_series(browser, pages) -> None:
    opened(browser, pages["comparison"])
    chart = chart_titled(browser, "matmul: speedup over A")
    browser.execute_script("arguments[0].scrollIntoView()", chart)
    point = chart.find_elements(By.CSS_SELECTOR, POINTS)[0]
    ActionChains(browser).move_to_element(point).perform()
    tooltip = browser.find_element(By.ID, "vg-tooltip-element")
    assert "4096×4096×4096 bf16 torch" in tooltip.text and "1.25× faster" in tooltip.text
    legend = chart.find_elements(By.CSS_SELECTOR, ".role-legend-symbol path")[1]
    ActionChains(browser).move_to_element(legend).click().perform()
    points = chart.find_elements(By.CSS_SELECTOR, POINTS)
    opacities = {p.get_attribute("opacity") for p in points}
    assert opacities == {"1", "0.1"}  # the projection picked, the measured column faded


def test_names_from_files_show_as_text_and_never_run(browser, pages) -> None:
    opened(browser, pages["comparison"])
    assert browser.execute_script("return window.pwned") is None
    text = browser.find_element(By.TAG_NAME, "body").text
    assert f"Run b/run: {SCRIPT} (H100 SXM)" in text and '<img src="x"' in text


def test_it_prints(browser, pages) -> None:
    from selenium.webdriver.common.print_page_options import PrintOptions

    opened(browser, pages["capacity-plan"])
    pdf = browser.print_page(PrintOptions())
    assert len(pdf) > 10_000  # base64 of a PDF with the charts drawn as vectors
