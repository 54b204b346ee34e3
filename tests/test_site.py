"""The static results site (`vqbench site`): its cells and links against hand-worked cases, bad
input, a deterministic output that the committed `site/` must match, and a real browser
(Debian's chromium through selenium; skipped with the reason where it is not installed)."""

from __future__ import annotations

import io
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from matplotlib import pyplot as plt

from vqbench.cli import main
from vqbench.site import metric_cell, paper_cell, read_reports, render_site, row_links, write_site

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")


def summary(mean, std=0.0, n=1):
    return {"mean": mean, "std": std, "n": n}


def row(label, params, psnr, *, quantizer="vanilla", fingerprint="aaaa", paper=None, **extra):
    metrics = {
        "usage": summary(0.5, 0.1, 3),
        "psnr_batch": summary(psnr, 0.25, 3),
        "rfid": {"mean": None, "std": None, "n": 0, "unavailable": "n/a (no Inception weights)"},
    }
    return {
        "block": 0,
        "run": label.lower(),
        "label": label,
        "operation": None,
        "quantizer": quantizer,
        "params": params,
        "settings_fingerprint": fingerprint,
        "paper": paper,
        "seeds": [0, 1, 2],
        "metrics": metrics,
        "codebook_size": params.get("codebook_size"),
        "vs_baseline": {},
        **extra,
    }


def report(name, rows, figures):
    return {
        "suite": name,
        "title": f"Suite {name}",
        "vqbench": "0.2.0",
        "date": "2026-12-06",
        "settings": ["- Data: `photos`, 32x32", "- Seeds: [0, 1, 2]"],
        "rows": rows,
        "baseline": None,
        "test": "two-SE rule",
        "ranking": [],
        "notes": ["A note with `code` and **bold** <b>not markup</b>."],
        "figures": figures,
    }


def write_results(folder: Path) -> Path:
    """Two suites: `alpha` (PSNR out of order, a paper value, a strip-sized figure) and `beta`
    (a row with alpha's configuration, one with another settings fingerprint)."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name, shape in [("alpha-usage.png", (40, 60, 3)), ("alpha-strip.png", (64, 256, 3))]:
        plt.imsave(folder / name, rng.random(shape))
    alpha = [
        row("A", {"codebook_size": 1024, "dim": 32}, 18.0, paper={"psnr": 20.5, "usage": 99.0}),
        row("B", {"codebook_size": 4096, "dim": 32}, 16.0),
        row("C", {"codebook_size": 4096, "dim": 8}, 17.0),
    ]
    beta = [
        row("A again", {"codebook_size": 1024, "dim": 32}, 15.0),
        row("A elsewhere", {"codebook_size": 1024, "dim": 32}, 14.0, fingerprint="bbbb"),
    ]
    files = {
        "alpha": report("alpha", alpha, ["alpha-usage.png", "alpha-strip.png"]),
        "beta": report("beta", beta, []),
    }
    for name, data in files.items():
        (folder / f"{name}.json").write_text(json.dumps(data))
    return folder


@pytest.fixture
def results(tmp_path) -> Path:
    return write_results(tmp_path / "results")


# ---- cells and links --------------------------------------------------------------------------
def test_metric_cells_are_mean_and_spread_sorted_by_the_mean():
    usage = metric_cell(summary(0.5, 0.1, 3), "usage")
    assert (usage.text, usage.sort) == ("50.0 ± 10.0", 50.0)  # usage in percent
    one_seed = metric_cell(summary(16.6935, 0.0, 1), "psnr_batch")
    assert (one_seed.text, one_seed.sort) == ("16.69", 16.6935)  # no spread from one seed
    missing = metric_cell({"mean": None, "n": 0, "unavailable": "n/a (weights)"}, "rfid")
    assert (missing.text, missing.sort, missing.title) == ("n/a", None, "n/a (weights)")
    assert (paper_cell({"usage": 99.0}, "usage").text, paper_cell(None, "rfid").text) == (
        "99.0",
        "–",
    )


def test_rows_differing_in_one_parameter_are_linked(results):
    """Hand-worked: A-B differ in codebook_size, B-C in dim, A-C in both (no link); beta's 'A
    again' is A's configuration, 'A elsewhere' has other settings (no link)."""
    links = row_links(read_reports(results))
    named = {key: sorted((link.suite, link.label, link.why) for link in found)
             for key, found in links.items()}  # fmt: skip
    assert named[("alpha", 0)] == [
        ("alpha", "B", "codebook_size: 1024 → 4096"),
        ("beta", "A again", "same configuration"),
    ]
    assert named[("alpha", 1)] == [
        ("alpha", "A", "codebook_size: 4096 → 1024"),
        ("alpha", "C", "dim: 32 → 8"),
    ]
    assert named[("alpha", 2)] == [("alpha", "B", "dim: 8 → 32")]
    assert named[("beta", 0)] == [("alpha", "A", "same configuration")]
    assert named[("beta", 1)] == []


def test_pages_hold_tables_paper_values_figures_and_notes(results):
    pages = render_site(read_reports(results))
    assert sorted(pages) == ["alpha.html", "beta.html", "index.html"]
    alpha = pages["alpha.html"]
    assert "16.00 ± 0.25" in alpha and 'data-sort="16.0"' in alpha
    assert ">PSNR (paper)</th>" in alpha and ">20.5</td>" in alpha  # beside ours
    assert ">Codebook Usage (paper)</th>" in alpha and ">99.0</td>" in alpha
    assert "(paper)</th>" not in pages["beta.html"]  # no paper values: no paper column
    assert 'title="n/a (no Inception weights)"' in alpha
    assert '<img src="img/alpha-strip.png"' in alpha and 'href="beta.html#r0"' in alpha
    assert "<code>code</code> and <strong>bold</strong> &lt;b&gt;not markup&lt;/b&gt;" in alpha
    assert "<code>photos</code>" in alpha
    assert 'href="alpha.html"' in pages["index.html"] and 'href="beta.html"' in pages["index.html"]


def test_pages_say_their_protocol(results):
    """A report's protocol lines are on its page; the index names each suite's protocols, and
    a report written before protocols existed is `vqbench v1`, as its eval.json files are."""
    reports = read_reports(results)
    line = "Protocol: simvq128 v1: the 50,000 validation images at 128px. rFID against them."
    reports[0]["protocols"] = [line]
    reports[1].pop("protocols", None)
    pages = render_site(reports)
    assert '<p class="protocol">Protocol: simvq128 v1: the 50,000 validation' in pages["alpha.html"]
    assert 'class="protocol"' not in pages["beta.html"]
    index = pages["index.html"]
    assert "<td>simvq128 v1</td>" in index and "<td>vqbench v1</td>" in index


def test_pages_fetch_nothing_from_a_network(results):
    for name, text in render_site(read_reports(results)).items():
        external = re.findall(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//|@import|url\(""", text)
        assert not external, f"{name} loads {external}"


# ---- writing, bad input -----------------------------------------------------------------------
def test_the_site_is_deterministic_and_replaces_an_earlier_one(results, tmp_path):
    first, second = write_site(results, tmp_path / "one"), write_site(results, tmp_path / "two")
    assert tree(first) == tree(second)
    assert sorted(tree(first)) == [
        "alpha.html", "beta.html", "img/alpha-strip.png", "img/alpha-usage.png", "index.html",
        "site.css", "sort.js",
    ]  # fmt: skip
    (results / "alpha-strip.png").unlink()
    data = json.loads((results / "alpha.json").read_text())
    data["figures"] = ["alpha-usage.png"]
    (results / "alpha.json").write_text(json.dumps(data))
    write_site(results, first)
    assert "img/alpha-strip.png" not in tree(first)  # replaced whole, nothing stale kept
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one", "results", "two"]


def tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def edit(path: Path, **changes) -> None:
    path.write_text(json.dumps(json.loads(path.read_text()) | changes))


def edit_first_row(path: Path, usage) -> None:
    data = json.loads(path.read_text())
    data["rows"][0]["metrics"]["usage"]["mean"] = usage
    path.write_text(json.dumps(data))


def run_cli(capsys, *args: str) -> tuple[int, str]:
    code = main(["site", *map(str, args)])
    return code, capsys.readouterr().err


@pytest.mark.parametrize(
    "damage, expected",
    [
        (lambda r: shutil.rmtree(r), "does not exist"),
        (lambda r: (r / "alpha.json").write_text('{"suite": "alpha", "rows": ['), "not valid JSON"),
        (lambda r: (r / "alpha.json").write_text('{"suite": "alpha"}'), "not a suite report"),
        (lambda r: (r / "alpha-strip.png").unlink(), "names figure 'alpha-strip.png'"),
        (lambda r: (r / "beta.json").rename(r / "gamma.json"), "holds suite 'beta'"),
        (lambda r: edit(r / "alpha.json", rows=[{"label": 1}]), "rows.0.label=1 is invalid"),
        (lambda r: edit(r / "beta.json", figures=["../x.png"]), "figures.0='../x.png'"),
        (lambda r: edit_first_row(r / "alpha.json", "high"), "metrics.usage.mean='high'"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_leaves_the_site_as_it_was(
    results, tmp_path, capsys, damage, expected
):
    out = tmp_path / "site"
    assert run_cli(capsys, results, "--out", out)[0] == 0
    before = tree(out)
    damage(results)
    code, err = run_cli(capsys, results, "--out", out)
    assert code == 2 and expected in err and err.count("\n") == 1, err
    assert tree(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [*(["results"] * results.exists()), "site"]


def test_a_folder_the_site_did_not_write_is_never_replaced(results, tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "thesis.tex").write_text("keep me")
    code, err = run_cli(capsys, results, "--out", out)
    assert code == 2 and "no `vqbench site` wrote" in err and err.count("\n") == 1
    assert [p.name for p in out.iterdir()] == ["thesis.tex"]


def test_committed_site_is_up_to_date_with_results(tmp_path):
    """`site/` is what `vqbench site results/ --out site/` writes now; regenerate it after
    changing results/ or the generator."""
    fresh = tree(write_site(ROOT / "results", tmp_path / "site"))
    committed = tree(ROOT / "site")
    assert sorted(committed) == sorted(fresh), "run `vqbench site results/ --out site/`"
    stale = [name for name in sorted(fresh) if committed[name] != fresh[name]]
    assert not stale, f"site/ is stale ({stale[:3]}); run `vqbench site results/ --out site/`"


# ---- a real browser ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def browser():
    webdriver = pytest.importorskip(
        "selenium.webdriver", reason="selenium is not installed (pip install -e '.[dev]')"
    )
    from selenium.webdriver.chrome.service import Service

    if not (CHROMIUM.is_file() and CHROMEDRIVER.is_file()):
        pytest.skip(
            f"no browser: {CHROMIUM} or {CHROMEDRIVER} is missing "
            f"(apt-get install chromium chromium-driver)"
        )
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1280,900"):  # fmt: skip
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def open_page(driver, path: Path) -> None:
    """Load `path` from a file:// URL and wait until every image has decoded (or failed)."""
    driver.get(path.resolve().as_uri())
    driver.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "Promise.all([...document.images].map(i => i.decode().catch(() => null)))"
        ".then(() => done());"
    )


def column(driver, table_id: str, title: str) -> list[float]:
    """The data-sort values of a column, in the table's current row order."""
    return driver.execute_script(
        "const t = document.getElementById(arguments[0]);"
        "const i = [...t.tHead.rows[0].cells]"
        "  .findIndex(c => c.textContent.trim() === arguments[1]);"
        "return [...t.tBodies[0].rows].map(r => parseFloat(r.cells[i].dataset.sort));",
        table_id,
        title,
    )


def header(driver, table_id: str, title: str):
    from selenium.webdriver.common.by import By

    cells = driver.find_elements(By.CSS_SELECTOR, f"#{table_id} thead th")
    return next(c for c in cells if c.text.strip().rstrip(" ▲▼") == title)


def test_the_site_works_in_a_real_browser(browser, results, tmp_path):
    from PIL import Image
    from selenium.webdriver.common.by import By

    site = write_site(results, tmp_path / "site")
    open_page(browser, site / "index.html")
    assert column(browser, "suites", "Rows") == [3, 2]
    header(browser, "suites", "Rows").click()
    assert column(browser, "suites", "Rows") == [2, 3]

    open_page(browser, site / "alpha.html")
    assert column(browser, "block-0", "PSNR") == [18.0, 16.0, 17.0]
    header(browser, "block-0", "PSNR").click()
    assert column(browser, "block-0", "PSNR") == [16.0, 17.0, 18.0]
    header(browser, "block-0", "PSNR").click()
    assert column(browser, "block-0", "PSNR") == [18.0, 17.0, 16.0]

    images = browser.execute_script(
        "return [...document.images].map(i => [i.getAttribute('src'), i.naturalWidth]);"
    )
    assert len(images) == 4 and all(width > 0 for _, width in images), images  # 2 + enlarged
    zoomed = browser.find_element(By.ID, "fig-2")
    assert not zoomed.is_displayed()
    browser.find_element(By.CSS_SELECTOR, 'a[href="#fig-2"]').click()
    assert zoomed.is_displayed()  # click to enlarge

    shot = Image.open(io.BytesIO(browser.get_screenshot_as_png())).convert("RGB")
    colours = shot.getcolors(maxcolors=1 << 16)
    assert colours is None or len(colours) > 1, "the screenshot is blank"
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert not errors, errors
