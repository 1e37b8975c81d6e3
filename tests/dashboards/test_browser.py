"""The dashboards in a real browser: the app served by uvicorn on a free loopback port (SQLite file filled through
the repo), driven with Playwright in Debian's Chromium (``/usr/bin/chromium``; never ``playwright install``).

Without Chromium these tests are skipped with the reason, except under CI (``CI=true``), where they fail.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
import uvicorn
from fastapi import FastAPI
from sqlalchemy.orm import Session

from api.docs_ui import SWAGGER_CSS, SWAGGER_JS
from nero_study.store import repo

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
Outcomes = tuple[tuple[str, str, float, int, str, float | None], ...]


def _unavailable(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (browser tests must run under CI)")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        _unavailable(f"Chromium is not installed at {CHROMIUM} (Debian: apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as exc:  # pragma: no cover - playwright is a test dependency
        _unavailable(f"Playwright's Python package is not installed: {exc}")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def live_server(app: FastAPI) -> Iterator[str]:
    """The app served by a real uvicorn in a background thread on a free loopback port; yields its base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 120  # a failsafe, not a trigger: the loop ends when uvicorn says it started
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(15)
    sock.close()


class Watched:
    """A page with its console errors, uncaught exceptions and requests to anywhere but the app recorded."""

    def __init__(self, page: Any, base: str) -> None:
        self.page = page
        self.errors: list[str] = []
        self.external: list[str] = []
        self.requests: list[str] = []
        host = urlparse(base).netloc
        page.on("console", lambda message: message.type == "error" and self.errors.append(message.text))
        page.on("pageerror", lambda error: self.errors.append(f"uncaught: {error}"))

        def on_request(request: Any) -> None:
            self.requests.append(request.url)
            if not request.url.startswith("data:") and urlparse(request.url).netloc != host:
                self.external.append(request.url)

        page.on("request", on_request)


@pytest.fixture
def watched(browser: Any, live_server: str) -> Iterator[Watched]:
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    page.set_default_timeout(30_000)
    yield Watched(page, live_server)
    context.close()


def wait_for_plots(page: Any, count: int) -> None:
    """Wait until ``count`` Plotly figures are drawn on the page."""
    page.wait_for_function(f"document.querySelectorAll('.js-plotly-plot').length >= {count}")


def test_every_page_loads_without_console_errors(
    watched: Watched,
    live_server: str,
    make_sweep: Callable[..., str],
    session: Session,
    known_outcomes: Outcomes,
) -> None:
    done = make_sweep("finished")
    running = make_sweep("running", known_outcomes[:4], status="running", pending=[("digits-mlp", "nero", 0.1, 0)])
    trial = repo.list_trials(session, sweep_id=done, status="diverged")[0][0]
    page = watched.page
    visits = [
        ("/", 0, "Sweeps"),
        (f"/sweeps/{done}", 7, "finished"),
        (f"/sweeps/{running}", 7, "running"),
        (f"/trials/{trial.id}", 1, f"Trial {trial.id}"),
        (f"/compare?sweeps={done},{running}", 2, "Comparing 2 sweeps"),
    ]
    for path, plots, heading in visits:
        response = page.goto(live_server + path)
        assert response is not None and response.status == 200, path
        assert heading in page.locator("h1").first.inner_text()
        wait_for_plots(page, plots)
    response = page.goto(live_server + "/sweeps/unknown")
    assert response is not None and response.status == 404
    assert "There is no sweep" in page.content()
    # The 404 itself is logged by the browser ("Failed to load resource"); anything else is an error.
    errors = [e for e in watched.errors if "404" not in e]
    assert errors == []
    assert watched.external == []  # plotly.js and everything else from the app itself: works offline
    assert any(url.endswith("/static/plotly.min.js") for url in watched.requests)


def test_sweep_page_one_panel_per_task_one_group_per_optimiser(
    watched: Watched, live_server: str, make_sweep: Callable[..., str]
) -> None:
    sweep_id = make_sweep("panels")
    page = watched.page
    page.goto(f"{live_server}/sweeps/{sweep_id}")
    wait_for_plots(page, 7)
    rendered = page.evaluate(
        """() => {
            const plot = document.getElementById('figure-lr-sensitivity');
            return {
                groups: plot.data.map(t => t.legendgroup),
                axes: Object.keys(plot.layout).filter(k => /^xaxis\\d*$/.test(k)).map(k => plot.layout[k].type),
                titles: plot.layout.annotations.map(a => a.text),
                panels: plot.querySelectorAll('.cartesianlayer .subplot').length,
                legend: Array.from(plot.querySelectorAll('.legend .traces .legendtext')).map(t => t.textContent),
                stars: plot.data.filter(t => t.marker && t.marker.symbol === 'star' && t.x[0] !== null).length,
            };
        }"""
    )
    assert rendered["titles"] == ["digits-mlp", "ppo-cartpole"]
    assert rendered["panels"] == 2
    assert rendered["axes"] == ["log", "log"]
    assert set(rendered["groups"]) - {"marks"} == {"nero", "adam"}
    assert [name for name in rendered["legend"] if name in ("nero", "adam")] == ["nero", "adam"]
    assert rendered["stars"] == 4  # a best-lr star per optimiser per task
    assert watched.errors == []


def test_running_sweep_page_updates_itself(
    watched: Watched,
    live_server: str,
    make_sweep: Callable[..., str],
    session: Session,
    known_outcomes: Outcomes,
) -> None:
    sweep_id = make_sweep("live", known_outcomes[:4], status="running", pending=[("digits-mlp", "nero", 0.1, 0)])
    page = watched.page
    page.goto(f"{live_server}/sweeps/{sweep_id}?refresh=0.5")
    wait_for_plots(page, 7)
    page.evaluate("() => { window.__sameDocument = true; }")
    succeeded = page.locator("#sweep-summary .count-succeeded b")
    assert succeeded.inner_text() == "4"
    nero_points = """() => document.getElementById('figure-lr-sensitivity').data
        .find(t => t.legendgroup === 'nero' && t.mode === 'lines+markers').x.length"""
    assert page.evaluate(nero_points) == 2

    # While nothing changes, a poll sends the page's validator and gets an empty 304.
    with page.expect_response(lambda response: "/figures.json" in response.url) as polled:
        pass
    assert polled.value.status == 304
    assert polled.value.request.headers.get("if-none-match", "").startswith(f'"{sweep_id}-v')

    # A new finished trial lands in the database: the page shows it by itself, without navigating.
    pending = repo.list_trials(session, sweep_id=sweep_id, status="pending")[0][0]
    repo.mark_trial_running(session, trial_id=pending.id, attempt=1)
    repo.finish_trial(
        session,
        trial_id=pending.id,
        status="succeeded",
        metric=0.8,
        initial_metric=0.9,
        metric_name="test_error",
        lower_is_better=True,
        attempt=1,
    )
    page.wait_for_function("() => document.querySelector('#sweep-summary .count-succeeded b').textContent === '5'")
    page.wait_for_function(f"() => ({nero_points})() === 3")
    assert page.evaluate("() => window.__sameDocument") is True

    # The sweep finishes: the page says so and stops polling.
    repo.finish_sweep(session, sweep_id=sweep_id, owner="tests", status="succeeded")
    page.wait_for_function("() => document.getElementById('live-state').dataset.state === 'stopped'")
    assert "status-succeeded" in page.locator("#sweep-summary .badge").first.get_attribute("class")
    assert page.evaluate("() => document.body.dataset.nextPoll") == "none"  # no further poll is scheduled
    assert page.evaluate("() => window.__sameDocument") is True
    assert watched.errors == []


def test_report_opens_offline(browser: Any, database_url: str, make_sweep: Callable[..., str], tmp_path: Path) -> None:
    from dashboards.report import write_html_report

    sweep_id = make_sweep("offline report")
    path = write_html_report(sweep_id=sweep_id, database_url=database_url, path=tmp_path / "report.html")
    context = browser.new_context()
    page = context.new_page()
    errors: list[str] = []
    requests: list[str] = []
    page.on("console", lambda message: message.type == "error" and errors.append(message.text))
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("request", lambda request: requests.append(request.url))
    page.goto(path.as_uri())
    wait_for_plots(page, 7)
    assert page.evaluate("() => document.getElementById('figure-lr-sensitivity').data.length") > 0
    context.close()
    assert errors == []
    assert [url for url in requests if not url.startswith(("file:", "data:"))] == []  # nothing from the network


def test_finished_sweep_page_shows_the_verdict_above_the_figures(
    watched: Watched, live_server: str, make_sweep: Callable[..., str]
) -> None:
    """The hand-made sweep of tests/study/test_study_verdict.py (nero and lamb win out of the box; adam needs
    10x its default lr; sgd's best lr is the top of its grid) as a reader sees it."""
    from tests.dashboards.test_pages import VERDICT_SPEC, verdict_outcomes

    sweep_id = make_sweep("verdict", verdict_outcomes(), spec=VERDICT_SPEC)
    page = watched.page
    page.goto(f"{live_server}/sweeps/{sweep_id}")
    wait_for_plots(page, 7)
    verdict = page.locator("#sweep-verdict")
    assert verdict.is_visible()
    assert verdict.locator(".verdict-winners").inner_text() == "nero, lamb"
    sentence = verdict.locator(".verdict-sentence").inner_text()
    assert "adam at its default lr (0.001) is behind (regret 0.25); it needs lr 0.01, 10x its default, to match" in (
        sentence
    )
    sgd = verdict.locator('tr[data-verdict-label="sgd"]')
    assert sgd.locator(".edge-flag").inner_text() == "best lr at the edge of the grid: widen the grid"
    assert sgd.locator(".edge-flag").is_visible()
    assert verdict.locator('tr[data-verdict-label="nero"] .verdict-status').inner_text() == "winner"
    verdict_box = verdict.bounding_box()
    figure_box = page.locator("#figure-lr-sensitivity").bounding_box()
    assert verdict_box is not None and figure_box is not None and verdict_box["y"] < figure_box["y"]
    assert watched.errors == [] and watched.external == []


def test_docs_refuses_a_swagger_ui_file_that_differs_from_the_pinned_one(watched: Watched, live_server: str) -> None:
    """The CDN (here: the browser's network, intercepted) serving other bytes than the pinned version: the browser
    refuses the file by its integrity hash, and none of it runs."""
    served: list[str] = []

    def tampered(route: Any) -> None:
        served.append(route.request.url)
        script = route.request.url.endswith(".js")
        route.fulfill(
            status=200,
            body="window.tampered = true;" if script else "body { display: none }",
            headers={"Access-Control-Allow-Origin": "*", "Content-Type": "text/javascript" if script else "text/css"},
        )

    watched.page.route("https://cdn.jsdelivr.net/**", tampered)
    response = watched.page.goto(live_server + "/docs")
    watched.page.wait_for_load_state("load")

    assert response is not None and response.status == 200
    assert sorted(served) == sorted([SWAGGER_JS[0], SWAGGER_CSS[0]])
    assert watched.page.evaluate("window.tampered === undefined && typeof SwaggerUIBundle === 'undefined'")
    integrity_errors = [e for e in watched.errors if "integrity" in e]
    assert len(integrity_errors) == 2, watched.errors  # the script and the stylesheet, each refused


def test_findings_page_with_two_sweeps_from_the_front_page(
    watched: Watched, live_server: str, make_sweep: Callable[..., str], tmp_path: Path
) -> None:
    """The hand-made sweeps of tests/study/test_study_findings.py as a reader sees them: the front page's
    headline and link, the task x optimiser table, and a filter. The screenshot goes to ``tmp_path`` (and to
    ``$NERO_STUDY_SCREENSHOTS/findings.png`` when that names a directory: how docs/findings.png was taken)."""
    from tests.dashboards.test_pages import verdict_outcomes
    from tests.study.test_study_findings import A_SPEC, LIBRARY_SPEC, library_outcomes

    a = make_sweep("verdict", verdict_outcomes(), spec=A_SPEC)
    b = make_sweep("library", library_outcomes(), spec=LIBRARY_SPEC)
    page = watched.page
    page.goto(f"{live_server}/")
    headline = "Nero out-of-the-box winner on 1 of 2 tasks across 2 finished sweeps (mixed on 1)."
    assert page.locator("#front-findings-headline").inner_text() == headline
    page.locator("#findings-link").click()
    page.wait_for_url(f"{live_server}/findings")
    assert page.locator("#findings-headline").inner_text() == headline
    table = page.locator("#findings-table")
    assert table.is_visible()
    overall = {
        (row.get_attribute("data-finding-task"), row.get_attribute("data-finding-label")): row.get_attribute(
            "data-overall"
        )
        for row in table.locator("tbody.finding").all()
    }
    assert overall == {
        ("digits-mlp", "nero"): "mixed",
        ("digits-mlp", "adam"): "mixed",
        ("digits-mlp", "sgd"): "behind",
        ("digits-mlp", "lamb"): "winner",
        ("ppo-cartpole", "nero"): "winner",
        ("ppo-cartpole", "adam"): "behind",
    }
    nero = table.locator('tbody[data-finding-task="digits-mlp"][data-finding-label="nero"]')
    assert nero.locator(".finding-overall").inner_text().startswith("mixed")
    assert nero.locator(f'tr[data-finding-sweep="{b}"] .verdict-status').inner_text() == "behind"
    assert nero.locator(f'tr[data-finding-sweep="{a}"] .verdict-status').inner_text() == "winner"
    assert nero.locator(f'tr[data-finding-sweep="{b}"] .finding-regret').inner_text() == "0.25"
    sgd = table.locator('tbody[data-finding-label="sgd"]')
    assert sgd.locator(".edge-flag").inner_text() == "(high edge)"
    assert sgd.locator(".finding-evidence").inner_text() == "best lr at the edge of the grid: widen the grid"
    assert page.locator("#findings-sweeps tr[data-sweep]").count() == 2
    screenshot = page.screenshot(path=str(tmp_path / "findings.png"), full_page=True)
    assert screenshot[:8] == b"\x89PNG\r\n\x1a\n"
    target = os.environ.get("NERO_STUDY_SCREENSHOTS")
    if target:
        (Path(target) / "findings.png").write_bytes(screenshot)
    # Follow a sweep's link, come back and filter by budget: only sweep A remains.
    nero.locator(f'tr[data-finding-sweep="{a}"] a.finding-sweep').click()
    page.wait_for_url(f"{live_server}/sweeps/{a}")
    page.go_back()
    page.locator('select[name="budget"]').select_option("smoke")
    page.locator("#findings-filter").click()
    page.wait_for_url(f"{live_server}/findings?budget=smoke&preset=&task=")
    assert page.locator("#findings-headline").inner_text() == (
        "Nero out-of-the-box winner on 1 of 1 task across 1 finished sweep."
    )
    assert page.locator("#findings-sweeps tr[data-sweep]").count() == 1
    assert page.locator(f'#findings-sweeps tr[data-sweep="{a}"]').is_visible()
    assert watched.errors == [] and watched.external == []
