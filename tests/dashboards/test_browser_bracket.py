"""The ``bracket`` protocol's rounds on a sweep page in real Chromium (the fixtures of ``test_browser.py``): the
lrs each round added, visible, and a new round appearing on a live page by itself."""

from __future__ import annotations

import pytest
from sqlalchemy.orm import Session

from nero_study.store import repo
from tests.dashboards.test_bracket_page import BRACKET_ROUNDS, store_bracket_sweep, store_rounds
from tests.dashboards.test_browser import Watched, browser, live_server, wait_for_plots, watched  # noqa: F401

pytestmark = pytest.mark.browser


def round_texts(page) -> list[str]:
    return page.locator('#sweep-bracket tr[data-bracket-label="nero"] .bracket-round').all_inner_texts()


def test_the_rounds_of_a_bracket_sweep_show_and_a_new_round_appears_live(
    watched: Watched, live_server: str, session: Session  # noqa: F811
) -> None:
    sweep_id = store_bracket_sweep(session, status="running", rounds=BRACKET_ROUNDS[:4])
    page = watched.page
    page.goto(f"{live_server}/sweeps/{sweep_id}?refresh=0.5")
    wait_for_plots(page, 7)
    bracket = page.locator("#sweep-bracket")
    assert bracket.is_visible()
    assert round_texts(page) == ["0: 0.0001, 0.001, 0.01", "1: 0.1"]
    # Rounds 0-1 done, round 2 not yet stored: the bracket is still at work.
    assert bracket.locator(".bracket-state").inner_text() == "running"

    # The engine stores and finishes round 2: the page shows it without navigating, then the sweep ends.
    page.evaluate("() => { window.__sameDocument = true; }")
    store_rounds(session, sweep_id, BRACKET_ROUNDS[4:])
    page.wait_for_function(
        """() => Array.from(document.querySelectorAll('#sweep-bracket .bracket-round'))
            .map(e => e.textContent).includes('2: 0.00316228')"""
    )
    assert round_texts(page) == ["0: 0.0001, 0.001, 0.01", "1: 0.1", "2: 0.00316228"]
    repo.finish_sweep(session, sweep_id=sweep_id, owner="tests", status="succeeded")
    page.wait_for_function("() => document.getElementById('live-state').dataset.state === 'stopped'")
    state = bracket.locator(".bracket-state").inner_text()
    assert state == "resolved: best lr 0.01, its better neighbour 0.00316228 is 0.5 decades away (<= 0.5)"
    row = bracket.locator('tr[data-bracket-label="nero"]')
    assert row.get_attribute("data-rounds") == "3" and row.is_visible()
    assert page.evaluate("() => window.__sameDocument") is True
    assert watched.errors == []
