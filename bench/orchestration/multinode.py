"""A training over several nodes, for the Ray executor: a placement group of one bundle per node
(strictly spread, so each bundle is its own machine); once Ray has placed it, the first bundle names
the master address and a free port, then one task per node runs its share with torchrun.

A node lost mid-cell fails the whole cell: the other nodes' tasks are cancelled (their torchrun would
wait for the lost rank until gloo/NCCL time out), and the group is released.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from dataclasses import asdict

from bench.core.records import RunRecord, Status
from bench.orchestration.on_node import (
    END,
    NodeRankLauncher,
    rendezvous_point,
    run_node_rank,
    write_cell_json,
)
from bench.orchestration.preemption import STOP
from bench.orchestration.scheduler import Step


def submit_multinode(executor, step: Step, done: Callable) -> None:
    """A placement group of one bundle per node (strictly spread); once Ray has placed it, the
    rank-0 bundle names the master address, then one task per node runs its torchrun."""
    from ray.util.placement_group import placement_group, remove_placement_group
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    write_cell_json(executor.launcher.cell_dir(step), step)
    count, per = step.cell.nodes, step.cell.gpus_per_node
    group = placement_group([{executor.resource: per}] * count, strategy="STRICT_SPREAD")

    def in_bundle(i: int, options: dict) -> dict:
        strategy = PlacementGroupSchedulingStrategy(group, placement_group_bundle_index=i)
        return {**options, "scheduling_strategy": strategy}

    results: dict[int, dict] = {}
    refs: list = []

    def finish(value, error) -> None:
        remove_placement_group(group)
        for ref in refs:  # the other nodes' torchrun would wait for the lost one: stop them
            if executor.pending.pop(ref, None) is not None:
                _cancel(ref)
        if error is not None:
            return done(None, error)
        done(value, None)
        done(END, None)

    def rank_done(i: int, value, error) -> None:
        if error is not None:
            return finish(None, error)
        results[i] = value
        if i != 0 and value["returncode"] != 0 and not STOP.requested:  # stopped: rank 0's record says so
            return finish(None, RankFailed(value))
        if i == 0 and value["record"].status != Status.OK:  # the others would wait for rank 0
            return finish(_with_env(value["record"], nodes=[value["node"]]), None)
        if len(results) == count:
            record = results[0]["record"]
            nodes = [results[r]["node"] for r in range(count)]
            finish(_with_env(record, nodes=nodes), None)

    def placed(point, error) -> None:
        if error is not None:
            return finish(None, error)
        for i in range(count):
            launcher = NodeRankLauncher(
                **asdict(executor.launcher), nnodes=count, node_rank=i,
                master_addr=point["addr"], master_port=point["port"],
            )  # fmt: skip
            options = in_bundle(i, executor._options(per))
            rank = functools.partial(rank_done, i)
            refs.append(executor._submit(run_node_rank, options, rank, launcher, step, executor.env))

    executor._submit(rendezvous_point, in_bundle(0, {"num_cpus": 0, "max_retries": 0}), placed)


class RankFailed(Exception):
    def __init__(self, value: dict):
        node = value["node"]
        super().__init__(
            f"the worker on node {node['node_ip']} ({node['node_id'][:12]}) exited with status "
            f"{value['returncode']}{' (time limit)' if value['timed_out'] else ''}; see {value['log']}"
        )
        self.node = node


def _with_env(record: RunRecord, **extra) -> RunRecord:
    return dataclasses.replace(record, env={**record.env, **extra})


def _cancel(ref) -> None:
    import ray

    try:
        ray.cancel(ref, force=True)
    except (ray.exceptions.RayError, ValueError, TypeError):  # already finished
        pass
