"""The Ray executor's pure parts and its process guard, without a Ray cluster (fast).

The cluster runs themselves are in test_ray_cluster.py (slow).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from bench.__main__ import main
from bench.core.matrix import MatrixError, parse
from bench.orchestration.cluster import Node, refusal, resource_of, what_node_sees
from bench.orchestration.node_guard import watch
from bench.orchestration.orphans import descendants, remember
from bench.orchestration.parallel_plan import parallel_view
from bench.orchestration.ray_executor import cause
from bench.orchestration.runner import plan

MATRIX = {
    "models": {"tiny": {"source": "tiny"}},
    "axes": {
        "model": ["tiny"], "quant": [{"bits": 4, "rank": 4}], "task": ["fpb"],
        "layout": [{"gpus": 1, "nodes": 1}, {"gpus": 8, "nodes": 2}],
    },
    "base": True,
}  # fmt: skip


def cells(raw=MATRIX):
    return parse(raw, Path("m.yaml")).cells


def test_nodes_axis_names_multi_node_cells_and_keeps_single_node_keys():
    by_id = {c.id: c for c in cells()}
    wide = by_id["tiny__fpb__4bit-r4__8gpu__eval8bit__2nodes"]
    assert (wide.nodes, wide.gpus_per_node) == (2, 4)
    single = by_id["tiny__fpb__4bit-r4__1gpu__eval8bit"]
    without_axis = {**MATRIX, "axes": {k: v for k, v in MATRIX["axes"].items() if k != "layout"}}
    assert single.key in {c.key for c in cells(without_axis)}  # records made before the axis still match
    assert "nodes" not in single.to_dict() and wide.to_dict()["nodes"] == 2


def test_gpus_that_do_not_split_over_nodes_are_refused_with_the_fix():
    bad = {**MATRIX, "axes": {**MATRIX["axes"], "layout": [{"gpus": 3, "nodes": 2}]}}
    with pytest.raises(MatrixError, match=r"m\.yaml.*axes\.nodes.*multiple of nodes"):
        cells(bad)


def test_a_step_no_node_can_hold_is_refused_with_the_reason():
    nodes = [Node("a" * 20, "10.0.0.1", gpus=4, cpus=8), Node("b" * 20, "10.0.0.2", gpus=2, cpus=8)]
    by_id = {c.id: c for c in cells()}
    wide = by_id["tiny__fpb__4bit-r4__8gpu__eval8bit__2nodes"]
    reason = refusal(wide, "train", nodes, "GPU")
    assert "4 GPUs on each of 2 nodes" in reason and "largest node has 4" in reason
    assert refusal(wide, "eval", nodes, "GPU") is None  # evaluation: one node's share
    assert refusal(by_id["tiny__fpb__4bit-r4__1gpu__eval8bit"], "train", nodes, "GPU") is None
    assert refusal(wide, "train", nodes + [Node("c" * 20, "10.0.0.3", 4, 8)], "GPU") is None
    assert resource_of([Node("x", "h", gpus=0, cpus=2)]) == "CPU"


def test_plan_shows_what_runs_at_once_and_what_waits_for_trainings():
    text = "\n".join(parallel_view(plan(cells(), [])))
    assert "2 trainings" in text
    assert "2 nodes x 4 GPUs, one placement group" in text
    assert "one evaluation task after its 1 trainings (4 GPUs on one node)" in text


def test_node_died_error_becomes_one_line_naming_the_node():
    class NodeDiedError(Exception):
        pass

    text = (
        "Task failed because the node it was running on is dead or unavailable. Node IP: 127.0.0.1, "
        "node ID: abc123. This can happen if the node was preempted, had a hardware failure, ..."
    )
    assert cause(NodeDiedError(text)) == (
        "NodeDiedError: Task failed because the node it was running on is dead or unavailable. "
        "Node IP: 127.0.0.1, node ID: abc123."
    )


def test_a_node_that_cannot_see_the_shared_folders_is_named(tmp_path, data_dir):
    probe = tmp_path / ".probe"
    probe.write_text("token\n")
    listing = sorted(p.name for p in data_dir.iterdir())
    assert what_node_sees(str(probe), "token\n", str(data_dir), listing) is None
    assert "cannot see the results directory" in what_node_sees(
        str(tmp_path / "x"), "t", str(data_dir), listing
    )
    assert "cannot see the data directory /nowhere" in what_node_sees(
        str(probe), "token\n", "/nowhere", listing
    )


def test_guard_kills_the_step_tree_when_the_raylet_dies(tmp_path):
    raylet = subprocess.Popen(["sleep", "60"])  # stands for the raylet
    # A worker group whose child runs in a session of its own, as torchrun starts its ranks
    step = subprocess.Popen(["sh", "-c", "setsid sleep 61 & wait"], start_new_session=True)
    rank = _wait(lambda: descendants(step.pid))[0]
    pid_file = tmp_path / "train.pid"
    remember(pid_file, step.pid)
    start = time.monotonic()
    os.kill(raylet.pid, signal.SIGKILL)
    raylet.wait()
    assert {step.pid, rank} <= set(watch(raylet.pid, os.getpid(), [pid_file]))
    assert step.wait(timeout=10) == -signal.SIGKILL and time.monotonic() - start < 5
    assert _wait(lambda: not Path(f"/proc/{rank}").exists() or "Z" in _state(rank)), "the rank outlived it"


def _wait(check, seconds=10):
    deadline = time.monotonic() + seconds
    while not (found := check()) and time.monotonic() < deadline:
        time.sleep(0.05)
    return found


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "gone"


def test_local_executor_refuses_multi_node_cells(tmp_path, data_dir, capsys):
    matrix = tmp_path / "m.yaml"
    matrix.write_text(yaml.safe_dump(MATRIX))
    argv = ["run", str(matrix), "--results-dir", str(tmp_path / "r"), "--data-dir", str(data_dir)]
    assert main(argv) == 2
    assert "use `--executor ray` on a cluster" in capsys.readouterr().err


def test_the_cli_loads_ray_only_for_the_ray_executor():
    code = "import sys, bench.__main__, bench.orchestration.ray_executor; print('ray' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_report_names_multi_node_cells_apart_from_single_node_ones():
    from bench.report.model import config_key, config_labels

    two = {**MATRIX, "axes": {**MATRIX["axes"], "layout": [{"gpus": 8, "nodes": 1}, {"gpus": 8, "nodes": 2}]}}
    trained = [c for c in cells(two) if not c.is_base]
    labels = config_labels(trained)
    assert len({config_key(c) for c in trained}) == 2
    assert sorted(labels[config_key(c)] for c in trained) == [
        "tiny 4bit-r4",
        "tiny 4bit-r4 · 2 nodes × 4 GPU",
    ]


def test_a_step_whose_raylet_dies_is_lost_with_its_node_and_its_workers_killed(tmp_path):
    from bench.orchestration.on_node import NodeLost, guarded

    raylet = subprocess.Popen(["sleep", "60"])  # stands for the raylet
    step = subprocess.Popen(["sh", "-c", "sleep 60 & wait"], start_new_session=True)
    remember(tmp_path / "train.pid", step.pid)
    node = {"node_ip": "127.0.0.1", "node_id": "abc123"}
    with guarded([tmp_path / "train.pid"], node, raylet=raylet.pid) as node_alive:
        time.sleep(1)  # the guard is up
        node_alive()  # the raylet lives: a record made now is the cell's
        os.kill(raylet.pid, signal.SIGKILL)
        raylet.wait()
        assert step.wait(timeout=10) == -signal.SIGKILL  # killed by the guard, as on a live host
        # the record the launcher now makes (workers killed) must not go out: the step is lost instead
        with pytest.raises(NodeLost, match=r"Node IP: 127\.0\.0\.1, node ID: abc123"):
            node_alive()


def test_a_guard_told_to_stand_down_kills_what_is_left_of_the_step(tmp_path):
    # A Ray worker shut down because its driver died kills torchrun; torchrun's return ends the step
    # on a thread racing the worker's exit, which then stands the guard down with the ranks running.
    from bench.orchestration.on_node import guarded

    raylet = subprocess.Popen(["sleep", "60"])
    leader = subprocess.Popen(["sh", "-c", "setsid sleep 60 & wait"], start_new_session=True)
    remember(tmp_path / "train.pid", leader.pid)
    try:
        with guarded([tmp_path / "train.pid"], {"node_ip": "127.0.0.1", "node_id": "abc"}, raylet=raylet.pid):
            rank = _wait(lambda: descendants(leader.pid))[0]  # "setsid": a session of its own, as ranks
            time.sleep(1)  # the guard has noted the tree
            os.kill(leader.pid, signal.SIGKILL)  # torchrun killed, its rank re-parented
            leader.wait()
        assert _wait(lambda: _state(rank) in ("gone", "Z")), "the rank outlived its guard's stand-down"
        assert raylet.poll() is None  # only the step's processes were killed
    finally:
        raylet.kill()
