"""Playbook semantics (paper App. D): ids, tags, render, concise methods and triggers,
persistence."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from resd.context import ConciseSchedule, Playbook
from resd.errors import UserError


def tagged(book: Playbook, content: str, *, helpful: int = 0, harmful: int = 0, created: int = 0,
           tagged_at: int | None = None, section: str = "rules") -> str:
    """Add an entry with given counts; tags land at `tagged_at` (default: creation step)."""
    entry_id = book.add(content, section=section, step=created)
    for _ in range(helpful):
        book.tag(entry_id, "helpful", tagged_at if tagged_at is not None else created)
    for _ in range(harmful):
        book.tag(entry_id, "harmful", tagged_at if tagged_at is not None else created)
    return entry_id


# ---- ids, tags, render ----------------------------------------------------------------------
def test_ids_are_section_slug_plus_global_counter_and_never_reused():
    book = Playbook()
    a = book.add("Declare every node you branch to.", section="rules")
    b = book.add("Skip symbols outside the pattern.", section="Common Mistakes")
    c = book.add("Plain lesson.")
    assert (a, b, c) == ("rule-00001", "cm-00002", "gene-00003")
    book.concise("reset", step=1)
    assert len(book) == 0
    assert book.add("After a reset ids keep counting.") == "gene-00004"


def test_tag_counts_and_last_tagged_step():
    book = Playbook()
    e = book.add("Lesson one.", step=2)
    book.tag(e, "helpful", 3)
    book.tag(e, "helpful", 5)
    book.tag(e, "harmful", 7)
    entry = book.get(e)
    assert (entry.helpful, entry.harmful, entry.created_step, entry.last_tagged_step) == (2, 1, 2, 7)
    assert entry.category == "helpful"
    book.tag(e, "neutral", 9)  # neutral: no count, no last-tagged update
    assert (entry.helpful, entry.harmful, entry.last_tagged_step) == (2, 1, 7)


def test_tag_rejects_unknown_tag_and_unknown_id():
    book = Playbook()
    e = book.add("Lesson.")
    with pytest.raises(ValueError, match="unknown tag"):
        book.tag(e, "great", 1)
    with pytest.raises(KeyError, match="no playbook entry"):
        book.tag("rule-99999", "helpful", 1)


def test_categories_follow_spec_net_harmful_rule():
    book = Playbook()
    unused = book.add("never tagged")
    tie = tagged(book, "tied counts", helpful=1, harmful=1)
    bad = tagged(book, "net harmful", helpful=1, harmful=2)
    good = tagged(book, "net helpful", helpful=2, harmful=1)
    cats = {e.id: e.category for e in book.entries()}
    assert cats == {unused: "unused", tie: "helpful", bad: "harmful", good: "helpful"}


def test_render_groups_by_section_one_line_per_entry_with_ids_and_counts():
    book = Playbook()
    a = tagged(book, "First rule.", helpful=2, section="rules")
    b = book.add("A mistake\nspread over   two lines.", section="mistakes")
    c = book.add("Second rule.", section="rules")
    text = book.render()
    assert text == (
        "## rules\n"
        f"[{a}] (helpful 2, harmful 0) First rule.\n"
        f"[{c}] (helpful 0, harmful 0) Second rule.\n"
        "\n## mistakes\n"
        f"[{b}] (helpful 0, harmful 0) A mistake spread over two lines."
    )
    assert Playbook().render() == ""


def test_add_rejects_empty_content():
    with pytest.raises(ValueError):
        Playbook().add("   \n ")


# ---- concise methods ------------------------------------------------------------------------
def constructed() -> tuple[Playbook, dict[str, str]]:
    """2 unused (old and recent), 1 harmful, 4 helpful tagged at different steps."""
    book = Playbook()
    ids = {
        "old_unused": book.add("old unused", step=3),
        "new_unused": book.add("new unused", step=9),
        "harmful": tagged(book, "harmful one", helpful=0, harmful=1, created=1, tagged_at=8),
        "h5": tagged(book, "helpful tagged at 5", helpful=1, created=1, tagged_at=5),
        "h8": tagged(book, "helpful tagged at 8", helpful=2, created=1, tagged_at=8),
        "h9": tagged(book, "helpful tagged at 9", helpful=1, created=2, tagged_at=9),
        "h2": tagged(book, "helpful tagged at 2", helpful=3, harmful=1, created=0, tagged_at=2),
    }
    return book, ids


def test_prioritized_without_budget_drops_unused_and_harmful_only():
    book, ids = constructed()
    removed = book.concise("prioritized", step=10, max_entries=None)
    assert set(removed) == {ids["old_unused"], ids["new_unused"], ids["harmful"]}
    assert set(book.ids()) == {ids["h5"], ids["h8"], ids["h9"], ids["h2"]}


def test_prioritized_budget_off_keeps_helpful_even_over_budget():
    book, ids = constructed()
    book.concise("prioritized", step=10, max_entries=2, enforce_budget=False)
    assert len(book) == 4


def test_prioritized_budget_on_drops_random_helpful_deterministically():
    kept = []
    for _ in range(2):
        book, ids = constructed()
        removed = book.concise("prioritized", step=10, max_entries=2, enforce_budget=True, seed=7)
        assert len(book) == 2
        assert {ids["old_unused"], ids["new_unused"], ids["harmful"]} <= set(removed)
        assert all(e.category == "helpful" for e in book.entries())
        kept.append(tuple(book.ids()))
    assert kept[0] == kept[1]  # same seed, same survivors
    survivors = set()
    for seed in range(20):
        book, _ = constructed()
        book.concise("prioritized", step=10, max_entries=2, seed=seed)
        survivors.add(tuple(book.ids()))
    assert len(survivors) > 1  # the drop really is random across seeds


def test_staleness_drops_harmful_and_stale_unused_but_spares_recent_unused():
    book, ids = constructed()
    removed = book.concise("staleness", step=10, max_entries=None)
    # old_unused: created at 3, 10-3 > 1 -> stale; new_unused: created at 9, one step old -> kept
    assert set(removed) == {ids["old_unused"], ids["harmful"]}
    assert ids["new_unused"] in book


def test_staleness_budget_evicts_oldest_last_tagged_first():
    book, ids = constructed()
    # kept after pruning: new_unused(created 9), h5, h8, h9, h2 -> budget 3 evicts h2 (2), h5 (5)
    removed = book.concise("staleness", step=10, max_entries=3, enforce_budget=True)
    assert set(removed) == {ids["old_unused"], ids["harmful"], ids["h2"], ids["h5"]}
    assert set(book.ids()) == {ids["new_unused"], ids["h8"], ids["h9"]}


def test_staleness_budget_off_does_not_evict():
    book, _ = constructed()
    book.concise("staleness", step=10, max_entries=1, enforce_budget=False)
    assert len(book) == 5


def test_reset_empties_and_unknown_method_is_a_user_error():
    book, _ = constructed()
    assert len(book.concise("reset", step=4)) == 7
    assert len(book) == 0
    with pytest.raises(UserError, match="unknown concise method"):
        book.concise("lru", step=1)


# ---- triggers -------------------------------------------------------------------------------
def test_frequency_trigger_fires_every_F_updates_without_budget():
    schedule = ConciseSchedule(method="prioritized", every=3, max_entries=None)
    book = Playbook()
    fired = []
    for step in range(1, 8):
        book.add(f"unused lesson number {step}", step=step)
        result = schedule.run([book], step=step)
        fired.append(result["frequency"])
        assert result["limit"] is False
        if result["frequency"]:
            assert len(book) == 0  # prioritized frequency prune: all unused entries go
    assert fired == [False, False, True, False, False, True, False]


def test_limit_trigger_enforces_budget_between_frequency_triggers():
    schedule = ConciseSchedule(method="staleness", every=100, max_entries=3)
    book = Playbook()
    for i in range(5):
        tagged(book, f"helpful lesson {i}", helpful=1, created=0, tagged_at=i)
    result = schedule.run([book], step=1)
    assert result == {"frequency": False, "limit": True, "removed": result["removed"]}
    assert len(book) == 3
    assert [e.content for e in book.entries()] == ["helpful lesson 2", "helpful lesson 3", "helpful lesson 4"]
    # within budget: the limit trigger stays quiet
    assert schedule.run([book], step=2)["limit"] is False


def test_frequency_and_limit_on_the_same_update_leave_playbook_within_budget():
    schedule = ConciseSchedule(method="prioritized", every=1, max_entries=2)
    book = Playbook()
    for i in range(4):
        tagged(book, f"helpful lesson {i}", helpful=1)
    book.add("unused lesson")
    result = schedule.run([book], step=5, seed=0)
    assert result["frequency"] and result["limit"]
    assert len(book) == 2


def test_enforce_limit_only_acts_over_budget_and_schedule_validates():
    schedule = ConciseSchedule(method="prioritized", every=4, max_entries=2)
    book = Playbook()
    book.add("unused a")
    book.add("unused b")
    assert schedule.enforce_limit([book], step=1) == []
    book.add("unused c")
    assert len(schedule.enforce_limit([book], step=1)) == 3
    with pytest.raises(UserError):
        ConciseSchedule(method="bogus")
    with pytest.raises(UserError):
        ConciseSchedule(max_entries=0)


# ---- persistence ----------------------------------------------------------------------------
def test_state_dict_round_trip_through_json_keeps_everything_and_the_counter():
    book, _ = constructed()
    book.concise("reset", step=1)
    tagged(book, "survivor", helpful=2, harmful=1, created=4, tagged_at=6, section="format")
    state = json.loads(json.dumps(book.state_dict()))
    again = Playbook.from_state_dict(state)
    assert again.render() == book.render()
    assert [vars(e) for e in again.entries()] == [vars(e) for e in book.entries()]
    assert again.add("next") == book.add("next")  # the global counter survives


def test_save_is_atomic_and_load_reports_bad_files(tmp_path):
    book, _ = constructed()
    path = tmp_path / "sub" / "playbook.json"
    book.save(path)
    assert [p.name for p in path.parent.iterdir()] == ["playbook.json"]  # no temp file left
    assert Playbook.load(path).render() == book.render()
    with pytest.raises(UserError, match="no such file"):
        Playbook.load(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(UserError, match="not valid JSON"):
        Playbook.load(tmp_path / "bad.json")
    (tmp_path / "wrong.json").write_text('{"entries": [{"section": "x"}]}')
    with pytest.raises(UserError, match="malformed playbook entry"):
        Playbook.load(tmp_path / "wrong.json")


operations = st.lists(
    st.one_of(
        st.tuples(st.just("add"), st.text(min_size=1, max_size=30).filter(str.strip),
                  st.sampled_from(["rules", "mistakes", "general"])),
        st.tuples(st.just("tag"), st.integers(0, 30), st.sampled_from(["helpful", "harmful", "neutral"])),
        st.tuples(st.just("concise"), st.sampled_from(["prioritized", "staleness", "reset"]),
                  st.one_of(st.none(), st.integers(0, 6)), st.booleans()),
    ),
    max_size=40,
)


@settings(max_examples=60, deadline=None)
@given(operations)
def test_random_operation_sequences_keep_invariants(ops):
    book = Playbook()
    seen_ids: set[str] = set()
    for step, op in enumerate(ops):
        if op[0] == "add":
            new_id = book.add(op[1], section=op[2], step=step)
            assert new_id not in seen_ids
            seen_ids.add(new_id)
        elif op[0] == "tag" and len(book):
            book.tag(book.ids()[op[1] % len(book)], op[2], step)
        elif op[0] == "concise":
            before = set(book.ids())
            removed = book.concise(op[1], step=step, max_entries=op[2], enforce_budget=op[3], seed=step)
            assert set(removed) | set(book.ids()) == before
            if op[2] is not None and op[3]:
                assert len(book) <= op[2]
            assert not any(e.category == "harmful" for e in book.entries())
    again = Playbook.from_state_dict(json.loads(json.dumps(book.state_dict())))
    assert again.render() == book.render()
    assert len(book.render().splitlines()) == len(book) + 2 * len(book.sections()) - (1 if len(book) else 0)
