"""Bulk actions on dead letters, run in a thread of their own while the page shows how far
they got: no cap on their size, and no request waits for them to end."""

from __future__ import annotations

import itertools
import threading
import time
from dataclasses import dataclass, field

from bystroq.ops.deadletters import BulkAction, BulkProgress, run_bulk
from bystroq.web.dashboard.access import Viewer, audit
from bystroq.web.services import Services

KEPT = 100  # finished tasks remembered for their pages
PAST = {BulkAction.KICK: "kicked", BulkAction.DELETE: "deleted"}


@dataclass
class BulkTask:
    id: str
    who: str
    category: str
    tube: str
    action: BulkAction
    text: str | None
    progress: BulkProgress
    started_at: float = field(default_factory=time.time)
    finished_at: float | None = None


class BulkTasks:
    """The bulk actions of one dashboard: started, and looked up by id."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self._tasks: dict[str, BulkTask] = {}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self, who: Viewer, category: str, tube: str, action: BulkAction,
              text: str | None, total: int) -> BulkTask:
        with self._lock:
            task = BulkTask(f"{int(time.time())}-{next(self._ids)}", who.name, category,
                            tube, action, text, BulkProgress(total))
            self._tasks[task.id] = task
            while len(self._tasks) > KEPT:
                oldest = next(iter(self._tasks))
                if not self._tasks[oldest].progress.finished:
                    break
                del self._tasks[oldest]
        thread = threading.Thread(target=self._run, args=(task, who),
                                  name=f"bystroq-bulk-{task.id}", daemon=True)
        self._threads = [t for t in self._threads if t.is_alive()] + [thread]
        thread.start()
        return task

    def _run(self, task: BulkTask, who: Viewer) -> None:
        services = self.services
        try:
            run_bulk(services.config, services.store, task.category, task.tube, task.action,
                     task.text, task.progress, self._stop)
            p = task.progress
            outcome = (f"{p.acted} {PAST[task.action]}, {p.skipped} no longer buried, "
                       f"{p.errors} server errors")
        except Exception as exc:
            task.progress.errors += 1
            outcome = f"stopped: {str(exc) or type(exc).__name__}"
        task.finished_at = time.time()
        task.progress.finished = True
        audit(services, who, f"dead.{task.action.value}-done", task.tube,
              f"filter={task.text!r}" if task.text else "all", outcome)

    def get(self, task_id: str) -> BulkTask | None:
        with self._lock:
            return self._tasks.get(task_id)

    def close(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=10)
