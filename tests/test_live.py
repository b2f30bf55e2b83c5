"""Live controls (romlib.teach.live.LiveUpdate) with a fake slow stage: one update at a time, the newest request
never lost, bursts merged; and the explorer's promise behind them: a ranking change never samples again."""
import threading
import time

import pytest

from romlib.teach.explorer import STAGE_OF, STAGES, VIEW_KNOBS
from romlib.teach.live import LiveUpdate


class SlowStage:
    """A fake sampler: sleeps, records each call's changes and how many calls overlapped."""

    def __init__(self, seconds=0.2, fail_on=None):
        self.seconds, self.fail_on = seconds, fail_on
        self.calls, self.rendered, self.active, self.most_active = [], [], 0, 0
        self.lock = threading.Lock()

    def __call__(self, changes):
        with self.lock:
            self.active += 1
            self.most_active = max(self.most_active, self.active)
            self.calls.append(dict(changes))
        try:
            time.sleep(self.seconds)
            if self.fail_on is not None and self.fail_on in changes:
                raise ValueError(f"bad knob {self.fail_on}")
            return dict(changes)
        finally:
            with self.lock:
                self.active -= 1

    def render(self, value, changes):
        self.rendered.append(value)


def test_a_change_made_while_an_update_runs_is_queued_merged_and_never_lost():
    stage, said = SlowStage(0.3), []
    live = LiveUpdate(stage, stage.render, status=said.append, debounce=0.0)
    live.request(scale=3.0)
    time.sleep(0.1)  # the first update is sampling now
    live.request(rank="masked")
    live.request(scale=5.0)  # supersedes scale=3 for the queued update
    assert live.wait(5)
    assert stage.calls == [{"scale": 3.0}, {"rank": "masked", "scale": 5.0}]
    assert stage.rendered[-1] == {"rank": "masked", "scale": 5.0}  # the last figure shows the newest values
    assert stage.most_active == 1  # never two sampling runs at once
    assert any(t.startswith("queued: rank='masked', scale=5.0") for t in said)


def test_a_burst_of_changes_costs_one_update_after_the_debounce():
    stage = SlowStage(0.05)
    live = LiveUpdate(stage, stage.render, debounce=0.3)
    for v in (1, 3, 5, 7):
        live.request(dilation=v)
        time.sleep(0.05)
    assert live.wait(5)
    assert stage.calls == [{"dilation": 7}]


def test_many_threads_requesting_at_once_never_overlap_and_the_last_value_wins():
    stage = SlowStage(0.02)
    live = LiveUpdate(stage, stage.render, debounce=0.0)
    threads = [threading.Thread(target=live.request, kwargs={"seed": i}) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    live.request(seed=99)
    assert live.wait(10)
    assert stage.most_active == 1 and stage.rendered[-1] == {"seed": 99}
    assert not live.busy and live.done == len(stage.calls)


def test_a_failing_update_is_said_and_the_next_request_still_runs():
    stage, said = SlowStage(0.01, fail_on="scale"), []
    live = LiveUpdate(stage, stage.render, status=said.append, debounce=0.0)
    live.request(scale=-1)
    assert live.wait(5)
    live.request(rank="local")
    assert live.wait(5)
    assert any("failed: ValueError: bad knob scale" in t for t in said)
    assert stage.rendered == [{"rank": "local"}] and len(live.errors) == 1


def test_wait_times_out_while_an_update_runs():
    live = LiveUpdate(SlowStage(0.5), debounce=0.0)
    live.request(seed=1)
    assert live.wait(0.05) is False
    assert live.wait(5) is True


def test_negative_debounce_is_refused_by_name():
    with pytest.raises(ValueError, match="debounce=-1"):
        LiveUpdate(lambda c: c, debounce=-1)


def test_every_control_names_a_stage_in_order():
    assert set(STAGE_OF.values()) <= set(STAGES)
    assert set(VIEW_KNOBS) <= set(STAGE_OF)
    assert STAGE_OF["rank"] == STAGE_OF["enlarge"] == "rank" and STAGE_OF["dilation"] == "masks"
