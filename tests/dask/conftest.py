"""A LocalCluster of 2 worker processes on 127.0.0.1, shared by a test module."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

distributed = pytest.importorskip("distributed")


@dataclass
class DaskCluster:
    """The running cluster: its client, scheduler address and worker pids."""

    client: Any
    address: str
    worker_pids: set[int]


@pytest.fixture(scope="module")
def dask_cluster() -> Iterator[DaskCluster]:
    # Each worker declares one "GPU" (a Dask resource: tasks asking for it hold it).
    cluster = distributed.LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address=None,
        resources={"GPU": 1},
    )
    client = distributed.Client(cluster)
    try:
        pids = set(client.run(os.getpid).values())
        assert len(pids) == 2 and os.getpid() not in pids
        yield DaskCluster(client, cluster.scheduler_address, pids)
    finally:
        client.close()
        cluster.close()
