"""The per-version cache of sweep answers and the validators (``api/cache.py``), without a database."""

from __future__ import annotations

from api.cache import Answer, SweepViewCache, etag, matches


def _answer(version: int, size: int = 10) -> Answer:
    return Answer(b"x" * size, "text/plain", etag("s", version, "page"), version)


def test_an_answer_is_built_once_per_version_and_never_served_for_a_newer_one() -> None:
    cache = SweepViewCache()
    built: list[int] = []

    def build(version: int) -> Answer:
        built.append(version)
        return _answer(version)

    assert cache.answer(("s", "page"), 3, lambda: build(3)).version == 3
    assert cache.answer(("s", "page"), 3, lambda: build(3)).version == 3
    assert cache.answer(("s", "page"), 2, lambda: build(2)).version == 3  # a newer answer serves an older read
    assert cache.answer(("s", "page"), 4, lambda: build(4)).version == 4  # never an older one for a newer read
    assert built == [3, 4]


def test_answers_are_bounded_by_bytes_least_recently_used_first() -> None:
    cache = SweepViewCache(max_answer_bytes=25)
    for name in ("a", "b"):
        cache.answer((name, "page"), 1, lambda: _answer(1))
    cache.answer(("a", "page"), 1, lambda: _answer(9))  # a is used again: b is now the oldest
    cache.answer(("c", "page"), 1, lambda: _answer(1))  # 30 bytes > 25: b goes
    assert cache.answer(("a", "page"), 1, lambda: _answer(7)).version == 1
    assert cache.answer(("b", "page"), 1, lambda: _answer(5)).version == 5  # rebuilt


def test_etags_differ_by_sweep_version_representation_and_parameters_and_match_weakly() -> None:
    tags = {
        etag("s", 1, "page", ("", 3.0)),
        etag("s", 2, "page", ("", 3.0)),
        etag("t", 1, "page", ("", 3.0)),
        etag("s", 1, "figures.json", ("",)),
        etag("s", 1, "page", ("/prefix", 3.0)),
        etag("s", 1, "page", ("", 1.0)),
    }
    assert len(tags) == 6
    tag = etag("s", 1, "page")
    assert tag.startswith('"') and tag.endswith('"')
    assert matches(tag, tag) and matches(f'"other", {tag}', tag) and matches(f"W/{tag}", tag) and matches("*", tag)
    assert not matches(None, tag) and not matches('"other"', tag) and not matches(etag("s", 2, "page"), tag)
    assert etag("s", 1, "report.html", weak=True).startswith('W/"')
