"""The face gallery's search against a float64 reference, and its edits by ticket id."""

from __future__ import annotations

import numpy as np
import pytest

from edge.face.gallery import Gallery


def unitish(rng: np.random.Generator, n: int) -> np.ndarray:
    """Vectors like face encodings: 128 values, norm near 1 (with some spread)."""
    v = rng.normal(size=(n, 128))
    return (v / np.linalg.norm(v, axis=1, keepdims=True) * rng.uniform(0.8, 1.2, size=(n, 1))).astype(np.float32)


def reference(templates: np.ndarray, holders: list[str], probe: np.ndarray) -> tuple[int, float, float | None]:
    """Best index, its distance and the nearest other holder's distance, in float64 the slow way."""
    d = np.linalg.norm(templates.astype(np.float64) - probe.astype(np.float64), axis=1)
    best = int(np.argmin(d))
    others = [d[i] for i in range(len(d)) if holders[i] != holders[best]]
    return best, float(d[best]), (float(min(others)) if others else None)


@pytest.mark.parametrize(
    "n", [pytest.param(1, id="one"), pytest.param(37, id="one-block"), pytest.param(300, id="blocks")]
)
def test_search_finds_the_same_nearest_template_and_distances_as_float64(n: int) -> None:
    rng = np.random.default_rng(n)
    templates = unitish(rng, n)
    holders = [f"h{i}" for i in range(n)]
    gallery = Gallery(block=64)  # small blocks: the search crosses block boundaries
    gallery.load((str(1000 + i), holders[i], templates[i]) for i in range(n))
    for probe in [*unitish(rng, 20), templates[n // 2] + 0.01]:
        hit = gallery.search(probe)
        best, dist, second = reference(templates, holders, probe)
        assert hit is not None
        assert hit.ticket_id == str(1000 + best)
        assert hit.holder_id == holders[best]
        assert hit.distance == pytest.approx(dist, abs=1e-4)
        if second is None:
            assert hit.second is None
        else:
            assert hit.second == pytest.approx(second, abs=1e-4)


def test_second_best_is_another_holders_even_when_the_holder_has_two_passes() -> None:
    rng = np.random.default_rng(7)
    a, b = unitish(rng, 2)
    gallery = Gallery(block=4)
    gallery.put("1", "alice", a)
    gallery.put("2", "alice", a + 0.001)  # a second pass of the same person, nearly the same template
    gallery.put("3", "bob", b)
    hit = gallery.search(a)
    assert hit is not None
    assert (hit.holder_id, hit.second) == ("alice", pytest.approx(float(np.linalg.norm(a - b)), abs=1e-4))


def test_an_empty_gallery_finds_nothing_and_a_lone_holder_has_no_second() -> None:
    gallery = Gallery()
    assert gallery.search(np.zeros(128, np.float32)) is None
    gallery.put("1", "h", np.ones(128, np.float32))
    hit = gallery.search(np.ones(128, np.float32))
    assert hit is not None and hit.second is None and hit.distance == pytest.approx(0.0, abs=1e-3)


def test_remove_swaps_the_last_template_in_and_searches_stay_right() -> None:
    rng = np.random.default_rng(3)
    templates = unitish(rng, 10)
    gallery = Gallery(block=4)
    for i, t in enumerate(templates):
        gallery.put(f"t{i}", f"h{i}", t)
    assert gallery.remove("t2") and gallery.remove("t9") and gallery.remove("t0")
    assert not gallery.remove("t2")
    assert len(gallery) == 7
    assert "t2" not in gallery and "t5" in gallery
    kept = [i for i in range(10) if i not in (0, 2, 9)]
    for i in kept:
        hit = gallery.search(templates[i])
        assert hit is not None and hit.ticket_id == f"t{i}" and hit.distance == pytest.approx(0.0, abs=1e-3)
    for i in (0, 2, 9):
        hit = gallery.search(templates[i])
        assert hit is not None and hit.ticket_id != f"t{i}"


def test_put_replaces_a_passes_template_and_holder_without_growing() -> None:
    rng = np.random.default_rng(5)
    old, new = unitish(rng, 2)
    gallery = Gallery(block=4)
    gallery.put("1001", "h1", old)
    gallery.put("1001", "h1-renamed", new)  # a re-enrolled face
    assert len(gallery) == 1
    hit = gallery.search(new)
    assert hit is not None and (hit.ticket_id, hit.holder_id) == ("1001", "h1-renamed")
    kept = gallery.encoding("1001")
    assert kept is not None and np.array_equal(kept, new)


def test_ids_longer_than_any_before_are_kept_whole() -> None:
    gallery = Gallery(block=2)
    gallery.put("1", "h", np.zeros(128, np.float32))
    long_id = "season-2026-北山-" + "9" * 30
    gallery.put(long_id, "holder-with-a-long-name", np.ones(128, np.float32))
    hit = gallery.search(np.ones(128, np.float32))
    assert hit is not None and (hit.ticket_id, hit.holder_id) == (long_id, "holder-with-a-long-name")
    assert long_id in gallery and "1" in gallery


def test_clear_forgets_everything() -> None:
    gallery = Gallery(block=2)
    gallery.load((str(i), "h", np.ones(128, np.float32) * i) for i in range(5))
    gallery.clear()
    assert len(gallery) == 0 and gallery.search(np.ones(128, np.float32)) is None and gallery.nbytes == 0


def test_a_gallery_of_many_blocks_searched_on_threads_finds_what_one_thread_finds() -> None:
    rng = np.random.default_rng(11)
    templates = unitish(rng, 200)
    holders = [f"h{i % 50}" for i in range(200)]  # four passes per holder
    threaded, single = Gallery(block=16, threads=3), Gallery(block=16, threads=1)
    for g in (threaded, single):
        g.load((str(i), holders[i], templates[i]) for i in range(200))
    for probe in unitish(rng, 10):
        hit = threaded.search(probe)
        best, dist, second = reference(templates, holders, probe)
        assert hit == single.search(probe)
        assert hit is not None and hit.ticket_id == str(best)
        assert (hit.distance, hit.second) == (pytest.approx(dist, abs=1e-4), pytest.approx(second, abs=1e-4))


def test_templates_loaded_as_arrays_search_edit_and_grow_as_if_put_one_by_one() -> None:
    from edge.face.loader import open_chunks
    from models.face import seal, site_face_key, template_aad

    rng = np.random.default_rng(7)
    templates = unitish(rng, 150)
    key = site_face_key(bytes(32), "nanshan")
    ids = [(str(10 ** (i % 3) + i), f"holder-{i}") for i in range(150)]  # ids of several lengths
    rows = [
        (t, h, seal(key, templates[i].astype("<f4").tobytes(), template_aad("nanshan", t, h)))
        for i, (t, h) in enumerate(ids)
    ]
    rows.append(("999999", "mallory", "AAAA" * 10))  # does not open: left out, and said
    by_arrays, one_by_one = Gallery(block=64), Gallery(block=64)
    one_by_one.load((t, h, templates[i]) for i, (t, h, _) in enumerate(rows[:150]))
    chunks = list(open_chunks(rows, key, "nanshan", size=40))  # chunks cross the blocks' boundaries
    for chunk in chunks:
        by_arrays.load_arrays(chunk.keys, chunk.tickets, chunk.holders, chunk.matrix)
    assert [f for c in chunks for f in c.failed] == ["999999"]
    assert len(by_arrays) == 150
    for probe in [*unitish(rng, 10), templates[42]]:
        a, b = by_arrays.search(probe), one_by_one.search(probe)
        assert a is not None and b is not None and (a.ticket_id, a.holder_id) == (b.ticket_id, b.holder_id)
        assert (a.distance, a.second) == pytest.approx((b.distance, b.second), abs=1e-5)
    assert by_arrays.remove(rows[3][0]) and rows[3][0] not in by_arrays  # looked up by the loaded hashes
    by_arrays.put("a-much-longer-ticket-id-than-before", "h", templates[3])
    assert by_arrays.search(templates[3]).ticket_id == "a-much-longer-ticket-id-than-before"  # type: ignore[union-attr]
