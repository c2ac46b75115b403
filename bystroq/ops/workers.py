"""Live workers: list them from the store's table, and quiet or stop one through its
control tube (bystroq.worker.control)."""

from __future__ import annotations

import enum
import time

from bystroq.config import LoadedConfig
from bystroq.control import QuietRequest, StopRequest, control_tube
from bystroq.errors import BystroqError, ServersUnavailable, UnknownWorker
from bystroq.messages import encode
from bystroq.records.store import WorkerReader
from bystroq.records.views import WorkerView, worker_view
from bystroq.servers import CONNECTION_ERRORS, Connection, servers_of

# A control message waits this long for its worker to take it (TTR once it is reserved).
REQUEST_TTR_S = 60


class WorkerAction(str, enum.Enum):
    QUIET = "quiet"  # stop reserving, finish running jobs, stay
    STOP = "stop"  # as on SIGTERM: drain, then exit


def list_workers(store: WorkerReader, *, include_gone: bool = False,
                 category: str | None = None, now: float | None = None) -> list[WorkerView]:
    """The workers the table holds: the alive ones, or (`include_gone`) every one."""
    now = time.time() if now is None else now
    views = [worker_view(row, now) for row in store.workers(category)]
    return views if include_gone else [view for view in views if view.alive]


def find_worker(store: WorkerReader, worker_id: str) -> WorkerView:
    row = store.worker(worker_id)
    if row is None:
        raise UnknownWorker(f"no worker {worker_id!r} in {store.url}; list them with "
                            f"`bystroq workers --all`")
    return worker_view(row)


def ask_worker(config: LoadedConfig, store: WorkerReader, worker_id: str,
               action: WorkerAction, reason: str | None = None) -> WorkerView:
    """Put a quiet or stop request on the worker's control tube (on the first server
    that takes it: the worker watches its tube on every server). A worker that is not
    alive is refused: nothing would ever take the request."""
    view = find_worker(store, worker_id)
    if not view.alive:
        raise BystroqError(f"worker {worker_id} is {view.state} (last seen "
                           f"{time.time() - view.last_seen_at:.0f} s ago): nothing to "
                           f"{action.value}")
    request = (QuietRequest() if action is WorkerAction.QUIET else StopRequest())
    if reason is not None:
        request = type(request)(reason=reason)
    body = encode(request)
    errors = []
    for server in servers_of(config.addresses):
        conn = Connection(server, use=control_tube(worker_id))
        try:
            conn.client.put(body, ttr=REQUEST_TTR_S)
            return view
        except CONNECTION_ERRORS as exc:
            errors.append(f"{server.name}: {exc or type(exc).__name__}")
        finally:
            conn.close()
    raise ServersUnavailable(f"no server took the {action.value} request for worker "
                             f"{worker_id} ({'; '.join(errors)})")
