"""The speed gate tells "slower" from "too noisy to tell" (bench.gate.speed.decide): an interval that
straddles the floor and is wider than MAX_WIDTH is undecided, `bench check --run` times more rounds of
repetitions in the same series (at most MORE_ROUNDS), and the gate's row says which it was."""

from __future__ import annotations

import json
from itertools import count
from pathlib import Path

import pytest
from test_speed_gate import cells, record, rep, series  # noqa: F401 (cells is a fixture)

from bench.core.store import Store
from bench.gate.pairing import ORDER, PLANNED, SERIES, series_ratio
from bench.gate.rows import Row
from bench.gate.speed import MAX_WIDTH, MORE_ROUNDS, OK, REGRESSED, TOO_NOISY, SpeedRatio, decide, speed_ratio
from bench.gate.speed_check import speed_row


def ratio(estimate: float, low: float, high: float, repetitions: int = 3) -> SpeedRatio:
    return SpeedRatio(estimate, low, high, 0.95, 200.0, 200.0 / estimate, repetitions, 6 * repetitions)


@pytest.mark.parametrize(
    ("low", "high", "expected"),
    [
        (0.95, 1.28, OK),  # the fresh-clone CI run: the lower bound clears 0.9
        (0.90, 1.30, OK),  # at the floor counts as clearing it
        (0.60, 0.85, REGRESSED),  # wholly below the floor: slower, however wide
        (0.70, 0.92, REGRESSED),  # straddles, 0.22 wide, estimate 0.81: narrow enough to say bench fell short
        (0.86, 1.10, TOO_NOISY),  # a fresh-clone CI run: estimate 0.98 above the floor, low below: undecided
        (0.55, 1.63, TOO_NOISY),  # measured under load (issue 21): straddles and 1.08 wide
        (0.68, 0.68 + MAX_WIDTH, REGRESSED),  # exactly the stated width, estimate below the floor: decided
        (0.8995, 1.06, TOO_NOISY),  # the fresh-clone CI run after 15 repetitions: 0.99x [0.90, 1.06]
    ],
)
def test_decision_against_the_floor(low, high, expected):
    assert decide(ratio((low + high) / 2, low, high), floor=0.9) == expected


def test_a_wide_interval_below_the_floor_gets_more_rounds_then_regresses():
    """Estimate 0.83 under the floor, interval wider than MAX_WIDTH: undecided while rounds remain; after
    the last one the estimate decides."""
    wide = ratio(0.83, 0.70, 0.70 + MAX_WIDTH + 0.01)
    assert decide(wide, floor=0.9, last=False) == TOO_NOISY
    assert decide(wide, floor=0.9) == REGRESSED


def test_the_exit_status_tells_undecided_from_regressed():
    from bench.gate.check import _status

    noisy = speed_row("c", {"floor": 0.9}, ratio(0.99, 0.8995, 1.06, repetitions=15))
    slower = speed_row("c", {"floor": 0.9}, ratio(0.7, 0.6, 0.8))
    assert (_status([]), _status([noisy]), _status([noisy, slower])) == (0, 3, 1)


def test_a_baseline_floor_moves_the_decision():
    wide = ratio(1.24, 0.55, 1.63)
    assert decide(wide, floor=0.5) == OK
    assert decide(wide, floor=1.7) == REGRESSED  # the whole interval is below this floor


def test_series_decide_from_their_spread():
    """Quiet series of a slower bench regress; one pair slowed by a busy neighbour is too noisy."""
    slower = [rep("bench", 2 * k, [70.0, 71.0, 69.0]) for k in range(3)]
    plain = [rep("plain", 2 * k + 1, [100.0, 101.0, 99.0]) for k in range(3)]
    quiet = speed_ratio([r for pair in zip(slower, plain, strict=True) for r in pair])
    assert decide(quiet) == REGRESSED and quiet.high < 0.9

    bench_rates = ([300.0] * 3, [45.0] * 3, [280.0] * 3)  # the middle repetition shared the cores
    noisy = speed_ratio([r for k in range(3) for r in (rep("bench", 2 * k, bench_rates[k]),
                                                        rep("plain", 2 * k + 1, [200.0] * 3))])  # fmt: skip
    assert noisy.low < 0.9 < noisy.high and noisy.high - noisy.low > MAX_WIDTH
    assert decide(noisy) == TOO_NOISY


def test_the_row_says_too_noisy_with_the_repetitions_and_fails():
    row = speed_row("c", {"value": 1.1, "floor": 0.9}, ratio(1.24, 0.55, 1.63, repetitions=9))
    assert row.verdict == TOO_NOISY and row.failed
    assert "could not decide after 9 repetitions per side" in row.tolerance
    slower = speed_row("c", {"value": 1.1, "floor": 0.9}, ratio(0.7, 0.6, 0.8))
    assert slower.verdict == REGRESSED and slower.failed and "could not decide" not in slower.tolerance
    assert not Row("c", "m", None, 1.0, "", OK).failed


def test_an_extended_series_reads_with_its_longest_planned_length(cells):  # noqa: F811
    trained = next(c for c in cells if not c.is_base)
    first = series(trained, "s1", reps=3)
    more = [record(trained, r.phase, **{**r.metrics, ORDER: 6 + r.metrics[ORDER], PLANNED: 12})
            for r in series(trained, "s1", reps=3)]  # fmt: skip
    assert series_ratio(first + more).repetitions == 6
    assert "has 9 of 12 repetitions" in series_ratio(first + more[:3])


def fake_workers(monkeypatch, bench_rates):
    """The launcher's worker processes replaced by writing the outcome file each would write: bench's
    k-th repetition at bench_rates(k) tokens/s, the plain script's at 200."""
    from bench.core.outcomes import outcome_path
    from bench.orchestration.launch import Launcher

    bench_reps = count()

    def fake_run(self, command, log_path, limit, pid_file, on_tick=None):
        phase = "speed" if "bench.workers.train" in command else "plain"
        rate = bench_rates(next(bench_reps)) if phase == "speed" else 200.0
        metrics = {"step_s": [1.0] * 7, "step_tokens": [rate] * 7, "tokens_per_s": rate}
        cell_dir = Path(command[command.index("--cell-dir") + 1])
        outcome_path(cell_dir, phase).write_text(json.dumps({"status": "ok", "metrics": metrics}))
        return 0, False

    monkeypatch.setattr(Launcher, "run_process", fake_run)


def run_series(cells, tmp_path, floors=None, **kw):  # noqa: F811
    from bench.gate.speed_run import measure_speed
    from bench.orchestration.launch import Launcher

    trained = next(c for c in cells if not c.is_base)
    store = Store(tmp_path / "results")
    store.append(record(trained, "train", train_loss_last=0.5))
    lines: list[str] = []
    launcher = Launcher(store.root.resolve(), tmp_path, "speed", timing_steps=7)
    written = measure_speed(cells, store, launcher, repetitions=3, progress=lines.append, floors=floors, **kw)
    return trained, written, lines


def test_too_noisy_series_get_bounded_more_rounds_then_stop(cells, tmp_path, monkeypatch):  # noqa: F811
    fake_workers(monkeypatch, lambda k: (300.0, 45.0)[k % 2])  # never settles
    trained, written, lines = run_series(cells, tmp_path)
    rounds = 1 + MORE_ROUNDS
    assert len(written) == 2 * 3 * rounds and len({r.metrics[SERIES] for r in written}) == 1
    assert [r.metrics[ORDER] for r in written] == list(range(2 * 3 * rounds))
    assert written[-1].metrics[PLANNED] == 2 * 3 * rounds
    assert sum("too noisy to decide; timing 3 more repetitions" in line for line in lines) == MORE_ROUNDS
    final = series_ratio(written)
    assert final.repetitions == 3 * rounds and decide(final) == TOO_NOISY
    assert "could not decide after 9 repetitions" in speed_row(trained.id, None, final).tolerance


def test_a_decided_series_is_not_extended(cells, tmp_path, monkeypatch):  # noqa: F811
    fake_workers(monkeypatch, lambda k: 260.0)
    _, written, lines = run_series(cells, tmp_path)
    assert len(written) == 6 and not any("too noisy" in line for line in lines)


def test_the_baseline_floor_decides_whether_to_extend(cells, tmp_path, monkeypatch):  # noqa: F811
    fake_workers(monkeypatch, lambda k: (300.0, 45.0)[k % 2])
    trained = next(c for c in cells if not c.is_base)
    _, written, _ = run_series(cells, tmp_path, floors={trained.id: 0.1})  # the whole interval clears it
    assert len(written) == 6


def test_more_rounds_is_a_bound_the_caller_sets(cells, tmp_path, monkeypatch):  # noqa: F811
    fake_workers(monkeypatch, lambda k: (300.0, 45.0)[k % 2])  # never settles
    _, written, lines = run_series(cells, tmp_path, more_rounds=1)
    assert len(written) == 2 * 3 * 2 and "round 2, at most 2" in "\n".join(lines)
