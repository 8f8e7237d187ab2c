"""The fault matrix (chaos/cases.py) once: worker hosts in their own network namespaces, real faults.

Each case starts its own cluster (redis-server, coordinator, beat, a `celery worker` per host inside
`ip netns`), injects its fault and reads the table back, on each topology it runs on (file-sql:
SQLite + file://; s3-rest: SeaweedFS's S3 and REST catalog; postgres_restart: a PostgreSQL catalog).
Network namespaces need root: a run that cannot create them skips locally and FAILS under CI (the
reason is in the message); so do SeaweedFS and PostgreSQL when missing.
`python -m chaos.run --runs N [--topology T]` (`make chaos [TOPOLOGY=T]`) runs the same matrix N times
and prints the table.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from chaos.cases import CASES, run_case
from chaos.harness import wait_until
from chaos.netns import Network, unavailable_reason
from chaos.topology import TOPOLOGIES, postgres_unavailable
from tests.support.catalogs import require_or_skip
from tests.support.seaweedfs import INSTALL_HINT, find_weed

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module", autouse=True)
def network_namespaces() -> None:
    reason = unavailable_reason()
    if reason is None:
        return
    if os.environ.get("CI"):
        pytest.fail(f"the chaos tests need Linux network namespaces, which cannot be created here: {reason}")
    pytest.skip(f"network namespaces unavailable: {reason}")


def test_network_links_cut_restore_and_clean_up() -> None:
    # Given two hosts on a private bridge
    net = Network().open()
    try:
        hosts = [net.add_host(1), net.add_host(2)]
        server = subprocess.Popen(
            [sys.executable, "-m", "http.server", "--bind", net.gateway, "0"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            assert server.stdout is not None
            port = int(server.stdout.readline().split("port ")[1].split()[0])

            def reaches(host: int) -> bool:
                code = f"import socket; socket.create_connection(({net.gateway!r}, {port}), timeout=2)"
                argv = net.hosts[host].exec_argv([sys.executable, "-c", code])
                return subprocess.run(argv, capture_output=True, timeout=30).returncode == 0

            # Then each host reaches the root namespace over its own link, and only a cut host is cut off
            assert reaches(1) and reaches(2)
            net.cut(1)
            assert not reaches(1) and reaches(2) and not net.link_up(1)
            net.restore(1)
            # (the first attempt may still meet the neighbour entry that failed during the cut)
            wait_until(lambda: reaches(1), 15, "host 1 to reach the gateway again")
            assert net.link_up(1)
            assert all(h.address != net.gateway and net.contains(h.address) for h in hosts)
        finally:
            server.kill()
            server.communicate()  # reaps it and closes its pipe
    finally:
        net.close()
    # and nothing of the run is left behind
    assert net.leftovers() == []


def test_network_cleans_up_after_a_failure() -> None:
    with pytest.raises(RuntimeError, match="boom"), Network() as net:
        net.add_host(1)
        raise RuntimeError("boom")
    assert net.leftovers() == []


# On s3-rest, the suite runs its own cases and those where S3 and the REST catalog change what happens
# (writes, the commit, a concurrent REST writer); `make chaos TOPOLOGY=s3-rest` runs them all.
S3_REST_ALSO = ("three_hosts", "worker_sigkill", "commit_sigkill", "concurrent_writer")


def _runs() -> list[tuple[str, str]]:
    runs = [("file-sql", name) for name, c in CASES.items() if "file-sql" in c.topologies]
    runs += [
        ("s3-rest", name)
        for name, c in CASES.items()
        if "s3-rest" in c.topologies and ("file-sql" not in c.topologies or name in S3_REST_ALSO)
    ]
    assert {t for t, _ in runs} == set(TOPOLOGIES)
    return runs


@pytest.mark.parametrize("topology, name", _runs())
def test_fault_case(topology: str, name: str, tmp_path: Path) -> None:
    if topology == "s3-rest":
        require_or_skip(None if find_weed() else "`weed` not found", f"SeaweedFS ({INSTALL_HINT})")
    if name == "postgres_restart":
        require_or_skip(postgres_unavailable(), "PostgreSQL at 127.0.0.1:5432, restartable with pg_ctlcluster")
    result = run_case(name, tmp_path / name, topology)
    assert result.passed, f"{name}: {result.error}"
    assert result.duplicates == 0 and result.leftover_files == 0
    assert result.rows_found == result.rows_expected
