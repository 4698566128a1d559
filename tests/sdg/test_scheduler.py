"""The slot scheduler's decisions, driven by hand: no HTTP, no asyncio, a fake clock."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from unfork.sdg.scheduler import Part, Request, SlotScheduler


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def sent(parts: list[Part]) -> list[tuple[str, int, int]]:
    """Each part as (prompt, first choice, choices)."""
    return [(p.request.key, p.offset, p.size) for p in parts]


def test_a_request_for_more_choices_than_free_slots_goes_out_in_parts_on_the_slot_that_holds_its_prompt():
    slots = SlotScheduler(2)
    p = Request("P", 5)
    [first] = slots.submit(p)
    assert sent([first]) == [("P", 0, 2)] and slots.free == 0
    [second] = slots.release(first, 2, first=True)
    assert sent([second]) == [("P", 2, 2)]
    [third] = slots.release(second, 2, first=True)
    assert sent([third]) == [("P", 4, 1)] and slots.free == 1
    assert slots.release(third, 1, first=True) == []
    slots.finish(p)
    assert slots.free == 2 and not slots.held and not slots.started


def test_only_the_slot_of_a_parts_first_choice_goes_on_with_its_request():
    """llama.cpp clears the other choices' slots as they end: those go to the next request."""
    slots = SlotScheduler(2)
    [wide] = slots.submit(Request("P", 3))
    assert slots.submit(Request("Q", 1)) == [] and len(slots.queue) == 1
    assert sent(slots.release(wide, 1, first=False)) == [("Q", 0, 1)]  # a child slot ended
    assert sent(slots.release(wide, 1, first=True)) == [("P", 2, 1)]
    assert slots.release(wide, 1, first=True) == []  # nothing left of that part to give back


def test_a_queued_request_takes_the_slots_it_finds_and_with_none_queued_free_slots_take_its_other_choices():
    spares: list[float] = []
    clock = Clock()
    slots = SlotScheduler(4, clock=clock, on_spare=lambda: spares.append(clock()))
    [a] = slots.submit(Request("A", 3))
    [b] = slots.submit(Request("B", 4))
    assert sent([a, b]) == [("A", 0, 3), ("B", 0, 1)]
    assert spares == []  # a request was queued at each decision
    clock.now = 0.1
    assert sent(slots.release(a, 3, first=True)) == [("B", 1, 3)]
    assert spares == [0.1]
    assert slots.occupancy == [(0.0, 3), (0.0, 4), (0.1, 1), (0.1, 4)]


def test_a_slot_with_no_prompt_of_use_takes_a_request_whose_prompt_no_busy_slot_holds():
    slots = SlotScheduler(2)
    [_p, q] = [*slots.submit(Request("P", 1)), *slots.submit(Request("Q", 1))]
    slots.submit(Request("P", 1))
    slots.submit(Request("R", 1))
    [r] = slots.release(q, 1, first=True)
    assert sent([r]) == [("R", 0, 1)]
    assert sent(slots.release(r, 1, first=True)) == [("P", 0, 1)]  # every queued prompt is held: the first


def test_the_slot_of_a_finished_request_takes_a_queued_request_with_its_prompt_first():
    slots = SlotScheduler(2)
    [p, _q] = [*slots.submit(Request("P", 1)), *slots.submit(Request("Q", 1))]
    slots.submit(Request("R", 1))
    slots.submit(Request("P", 1))
    assert sent(slots.release(p, 1, first=True)) == [("P", 0, 1)]


def test_a_child_slot_does_not_count_as_holding_the_prompt():
    slots = SlotScheduler(3)
    [p] = slots.submit(Request("P", 2))
    [q] = slots.submit(Request("Q", 1))
    slots.submit(Request("Q", 1))
    slots.submit(Request("R", 1))
    # P's child slot ends: it holds nothing, so it takes R (Q's prompt is held by a busy slot)
    assert sent(slots.release(p, 1, first=False)) == [("R", 0, 1)]
    assert sent(slots.release(q, 1, first=True)) == [("Q", 0, 1)]


def test_a_parts_first_choice_gives_its_prompt_back_once():
    """The teacher reports a part's last slots with its first choice's (it may have ended before): only the
    first report frees the prompt, which another busy slot may still hold."""
    slots = SlotScheduler(2)
    [a] = slots.submit(Request("P", 2))
    assert slots.release(a, 1, first=True) == []
    [b] = slots.submit(Request("P", 1))
    slots.submit(Request("P", 1))
    slots.submit(Request("R", 1))
    assert sent(slots.release(a, 1, first=True)) == [("R", 0, 1)]  # b still holds P: R has to be computed
    assert slots.held == {"P": 1, "R": 1} and b.holder


def test_a_dropped_request_sends_nothing_more_and_its_slots_go_to_the_others():
    slots = SlotScheduler(2)
    a = Request("A", 4)
    [part] = slots.submit(a)
    queued = Request("B", 1)
    slots.submit(queued)
    slots.submit(Request("C", 1))
    slots.drop(queued)
    slots.drop(a)
    assert a.left == 0 and a not in slots.started and list(r.key for r in slots.queue) == ["C"]
    assert sent(slots.release(part, 2, first=True, go_on=False)) == [("C", 0, 1)]
    assert slots.free == 1 and not slots.held.get("A")


def test_a_request_that_wants_no_more_replies_does_not_go_on_on_its_slot():
    slots = SlotScheduler(1)
    a = Request("A", 2)
    [part] = slots.submit(a)
    slots.submit(Request("B", 1))
    assert sent(slots.release(part, 1, first=True, go_on=False)) == [("B", 0, 1)]


def test_with_none_queued_the_request_with_most_choices_left_takes_a_free_slot_the_first_started_on_a_tie():
    slots = SlotScheduler(3)
    [a] = slots.submit(Request("A", 2))
    [b] = slots.submit(Request("B", 3))
    slots.submit(Request("C", 3))
    [c] = slots.release(a, 2, first=True)
    assert sent([b, c]) == [("B", 0, 1), ("C", 0, 2)]
    assert sent(slots.release(b, 1, first=True)) == [("B", 1, 1)]  # B's slot goes on with it
    assert sent(slots.release(c, 1, first=False)) == [("B", 2, 1)]  # B and C have 1 left: B started first


@given(st.integers(1, 6), st.lists(st.tuples(st.integers(1, 5), st.integers(0, 10 ** 6)), min_size=1, max_size=12))
def test_every_choice_goes_out_once_in_order_and_the_slots_are_never_over_taken(capacity, asks):
    """Ends the parts' slots in a scripted order, one or all at a time, with or without the first's."""
    slots = SlotScheduler(capacity)
    requests = [Request(f"p{n % 3}", n) for n, _ in asks]
    out: list[Part] = []
    asked: dict[int, list[tuple[int, int]]] = {id(r): [] for r in requests}

    def take(parts: list[Part]) -> None:
        for p in parts:
            asked[id(p.request)].append((p.offset, p.size))
        out.extend(parts)

    for r in requests:
        take(slots.submit(r))
    script = [s for _, s in asks]
    step = 0
    while out:
        assert 0 <= slots.free <= capacity
        assert sum(p.slots for p in out) == capacity - slots.free
        choice = script[step % len(script)] + step
        step += 1
        part = out[choice % len(out)]
        n = 1 if choice % 2 else part.slots
        take(slots.release(part, n, first=choice % 3 != 0 or n >= part.slots))
        out[:] = [p for p in out if p.slots]
    assert slots.free == capacity and not slots.held and not slots.queue
    for r, (n, _) in zip(requests, asks, strict=True):
        parts = asked[id(r)]
        assert [o for o, _ in parts] == [sum(s for _, s in parts[:i]) for i in range(len(parts))]
        assert sum(s for _, s in parts) == r.asked == n and r.left == 0
