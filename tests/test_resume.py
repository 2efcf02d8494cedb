"""Training checkpoints, resume and preemption (bench.workers.checkpoints, bench.orchestration.preemption).

Fast: the checkpoint settings keep every cell key; a checkpoint that is cut, foreign or of another world
size is ignored. Slow: real `bench run`s on the tiny model killed with SIGKILL at a random step, in the
middle of a checkpoint write, or stopped with SIGTERM, then run again: each resumes from its checkpoint,
gives the uninterrupted run's adapter and loss curve, and leaves one ok record per step and no process.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from bench.core.cell import Cell
from bench.core.matrix import parse
from bench.workers import checkpoints

REPO = Path(__file__).resolve().parents[1]
STEPS = 8
MATRIX = {
    "name": "resume",
    "models": {"tiny": {"source": "tiny"}},
    "axes": {"model": ["tiny"], "quant": [{"bits": 4, "rank": 4}], "task": ["fpb"]},
    "train": {"max_steps": STEPS, "train_limit": 64, "batch_per_gpu": 4, "max_seq_len": 128,
              "checkpoint_every": 2, "time_limit_s": 600},
    "eval": {"limit": 8, "batch_size": 8, "bootstrap": 20, "time_limit_s": 300},
}  # fmt: skip
TOLERANCE = 1e-6  # adapter weights, resumed vs uninterrupted (same data order, same RNG: equal on CPU)


def test_checkpoint_settings_at_their_defaults_keep_cell_keys(tmp_path):
    plain = {**MATRIX, "train": {k: v for k, v in MATRIX["train"].items() if k != "checkpoint_every"}}
    (cell,) = parse(plain, tmp_path / "m.yaml").cells
    explicit = {**plain, "train": {**plain["train"], "checkpoint_keep": 2, "keep_checkpoints": False}}
    (same,) = parse(explicit, tmp_path / "m.yaml").cells
    assert same.key == cell.key and "checkpoint_keep" not in cell.to_dict()["train"]


def test_checkpoint_settings_never_enter_the_key_but_reach_the_worker(tmp_path):
    """How often a training is saved changes nothing it computes: a checkpoint written under one
    interval resumes a run under another."""
    (every_2,) = parse(MATRIX, tmp_path / "m.yaml").cells
    other = {**MATRIX, "train": {**MATRIX["train"], "checkpoint_every": 5, "checkpoint_keep": 4,
                                 "keep_checkpoints": True}}  # fmt: skip
    (every_5,) = parse(other, tmp_path / "m.yaml").cells
    plain = {**MATRIX, "train": {k: v for k, v in MATRIX["train"].items() if k != "checkpoint_every"}}
    (default,) = parse(plain, tmp_path / "m.yaml").cells
    assert every_2.key == every_5.key == default.key
    assert Cell.from_dict(every_5.to_dict()).train.checkpoint_every == 5  # carried to the worker


def fake_checkpoint(root: Path, step: int, key: str = "k", world: int = 1) -> Path:
    """A checkpoint folder laid out as save() writes it (bench's manifest over DeepSpeed's files)."""
    tmp = root / f"step-{step:06d}"
    (tmp / checkpoints.TAG).mkdir(parents=True)
    (tmp / checkpoints.TAG / "mp_rank_00_model_states.pt").write_bytes(os.urandom(256))
    files = {
        str(p.relative_to(tmp)): [p.stat().st_size, checkpoints._sha256(p)] for p in checkpoints._files(tmp)
    }
    manifest = {
        "format": checkpoints.FORMAT,
        "cell_key": key,
        "step": step,
        "world_size": world,
        "files": files,
    }
    (tmp / checkpoints.MANIFEST).write_text(json.dumps(manifest))
    return tmp


def test_newest_whole_checkpoint_of_this_cell_is_chosen_and_bad_ones_are_removed(tmp_path, capsys):
    good = fake_checkpoint(tmp_path, 2)
    cut = fake_checkpoint(tmp_path, 4)
    state = cut / checkpoints.TAG / "mp_rank_00_model_states.pt"
    state.write_bytes(state.read_bytes()[:100])  # a write cut short
    fake_checkpoint(tmp_path, 6, key="another-cell")
    fake_checkpoint(tmp_path, 8, world=2)
    (tmp_path / "step-000010").mkdir()  # no manifest: killed before it was written
    (tmp_path / ".tmp-step-000012").mkdir()
    assert checkpoints.latest_valid(tmp_path, "k", world=1) == str(good)
    warned = capsys.readouterr().out
    for why in ("no readable", "differs from its recorded size", "another-cell", "2 ranks"):
        assert why in warned
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-000002"]


def test_no_valid_checkpoint_means_step_zero(tmp_path):
    fake_checkpoint(tmp_path, 2, key="another-cell")
    assert checkpoints.latest_valid(tmp_path, "k", world=1) is None
    assert checkpoints.latest_valid(tmp_path / "absent", "k", world=1) is None


def test_the_default_interval_waits_a_minute_then_spaces_checkpoints_by_their_own_cost(tmp_path):
    explicit = checkpoints.Checkpointer(tmp_path, "k", every=2, keep=2)
    assert [s for s in range(1, 9) if explicit.due(s, 8)] == [2, 4, 6]  # not the last: the adapter is saved
    default = checkpoints.Checkpointer(tmp_path, "k", every=1, keep=2, spaced=True)
    assert not default.due(1, 8)  # a run killed within its first minute loses less than a minute
    default.last_end -= checkpoints.FIRST_AFTER_S
    assert default.due(1, 8)
    default.written, default.last_s, default.last_end = 1, 0.5, time.monotonic() - 40  # as write() leaves it
    assert not default.due(2, 8)
    default.last_end -= 0.5 * checkpoints.SPACING - 40
    assert default.due(2, 8) and not default.due(8, 8)


# -- real runs (slow) -----------------------------------------------------------------------------------


def environment(data_dir, bench_cache, fault: str = "") -> dict:
    env = {**os.environ, "BENCH_DATA": str(data_dir), "BENCH_CACHE": str(bench_cache)}
    env.pop("BENCH_FAULT", None)
    return {**env, "BENCH_FAULT": fault} if fault else env


def command(out: Path, *extra) -> list[str]:
    matrix = out / "resume.yaml"
    if not matrix.exists():
        matrix.write_text(yaml.safe_dump(MATRIX))
    return [sys.executable, "-m", "bench", "run", str(matrix), "--results-dir", str(out / "results"),
            "--no-report", *extra]  # fmt: skip


def bench_run(out: Path, env: dict, *extra) -> subprocess.CompletedProcess:
    return subprocess.run(
        command(out, *extra), env=env, capture_output=True, text=True, cwd=REPO, timeout=900
    )


def records(out: Path) -> list[dict]:
    path = out / "results" / "records.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def train_records(out: Path) -> list[dict]:
    return [r for r in records(out) if r["phase"] == "train"]


def cell_dir(out: Path) -> Path:
    (found,) = (out / "results" / "cells").iterdir()
    return found


def adapter(out: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(cell_dir(out) / "adapter" / "adapter_model.safetensors")


def same_training(now: Path, reference: Path) -> None:
    import torch

    ours, theirs = adapter(now), adapter(reference)
    assert ours.keys() == theirs.keys() and ours
    for name in ours:
        torch.testing.assert_close(ours[name], theirs[name], rtol=0, atol=TOLERANCE, msg=name)
    curve = train_records(now)[-1]["metrics"]["loss_curve"]
    assert curve == train_records(reference)[-1]["metrics"]["loss_curve"]


def no_duplicates_no_orphans(out: Path) -> None:
    ok = [(r["cell_key"], r["phase"]) for r in records(out) if r["status"] == "ok"]
    assert len(ok) == len(set(ok)) == 2
    assert not list((out / "results").glob("cells/*/*.pid"))
    assert not (cell_dir(out) / checkpoints.CHECKPOINTS).exists()  # removed once the cell ended ok
    left = subprocess.run(
        ["pgrep", "-f", str(out / "results")], capture_output=True, text=True
    ).stdout.split()
    assert not left, left


@pytest.fixture(scope="module")
def reference(tmp_path_factory, data_dir, bench_cache, tiny_dir) -> Path:
    """tiny_dir: the tiny model is built (and cached) first, so every run here loads it the same way: building
    it draws from torch's RNG, and so would change the LoRA initialisation of the run that builds it."""
    out = tmp_path_factory.mktemp("uninterrupted")
    done = bench_run(out, environment(data_dir, bench_cache))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return out


@pytest.mark.slow
def test_sigkill_of_the_rank_at_a_random_step_then_rerun_resumes(tmp_path, data_dir, bench_cache, reference):
    step = random.Random().randint(3, STEPS - 1)
    print(f"killing the rank after step {step}")
    killed = bench_run(tmp_path, environment(data_dir, bench_cache, f"train:sigkill-at-step{step}"))
    assert killed.returncode == 1
    (lost,) = train_records(tmp_path)
    assert lost["status"] == "failed"  # torchrun reports its killed rank as its own exit status 1
    again = bench_run(tmp_path, environment(data_dir, bench_cache), "--retry", "failed")
    assert again.returncode == 0, again.stdout[-3000:]
    metrics = train_records(tmp_path)[-1]["metrics"]
    assert (
        metrics["resumed_from_step"] == (step - 1) // 2 * 2 and metrics["attempts"] == 2
    )  # the last one before it
    assert metrics["steps"] == STEPS and metrics["train_s_all_attempts"] > metrics["train_s"]
    same_training(tmp_path, reference)
    no_duplicates_no_orphans(tmp_path)


@pytest.mark.slow
def test_kill_during_a_checkpoint_write_resumes_from_the_one_before(
    tmp_path, data_dir, bench_cache, reference
):
    killed = bench_run(tmp_path, environment(data_dir, bench_cache, "train:sigkill-at-checkpoint6"))
    assert killed.returncode == 1
    assert list((cell_dir(tmp_path) / checkpoints.CHECKPOINTS).glob(".tmp-step-000006"))
    again = bench_run(tmp_path, environment(data_dir, bench_cache), "--retry", "failed")
    assert again.returncode == 0, again.stdout[-3000:]
    assert train_records(tmp_path)[-1]["metrics"]["resumed_from_step"] == 4
    same_training(tmp_path, reference)
    no_duplicates_no_orphans(tmp_path)


def sigterm_while_hanging(out: Path, data_dir, bench_cache, step: int) -> tuple[int, str]:
    """`bench run` whose training stalls after optimizer step `step` (BENCH_FAULT hang-at-step), SIGTERM
    to the runner once the stall is in the log: the signal always finds the training at that step,
    however fast the host (a poll for a progress line could miss all 8 of the tiny model's steps)."""
    env = environment(data_dir, bench_cache, f"train:hang-at-step{step}")
    runner = subprocess.Popen(command(out), env=env, cwd=REPO, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)  # fmt: skip
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and runner.poll() is None:
        logs = list((out / "results").glob("cells/*/train.log"))
        if logs and f"hanging at step{step} " in logs[0].read_text():
            break
        time.sleep(0.2)
    runner.send_signal(signal.SIGTERM)
    output, _ = runner.communicate(timeout=300)
    return runner.returncode, output


@pytest.mark.slow
def test_sigterm_to_the_runner_preempts_and_the_next_run_resumes(tmp_path, data_dir, bench_cache, reference):
    returncode, output = sigterm_while_hanging(tmp_path, data_dir, bench_cache, step=3)
    assert returncode == 75, output[-3000:]
    (stopped,) = train_records(tmp_path)
    assert stopped["status"] == "preempted", stopped
    assert not [r for r in records(tmp_path) if r["phase"] == "eval"]
    again = bench_run(tmp_path, environment(data_dir, bench_cache))  # no --retry: preempted is resumable
    assert again.returncode == 0, again.stdout[-3000:]
    metrics = train_records(tmp_path)[-1]["metrics"]
    assert metrics["resumed_from_step"] == 3 and metrics["attempts"] == 2
    same_training(tmp_path, reference)
    no_duplicates_no_orphans(tmp_path)


@pytest.mark.slow
def test_a_stop_the_training_outran_still_exits_75_with_the_evaluation_left(tmp_path, data_dir, bench_cache):
    """SIGTERM after the last optimizer step: the training ends ok (nothing left to checkpoint), the
    runner stops before the evaluation. No record says preempted, but the matrix is not done, so the exit
    status asks for another run (seen in CI on a fast host: exit 0 with 1 step left)."""
    returncode, output = sigterm_while_hanging(tmp_path, data_dir, bench_cache, step=STEPS)
    assert returncode == 75, output[-3000:]
    assert "1 steps left for the next run" in output
    (trained,) = train_records(tmp_path)
    assert trained["status"] == "ok", trained
    again = bench_run(tmp_path, environment(data_dir, bench_cache))
    assert again.returncode == 0, again.stdout[-3000:]
    assert len(train_records(tmp_path)) == 1  # the next run evaluates; it does not train again
    assert [r["status"] for r in records(tmp_path) if r["phase"] == "eval"] == ["ok"]
    no_duplicates_no_orphans(tmp_path)


def test_a_preempted_step_is_planned_again_without_retry_and_a_failed_one_is_not(tmp_path):
    from bench.core.records import RunRecord, Status
    from bench.orchestration.runner import plan

    (adapter_cell,) = parse(MATRIX, tmp_path / "m.yaml").cells

    def record(status):
        return RunRecord(
            adapter_cell.key, adapter_cell.id, adapter_cell.to_dict(), "train", status, "t0", "t1", 1.0
        )

    assert [s.phase for s in plan([adapter_cell], [record(Status.PREEMPTED)])] == ["train", "eval"]
    assert plan([adapter_cell], [record(Status.FAILED)]) == []


def test_first_signal_asks_the_worker_to_stop_and_the_second_stops_the_runner(tmp_path):
    from bench.core.records import Status
    from bench.orchestration.preemption import StopRequest

    before = signal.getsignal(signal.SIGTERM)  # not always SIG_DFL: an in-process Ray sets its own
    stop = StopRequest()
    worker = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    with stop:
        stop.watch(worker.pid, ranks=False)
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.requested and worker.wait(timeout=10) == -signal.SIGTERM
        assert stop.outcome(Status.FAILED, "worker killed by SIGTERM")[0] == Status.PREEMPTED
        assert stop.outcome(Status.OK, None) == (Status.OK, None)
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
    assert signal.getsignal(signal.SIGTERM) is before  # the handler it replaced is back
