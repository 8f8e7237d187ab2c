"""The local stack behind ``floe up``: a private Redis, the coordinator, N hosts, beat and Flower.

Redis persistence: the private Redis runs with ``appendonly yes`` and ``appendfsync everysec``.
Every write is appended to the AOF as it is acknowledged and the file is fsynced once a second,
so a Redis *process* crash (SIGKILL, OOM kill, a bug) loses nothing: the appended pages are
already in the operating system's page cache and reach the disk regardless. Only a power loss
or kernel crash of the Redis host can lose writes, and then at most about the last second of
acknowledged ones (a lost task acknowledgement only means Celery redelivers the task, which
``task_acks_late`` already requires tasks to tolerate). ``appendfsync always`` would
close that one-second window but costs an fsync per write, which multiplies the latency of every
task hand-off and state update; ``no`` leaves the flush to the kernel (typically ~30s). The data
directory (``$FLOE_HOME/redis``) is kept across restarts, so jobs survive ``floe up`` restarts.

Every child runs in its own process group (``start_new_session=True``): a Ctrl-C at the terminal
reaches only ``floe up``, which then stops the children: SIGTERM to each child's group (for a host
only to its ``floe worker`` leader, which gives its Celery worker a warm shutdown so a running task
can finish instead of having its pool process killed), up to 15 seconds' grace, then SIGKILL of
every group, which also takes any orphaned Celery pool process; Redis is stopped last. A second
Ctrl-C kills everything at once.

The package's modules: :mod:`~app.stack.errors` (:class:`StackError`), :mod:`~app.stack.ports`
(free ports, address helpers), :mod:`~app.stack.redis_server` (the private ``redis-server``),
:mod:`~app.stack.health` (gRPC and Celery health checks, waiting for process groups to go),
:mod:`~app.stack.local` (:class:`LocalStack` and its :class:`Child` processes) and
:mod:`~app.stack.runner` (``floe up``, :func:`local_stack` and the ``python -m app.stack probe``
health check). Everything public is re-exported here: import it from :mod:`app.stack`.
"""

from __future__ import annotations

from app.stack.errors import StackError
from app.stack.health import celery_pongs, celery_worker_name_prefix, grpc_serving
from app.stack.local import DEFAULT_WORKER_BASE_PORT, STOP_GRACE_SECONDS, Child, LocalStack
from app.stack.ports import free_port, free_port_block, port_is_free
from app.stack.redis_server import REDIS_START_TIMEOUT, RedisProcess, find_redis_server, start_redis
from app.stack.runner import local_stack, main, run_stack

__all__ = [
    "DEFAULT_WORKER_BASE_PORT",
    "REDIS_START_TIMEOUT",
    "STOP_GRACE_SECONDS",
    "Child",
    "LocalStack",
    "RedisProcess",
    "StackError",
    "celery_pongs",
    "celery_worker_name_prefix",
    "find_redis_server",
    "free_port",
    "free_port_block",
    "grpc_serving",
    "local_stack",
    "main",
    "port_is_free",
    "run_stack",
    "start_redis",
]
