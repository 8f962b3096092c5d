"""report.html: the self-contained results page, checked as text and in a real headless browser (Debian's
chromium driven by selenium through the Debian chromedriver; no browser download).

The browser test loads a study's page from small, valid results.json files and checks what a reader relies on:
no console error, no network request, one table row per row of results and one number per results file, sorting
by a click, a run's details opened from its cell; it saves a screenshot (``RS_TRANSFER_SCREENSHOT_DIR`` keeps a
copy).
"""
from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import pytest

from rs_transfer.atomic import write_json_atomic
from rs_transfer.studies.html import render
from rs_transfer.studies.htmlpage import rows_page, table4_page, write_table4_html
from rs_transfer.studies.report import build_report

VALUES = {("cifar100", "resnet152.tv_in1k"): [71.5, 70.1], ("cifar100", None): [41.2, 43.0],
          ("pets", "resnet152.tv_in1k"): [80.3], ("pets", None): [22.4], ("pets", "simclr.pth"): [55.0, 57.5, 56.0]}


def fake_results(task: str, weights: str | None, seed: int, value: float, **extra: Any) -> dict[str, Any]:
    """A results.json as the runner writes it (the keys reports and the page read)."""
    return {"schema": 1, "task": task, "task_title": task, "metric": "top1", "value": value,
            "higher_is_better": True, "backbone": "resnet152", "backbone_kwargs": {"depth": 152}, "protocol": "finetune",
            "preset": "paper", "seed": seed, "metrics": {"top1": value, "top5": min(100.0, value + 20)},
            "weights": {"source": weights, "path": None, "sha256": "ab" * 32 if weights else None,
                        "named": bool(weights), "layout": "torchvision" if weights else None,
                        "normalization": {"name": "imagenet", "mean": [123.675, 116.28, 103.53],
                                          "std": [58.395, 57.12, 57.375], "how": "declared"}},
            "config": {"train_cfg": {"max_iters": 30}, "randomness": {"seed": seed}}, "config_hash": "c" * 64,
            "git": {"commit": "f" * 40, "dirty": False}, "device": "cpu (2 cores)", "world_size": 1,
            "launcher": "none", "global_batch_size": 16, "per_process_batch_size": 16, "accumulation": 1,
            "lr": 0.003, "train_time_s": 12.5, "eval_time_s": 1.5, "wall_time_s": 20.0,
            "skipped_files": {"train": 1 if seed == 1 else 0, "eval": 0, "examples": []}, **extra}


@pytest.fixture()
def study(tmp_path: Path) -> Path:
    root = tmp_path / "study"
    for (task, w), values in VALUES.items():
        for seed, v in enumerate(values):
            wd = root / task / f"resnet152-{Path(w or 'scratch').stem}-finetune-seed{seed}"
            write_json_atomic(wd / "results.json", fake_results(task, w, seed, v))
            (wd / "20261204_000000" / "vis_data").mkdir(parents=True)
            (wd / "20261204_000000" / "20261204_000000.log").write_text("log\n")
    return root


def test_page_is_self_contained_and_links_every_cell_to_its_run(study: Path) -> None:
    rep = build_report([study], tasks=["cifar100", "pets"])
    text = render(table4_page(rep, study, [study]))
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", text), "the page must not reference the network"
    assert "<script src" not in text and "<link" not in text
    anchors = set(re.findall(r'<details class="run" id="([^"]+)"', text))
    assert len(anchors) == sum(map(len, VALUES.values()))           # one details block per results file
    linked = set(re.findall(r'<a href="#([^"]+)"', text))
    assert linked == anchors                                       # every run reachable, no dangling link
    run = re.search(r'<details class="run" id="run-pets-resnet152-simclr-finetune-seed1">.*?</details></details>',
                    text, re.S).group(0)
    for fact in ("global batch", "16 = 16 per process", "train / eval time", "12.5 s", "skipped files",
                 "train 1, eval 0", "normalisation", "imagenet", "weights sha256", "resolved config", "TensorBoard",
                 "20261204_000000/vis_data", "code commit"):
        assert fact in run, fact
    assert "<svg" in text and text.count("<figure>") == 3          # report.png's chart + one per task


def test_flags_for_mini_stale_and_other_commit_runs(study: Path) -> None:
    mini = study / "cifar100" / "resnet152-scratch-finetune-seed0" / "results.json"
    write_json_atomic(mini, {**json.loads(mini.read_text()), "preset": "mini"})
    stale = study / "pets" / "resnet152-scratch-finetune-seed0"
    write_json_atomic(study / "study.json", {"cells": [{"work_dir": str(stale), "stale": True}]})
    rep = build_report([study], tasks=["cifar100", "pets"])
    page = table4_page(rep, study, [study])
    warnings = " ".join(page.warnings)
    assert "1 run(s) used the mini preset" in warnings and "1 run(s) are stale" in warnings
    assert f"{sum(map(len, VALUES.values()))} run(s) were computed by another commit" in warnings  # fake commit
    flags = {r.anchor: r.flags for r in page.runs}
    assert flags["run-pets-resnet152-scratch-finetune-seed0"] == ["stale", "other-commit"]
    assert flags["run-cifar100-resnet152-scratch-finetune-seed0"] == ["mini", "other-commit"]
    label_cells = [row[0] for t in page.tables[:1] for row in t.rows]
    assert any(c.text.endswith("[mini]") and c.flags == ["mini"] for c in label_cells)


def test_confidence_intervals_are_shown_when_the_report_has_them(study: Path) -> None:
    rep = build_report([study], tasks=["cifar100"])
    data = rep.to_dict()
    data["baseline"] = "resnet152 / resnet152.tv_in1k"
    data["rows"]["resnet152 / resnet152.tv_in1k"]["cifar100"].update(low=69.0, high=72.6, interval_method="seeds")
    data["rows"]["resnet152 / scratch"]["cifar100"].update(diff=-28.7, diff_low=-31.0, diff_high=-26.5,
                                                          p_value=0.01, p_adjusted=0.02, significant=True)
    rep.to_dict = lambda: data                                    # a report that carries intervals (h-intervals)
    page = table4_page(rep, study, [study])
    texts = [c.text for row in page.tables[0].rows for c in row]
    assert "70.80 ± 0.99 [69.00, 72.60] (n=2)" in texts
    assert "42.10 ± 1.27 (n=2)" in texts                          # no interval: mean ± std as before
    assert "-28.70 [-31.00, -26.50] p=0.02 *" in [c.text for row in page.tables[1].rows for c in row]
    assert "95% confidence interval" in page.figures[1][1]        # the task plot's whiskers say which
    row = {"id": "r", "top1": 80.0, "top1_low": 79.0, "top1_high": 81.5, "delta": 1.0, "delta_low": 0.2,
           "delta_high": 1.8, "delta_p": 0.03, "work_dir": None}    # a row study's row with intervals
    cells = rows_page({"study": "table1", "rows": [row]}, ["id", "top1", "delta"], study).tables[0].rows[0]
    assert [c.text for c in cells] == ["r", "80 [79, 81.5]", "+1.00 [+0.20, +1.80] p=0.03"]


def test_scaling_page_has_hover_labels_and_pareto_front(tmp_path: Path) -> None:
    rows = [dict(id=f"d{d}-w1-r32-e1", depth=d, width=1.0, resolution=32, epochs=1, top1=t, gflops=g,
                 train_time_s=s, infer_ms_per_image=1.0 + d / 100, work_dir=str(tmp_path / "none"))
            for d, t, g, s in ((26, 50.0, 0.1, 3.0), (50, 55.0, 0.2, None), (101, 54.0, 0.4, 9.0))]
    page = rows_page({"study": "scaling", "preset": "mini", "rows": rows}, ["id", "depth", "top1", "gflops"],
                     tmp_path)
    assert len(page.figures) == 3
    flops_svg = page.figures[0][1]
    assert "<title>d50-w1-r32-e1: depth 50, width 1, 32 px, 1 ep; top-1 55.00; GFLOPs 0.2</title>" in flops_svg
    assert "d50-w1-r32-e1" in page.figures[1][0]                  # no training time: left out, and said so
    assert [c.sort for c in page.tables[0].rows[1]] == ["d50-w1-r32-e1", 50, 55.0, 0.2]
    from rs_transfer.studies.htmlplots import pareto_front

    assert pareto_front([(0.1, 50), (0.2, 55), (0.4, 54), (0.3, 60)]) == [(0.1, 50), (0.2, 55), (0.3, 60)]


# ---- in a real browser ---------------------------------------------------------------------------------------
def _chromium() -> tuple[str, str]:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    why = os.environ.get("RS_TRANSFER_NO_BROWSER")   # .ci/run: why chromium could not be installed
    if not (browser and driver):
        if os.environ.get("RS_TRANSFER_REQUIRE_BROWSER") == "1":
            pytest.fail("chromium/chromedriver missing although .ci/run installed them")
        pytest.skip(why or "no chromium + chromedriver (Debian: apt-get install chromium chromium-driver; .ci/run "
                           "installs them)")
    if importlib.util.find_spec("selenium") is None:
        if os.environ.get("RS_TRANSFER_REQUIRE_BROWSER") == "1":
            pytest.fail("selenium is missing although it is pinned in requirements/lock.txt (rebuild the env)")
        pytest.skip("selenium is not installed (pinned in requirements/lock.txt: pip install -r it)")
    return browser, driver


@pytest.fixture()
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    binary, driver = _chromium()
    opts = webdriver.ChromeOptions()
    opts.binary_location = binary
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1280,1100", "--no-first-run", "--disable-background-networking"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    d = webdriver.Chrome(service=Service(driver), options=opts)
    yield d
    d.quit()


def test_page_in_a_headless_browser(study: Path, browser, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    page = write_table4_html(build_report([study], tasks=["cifar100", "pets"], baseline="resnet152.tv_in1k"), study,
                             dirs=[study])
    url = page.resolve().as_uri()
    browser.get(url)
    errors = [m for m in browser.get_log("browser") if m["level"] in ("SEVERE", "ERROR")]
    assert not errors, errors
    requests = [json.loads(m["message"])["message"] for m in browser.get_log("performance")]
    urls = {r["params"]["request"]["url"] for r in requests if r["method"] == "Network.requestWillBeSent"}
    assert urls == {url}, f"the page made requests beyond itself: {urls - {url}}"

    table = browser.find_element(By.ID, "table-0")
    labels = [r.find_elements(By.TAG_NAME, "td")[0].text for r in table.find_elements(By.CSS_SELECTOR, "tbody tr")]
    expected = {f"resnet152 / {Path(w).stem if w and w.endswith('.pth') else w or 'scratch'}" for _, w in VALUES}
    assert sorted(labels) == sorted(expected)                      # one row per row of results files
    for (task, w), values in VALUES.items():                       # each cell = its files' mean, linked to each
        label = f"resnet152 / {Path(w).stem if w and w.endswith('.pth') else w or 'scratch'}"
        row = table.find_element(By.XPATH, f".//tbody/tr[td[1][normalize-space()='{label}']]")
        cell = row.find_elements(By.TAG_NAME, "td")[1 + ["cifar100", "pets"].index(task)]
        assert cell.text.startswith(f"{sum(values) / len(values):.2f}"), (label, task, cell.text)
        assert len(cell.find_elements(By.TAG_NAME, "a")) == (1 if len(values) == 1 else 1 + len(values))

    def column(i: int) -> list[str]:
        return [r.find_elements(By.TAG_NAME, "td")[i].get_attribute("data-sort")
                for r in table.find_elements(By.CSS_SELECTOR, "tbody tr")]

    pets = table.find_elements(By.TAG_NAME, "th")[2]
    pets.click()
    assert [float(v) for v in column(2)] == sorted(float(v) for v in column(2))
    pets.click()
    assert [float(v) for v in column(2)] == sorted((float(v) for v in column(2)), reverse=True)
    assert pets.get_attribute("aria-sort") == "descending"
    table.find_elements(By.TAG_NAME, "th")[0].click()
    assert column(0) == sorted(column(0))

    link = table.find_element(By.XPATH, ".//tbody/tr[td[1][normalize-space()='resnet152 / simclr']]/td[3]/a")
    target = browser.find_element(By.ID, link.get_attribute("href").split("#", 1)[1])
    assert target.get_attribute("open") is None
    link.click()
    assert target.get_attribute("open") == "true"                 # the run's details open from its cell
    browser.execute_script("window.scrollTo(0, 0)")
    shot = tmp_path / "report.png"
    assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 20_000
    if os.environ.get("RS_TRANSFER_SCREENSHOT_DIR"):
        shutil.copy(shot, Path(os.environ["RS_TRANSFER_SCREENSHOT_DIR"]) / "report-html.png")
