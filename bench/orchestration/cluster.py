"""Ray, as the Ray executor sees it: connecting, the live nodes and what they hold, and the checks made
before anything is submitted (a cell no node can hold; a node that cannot see the shared folders).

Ray is imported inside functions only, so `bench run` without `--executor ray` never loads it.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from pathlib import Path

from bench.core.cell import Cell

ADDRESS_ENV = "RAY_ADDRESS"  # Ray's own convention for naming a running cluster
PROBE_TIMEOUT_S = 120


class ClusterError(Exception):
    """The cluster cannot run this matrix as asked; the message names the node, the path or the fix."""


@dataclass(frozen=True)
class Node:
    node_id: str
    ip: str
    gpus: int
    cpus: int

    @property
    def name(self) -> str:
        return f"{self.ip} (node {self.node_id[:12]})"


def connect() -> str:
    """Join the cluster named by RAY_ADDRESS, or start a local Ray on this machine; say which."""
    address = os.environ.get(ADDRESS_ENV) or None
    if not address:
        # A Ray for this machine alone listens on loopback only (read by Ray when it is imported).
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    import ray

    # No dashboard for a Ray that bench starts itself: it only needs the scheduler.
    extra = {} if address else {"include_dashboard": False}
    try:
        ray.init(address=address, ignore_reinit_error=True, log_to_driver=True, **extra)
    except (ConnectionError, RuntimeError) as exc:
        raise ClusterError(
            f"cannot reach the Ray cluster at {ADDRESS_ENV}={address} ({exc}); start it with "
            "`ray start --head` or unset RAY_ADDRESS to let bench start a local Ray"
        ) from exc
    return f"Ray cluster at {address}" if address else "a local Ray started by bench"


def disconnect() -> None:
    import ray

    ray.shutdown()


def alive_nodes() -> list[Node]:
    import ray

    return [
        Node(
            node_id=n["NodeID"],
            ip=n["NodeManagerAddress"],
            gpus=int(n["Resources"].get("GPU", 0)),
            cpus=int(n["Resources"].get("CPU", 0)),
        )
        for n in ray.nodes()
        if n["Alive"]
    ]


def resource_of(nodes: list[Node]) -> str:
    """What a cell's `gpus` count asks Ray for: GPUs, or on a cluster without any, one CPU per process
    (the local executor likewise runs a cell's processes on the CPU there, with gloo)."""
    return "GPU" if any(n.gpus for n in nodes) else "CPU"


def capacity(node: Node, resource: str) -> int:
    return node.gpus if resource == "GPU" else node.cpus


def refusal(cell: Cell, phase: str, nodes: list[Node], resource: str) -> str | None:
    """Why no set of live nodes can ever hold this step, or None. Ray itself would keep such a task
    pending forever, so it is refused before submission."""
    per_node = cell.gpus_per_node
    count = cell.nodes if phase == "train" else 1  # evaluation stays on one node
    able = [n for n in nodes if capacity(n, resource) >= per_node]
    if len(able) >= count:
        return None
    largest = max((capacity(n, resource) for n in nodes), default=0)
    where = f"{per_node} {resource}s on " + ("one node" if count == 1 else f"each of {count} nodes")
    return (
        f"needs {where}; the cluster's largest node has {largest} and {len(able)} node(s) have {per_node} "
        f"(Ray would wait forever): lower gpus/nodes in the matrix or add larger nodes"
    )


def check_shared(results_dir: Path, data_dir: Path, nodes: list[Node]) -> None:
    """Every node that may run a step must see the results and data folders at the same paths (shared
    storage): workers write artefacts there and read the data there. Refuse to start otherwise."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    token = f"{uuid.uuid4().hex}\n"
    probe_file = results_dir / f".probe-{uuid.uuid4().hex[:8]}"
    probe_file.write_text(token)
    listing = sorted(p.name for p in data_dir.iterdir())
    try:
        probe = ray.remote(what_node_sees)
        refs = {
            n.node_id: probe.options(
                num_cpus=0, max_retries=0,
                scheduling_strategy=NodeAffinitySchedulingStrategy(n.node_id, soft=False),
            ).remote(str(probe_file), token, str(data_dir), listing)
            for n in nodes
        }  # fmt: skip
        answers = dict(zip(refs, ray.get(list(refs.values()), timeout=PROBE_TIMEOUT_S), strict=True))
    except ray.exceptions.GetTimeoutError as exc:
        raise ClusterError(
            f"a node did not answer the shared-storage check within {PROBE_TIMEOUT_S}s"
        ) from exc
    finally:
        probe_file.unlink(missing_ok=True)
    by_id = {n.node_id: n for n in nodes}
    for node_id, problem in answers.items():
        if problem:
            raise ClusterError(
                f"node {by_id[node_id].name} {problem}; every node must mount it at the same path "
                "(shared storage: see the README's 'Cluster' section)"
            )


def what_node_sees(probe_file: str, token: str, data_dir: str, listing: list[str]) -> str | None:
    """Runs on each node: None if it sees the driver's results folder and data folder, else what is wrong."""
    try:
        if Path(probe_file).read_text() != token:
            raise OSError("different contents")
    except OSError:
        return f"cannot see the results directory {Path(probe_file).parent}"
    try:
        seen = sorted(p.name for p in Path(data_dir).iterdir())
    except OSError:
        seen = None
    if seen != listing:
        return f"cannot see the data directory {data_dir} (or sees different files there)"
    return None
