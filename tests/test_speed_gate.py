"""The gate's speed ratio (bench.gate.speed): medians of per-step tokens/s of repetitions that ran
interleaved (bench, plain, bench, plain, ...), warm-up steps dropped, with a two-level bootstrap
interval; and the order in which `bench check --run` starts those repetitions (bench.gate.speed_run)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from bench.core.matrix import load
from bench.core.records import RunRecord, Status
from bench.core.store import Store
from bench.gate.pairing import ORDER, PLANNED, SERIES, newest_series, series_ratio, speed_needed
from bench.gate.speed import Repetition, speed_ratio


def rep(side: str, order: int, rates: list[float], warmup=(1.0, 2.0), tokens: int = 400) -> Repetition:
    """A repetition whose timed steps ran at `rates` tokens/s, after slow warm-up steps."""
    return Repetition(
        side, order, (*warmup, *(tokens / r for r in rates)), (tokens,) * (len(warmup) + len(rates))
    )


def test_ratio_is_of_medians_of_per_step_rates_with_warm_up_dropped():
    reps = [
        rep("bench", 0, [100, 110, 90]), rep("plain", 1, [50, 40, 60]),
        rep("bench", 2, [105, 95, 300]), rep("plain", 3, [55, 45, 10]),
    ]  # fmt: skip
    result = speed_ratio(reps)
    # pooled timed steps: bench 90 95 100 105 110 300 -> median 102.5; plain 10 40 45 50 55 60 -> 47.5
    assert result.estimate == pytest.approx(102.5 / 47.5)
    assert (result.bench_tokens_per_s, result.plain_tokens_per_s) == pytest.approx((102.5, 47.5))
    assert (result.repetitions, result.steps) == (2, 6)
    assert result.low <= result.estimate <= result.high
    # the warm-up steps (400 tokens in 1 s and 2 s: 400 and 200 tokens/s) would have moved both medians
    assert speed_ratio(reps, warmup=0).estimate != pytest.approx(result.estimate)


def test_steady_sides_give_a_tight_interval_and_drift_between_repetitions_widens_it():
    steady = [rep(s, i, [200 if s == "bench" else 100] * 10) for i, s in enumerate(["bench", "plain"] * 3)]
    result = speed_ratio(steady)
    assert (result.estimate, result.low, result.high) == pytest.approx((2.0, 2.0, 2.0))
    assert result.text() == "2.00x [2.00, 2.00]"
    # A neighbour slows bench's 2nd repetition only: the steps inside each repetition are still steady,
    # so only the repetition level of the bootstrap can show that spread.
    drift = [rep(s, i, [(120 if i == 2 else 200) if s == "bench" else 100] * 10)
             for i, s in enumerate(["bench", "plain"] * 3)]  # fmt: skip
    wide = speed_ratio(drift)
    assert wide.estimate == pytest.approx(2.0) and wide.low == pytest.approx(1.2)


def test_noisy_steps_give_an_interval_around_the_ratio():
    rng = np.random.default_rng(1)
    reps = [rep(s, i, list((150 if s == "bench" else 100) * rng.uniform(0.8, 1.2, 20)))
            for i, s in enumerate(["bench", "plain"] * 3)]  # fmt: skip
    result = speed_ratio(reps)
    assert 1.3 < result.low < result.estimate < result.high < 1.7
    assert speed_ratio(reps) == result  # seeded


def test_a_series_must_alternate_and_keep_steps_after_warm_up():
    with pytest.raises(ValueError, match="alternates bench, plain, ...; this one ran bench, bench, plain"):
        speed_ratio([rep("bench", 0, [1]), rep("bench", 1, [1]), rep("plain", 2, [1]), rep("plain", 3, [1])])
    with pytest.raises(ValueError, match="none left after 2 warm-up steps"):
        speed_ratio([rep("bench", 0, []), rep("plain", 1, [1])])


MATRIX = {
    "name": "speed",
    "models": {"tiny": {"source": "tiny"}},
    "axes": {"model": ["tiny"], "quant": [{"bits": 4, "rank": 4}], "task": ["fpb"]},
    "base": True,
    "train": {"max_steps": 5},
    "eval": {"limit": 10},
}


def record(cell, phase, status=Status.OK, **metrics) -> RunRecord:
    return RunRecord(
        cell_key=cell.key, cell_id=cell.id, cell=cell.to_dict(), phase=phase, status=status,
        started_at="2026-01-01T00:00:00+00:00", finished_at="2026-01-01T00:01:00+00:00", wall_s=60.0,
        env={"host": "box"}, metrics=metrics,
    )  # fmt: skip


def series(cell, series_id: str, bench=200.0, plain=100.0, reps=3, fail_at=None) -> list[RunRecord]:
    out = []
    for k in range(2 * reps):
        phase, rate = ("speed", bench) if k % 2 == 0 else ("plain", plain)
        stamp = {SERIES: series_id, ORDER: k, PLANNED: 2 * reps}
        if k == fail_at:
            out.append(record(cell, phase, Status.FAILED, **stamp))
            continue
        out.append(record(cell, phase, step_s=[1.0] * 6, step_tokens=[rate] * 6, **stamp))
    return out


@pytest.fixture
def cells(tmp_path):
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump(MATRIX))
    return load(path).cells


def test_the_newest_series_after_the_training_is_the_one_read(cells):
    trained = next(c for c in cells if not c.is_base)
    train = record(trained, "train", train_loss_last=0.5)
    old = series(trained, "old", bench=300.0)
    legacy_plain = record(trained, "plain", tokens_per_s=50.0)  # before series existed: no stamp
    assert newest_series(train, [*old, train, legacy_plain]) == []
    new = series(trained, "new", bench=150.0)
    records = [*old, train, legacy_plain, *new]
    assert newest_series(train, records) == new
    assert series_ratio(new).estimate == pytest.approx(1.5)
    assert speed_needed(cells, records) == ([], [])
    assert speed_needed(cells, [*old, train]) == ([trained], [])  # that series timed older code
    broken = series(trained, "broken", fail_at=3)
    assert series_ratio(broken) == "plain-script repetition 2 failed (see its log)"
    assert speed_needed(cells, [train, *new, *broken]) == ([trained], [])  # measured again
    assert "2 of 6 repetitions" in series_ratio(new[:2])


def test_run_starts_bench_and_the_plain_script_alternately(cells, tmp_path, monkeypatch):
    """bench check --run's series through the real runner and launcher, the worker subprocesses replaced
    by writing the outcome file each would write."""
    from bench.core.outcomes import outcome_path
    from bench.gate.speed_run import measure_speed
    from bench.orchestration.launch import Launcher

    trained = next(c for c in cells if not c.is_base)
    store = Store(tmp_path / "results")
    store.append(record(trained, "train", train_loss_last=0.5))
    calls = []

    def fake_run(self, command, log_path, limit, pid_file, on_tick=None):
        calls.append(command)
        phase = "speed" if "bench.workers.train" in command else "plain"
        rate = 200.0 if phase == "speed" else 80.0
        cell_dir = Path(command[command.index("--cell-dir") + 1])
        metrics = {"step_s": [1.0] * 7, "step_tokens": [rate] * 7, "tokens_per_s": rate}
        outcome_path(cell_dir, phase).write_text(json.dumps({"status": "ok", "metrics": metrics}))
        return 0, False

    monkeypatch.setattr(Launcher, "run_process", fake_run)
    lines = []
    launcher = Launcher(store.root.resolve(), tmp_path, "speed", timing_steps=7)
    written = measure_speed(cells, store, launcher, repetitions=3, progress=lines.append)
    workers = [c[c.index("-m", 2) + 1] if "torch.distributed.run" in c else c[2] for c in calls]
    assert workers == ["bench.workers.train", "bench.workers.plain"] * 3
    assert all(c[c.index("--timing-steps") + 1] == "7" for c in calls)
    assert [(r.phase, r.metrics[ORDER]) for r in written] == [
        ("speed", 0), ("plain", 1), ("speed", 2), ("plain", 3), ("speed", 4), ("plain", 5)
    ]  # fmt: skip
    assert len({r.metrics[SERIES] for r in written}) == 1 and written[0].metrics[PLANNED] == 6
    assert lines[-1] == f"{trained.id}: train_speed_vs_plain 2.50x [2.50, 2.50]"
    assert measure_speed(cells, store, launcher, repetitions=3, progress=lines.append) == []  # kept
