"""A real multi-node Ray cluster on this one host, as Ray's own tests build one (ray.cluster_utils):
a head that runs nothing and N nodes, each its own raylet declaring (fake) GPUs. For trying
`--executor ray` without a cluster, for the tests, and for benchmarks/ray_executor.py.

    python -m bench.orchestration.local_cluster --nodes 2 --gpus 2    # prints RAY_ADDRESS; Ctrl-C ends it

Everything listens on 127.0.0.1: without RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 Ray resolves 127.0.0.1
to the host's outward address, where nothing of this cluster listens, and `ray.init` hangs. Set that
in the environment of every process that connects (the drivers too); `start` sets it for this one.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
from pathlib import Path

LOCAL_ONLY = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
OBJECT_STORE = 100 * 2**20  # the steps pass only records: Ray's default (30% of RAM) is far more
FAST_HEALTH = {"health_check_period_ms": 500, "health_check_failure_threshold": 3}


def ray_env(tmp: Path | None = None) -> dict[str, str]:
    """Environment for this process and its drivers: local addresses, and Ray's files under `tmp`."""
    tmp = Path(tmp or os.environ.get("RAY_TMPDIR") or tempfile.mkdtemp(prefix="bench-ray-"))
    (tmp / "ray").mkdir(parents=True, exist_ok=True)  # Ray expects this subfolder to exist
    return {**LOCAL_ONLY, "RAY_TMPDIR": str(tmp)}


def start(nodes: int, gpus: int, cpus: int = 1, tmp: Path | None = None):
    """A head (no CPUs, so it runs no step) and `nodes` nodes with `gpus` fake GPUs each. Returns the
    Cluster; its `.address` is what RAY_ADDRESS takes. Call `.shutdown()` when done."""
    os.environ.update(ray_env(tmp))
    from ray.cluster_utils import Cluster

    cluster = Cluster(
        initialize_head=True,
        head_node_args={
            "num_cpus": 0, "num_gpus": 0, "node_ip_address": "127.0.0.1", "include_dashboard": False,
            "object_store_memory": OBJECT_STORE, "_system_config": FAST_HEALTH,
        },
    )  # fmt: skip
    try:
        for _ in range(nodes):
            add_node(cluster, gpus, cpus)
    except BaseException:
        cluster.shutdown()
        raise
    return cluster


def add_node(cluster, gpus: int, cpus: int = 1):
    return cluster.add_node(
        num_cpus=cpus, num_gpus=gpus, node_ip_address="127.0.0.1", object_store_memory=OBJECT_STORE
    )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=2)
    parser.add_argument("--gpus", type=int, default=2, help="fake GPUs per node (scheduling only)")
    parser.add_argument("--cpus", type=int, default=1, help="CPUs per node")
    args = parser.parse_args(argv)
    cluster = start(args.nodes, args.gpus, args.cpus)
    print(f"export RAY_ADDRESS={cluster.address} RAY_TMPDIR={os.environ['RAY_TMPDIR']} "
          "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0", flush=True)  # fmt: skip
    try:
        signal.sigwait({signal.SIGINT, signal.SIGTERM})
    finally:
        cluster.shutdown()
    return 0


if __name__ == "__main__":
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    sys.exit(main())
