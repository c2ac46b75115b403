"""The dashboard's Queues and Dead letters pages and their actions: pause and resume a
tube for a while, kick, purge (typing the tube's name to confirm); buried jobs with their
bodies and reasons, kicked or deleted one at a time or in bulk (bystroq.web.dashboard.bulk)
after a count."""

# Annotations are evaluated at definition (no `from __future__ import annotations`):
# FastAPI reads the handlers' annotations, which name aliases local to `routes`.

from typing import Annotated

import msgspec
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from bystroq.config import LoadedConfig
from bystroq.errors import UnknownCategory
from bystroq.ops import servers, tubes
from bystroq.ops.deadletters import BulkAction, count_dead, dead_letters
from bystroq.ops.servers import TubeStats, Unreachable
from bystroq.web.dashboard.access import Viewer, audit, read_form, viewer_of, writer_of
from bystroq.web.dashboard.actions import back
from bystroq.web.dashboard.bulk import BulkTasks
from bystroq.web.dashboard.render import Pages
from bystroq.web.problems import Problem, ProblemRoute
from bystroq.web.services import Services

MAX_PAUSE_S = 7 * 86_400
PAUSES = {"1 minute": 60, "10 minutes": 600, "1 hour": 3600, "1 day": 86_400}


def _category(config: LoadedConfig, name: str) -> str:
    try:
        return config.resolve(name).name
    except UnknownCategory:
        raise Problem(404, f"no category {name!r}") from None


def _int(form: dict[str, str], field: str, low: int, high: int) -> int:
    text = form.get(field, "").strip()
    if not text.isdigit() or not low <= int(text) <= high:
        raise Problem(422, f"`{field}` must be a whole number from {low} to {high}, "
                      f"not {text!r}")
    return int(text)


def _counts(counts: dict[str, int | Unreachable]) -> str:
    return ", ".join(f"{s}: {c.error}" if isinstance(c, Unreachable) else f"{s}: {c}"
                     for s, c in counts.items())


def routes(services: Services, pages: Pages, bulk: BulkTasks) -> APIRouter:
    router = APIRouter(route_class=ProblemRoute)
    config = services.config
    Who = Annotated[Viewer, Depends(viewer_of(services))]
    Writer = Annotated[Viewer, Depends(writer_of(services))]

    @router.get("/queues", name="dashboard_queues", response_class=HTMLResponse)
    def queues(request: Request, who: Who) -> HTMLResponse:
        rows = servers.tube_stats(config)
        categories = {t.submission: n for n, t in config.config.beanstalkd.tubes.items()}
        return pages.render(request, "queues.html", who, "Queues",
                            rows=[r for r in rows if isinstance(r, TubeStats)],
                            down=[r for r in rows if isinstance(r, Unreachable)],
                            categories=categories, pauses=PAUSES)

    @router.post("/actions/queue", name="dashboard_queue_action")
    async def queue_action(request: Request, who: Writer) -> Response:
        form = await read_form(request)
        tube, op = form.get("tube", ""), form.get("op", "")
        if tube not in servers.configured_tubes(config):
            raise Problem(404, f"no configured tube {tube!r}")

        def run() -> str:
            if op == "pause":
                seconds = _int(form, "seconds", 1, MAX_PAUSE_S)
                detail, done = f"{seconds} s", tubes.pause(config, tube, seconds)
                note = f"{tube} paused for {seconds} s ({_counts(done)})"
            elif op == "resume":
                detail, note = "", f"{tube} resumed ({_counts(tubes.pause(config, tube, 0))})"
            elif op == "kick":
                bound = _int(form, "bound", 1, 1_000_000)
                detail = f"bound {bound}"
                note = f"{tube}: kicked {_counts(servers.kick(config, tube, bound))}"
            elif op == "purge":
                if form.get("confirm", "") != tube:
                    raise Problem(422, f"to purge, type the tube's name ({tube}) in the "
                                  "confirmation field")
                detail = "confirmed"
                note = f"{tube}: purged {_counts(tubes.purge(config, tube))}"
            else:
                raise Problem(422, f"unknown queue action {op!r}; expected pause, resume, "
                              "kick or purge")
            audit(services, who, f"queue.{op}", tube, detail, note)
            return note

        return back(request, "dashboard_queues", await run_in_threadpool(run))

    @router.get("/dead", name="dashboard_dead", response_class=HTMLResponse)
    def dead(request: Request, who: Who, category: str | None = None,
             q: Annotated[str | None, Query(max_length=200)] = None,
             after: Annotated[str | None, Query(max_length=2000)] = None) -> HTMLResponse:
        names = sorted(config.config.beanstalkd.tubes)
        submission = {n: config.category(n).submission for n in names}
        buried = dict.fromkeys(names, 0)
        for row in servers.tube_stats(config, list(submission.values())):
            if isinstance(row, TubeStats):
                for n, t in submission.items():
                    buried[n] += row.buried if row.tube == t else 0
        # Without a choice: the category with the most buried jobs.
        name = _category(config, category) if category else max(
            names, key=lambda n: (buried[n], -names.index(n)))
        tube = submission[name]
        oldest = servers.buried_jobs(config, tube)
        letters = dead_letters(services.store, name, q or None, after or None)
        return pages.render(
            request, "dead.html", who, "Dead letters", categories=names, category=name,
            buried=buried,
            tube=tube, q=q or "", oldest=oldest, letters=letters,
            next_after=letters[-1].record.submission_id if len(letters) == 50 else None)

    @router.post("/actions/dead-one", name="dashboard_dead_one")
    async def dead_one(request: Request, who: Writer) -> Response:
        form = await read_form(request)
        name = _category(config, form.get("category", ""))
        tube, server, op = config.category(name).submission, form.get("server", ""), form.get(
            "op", "")
        queue_id = _int(form, "queueID", 0, 2**63)
        if op not in ("kick", "delete"):
            raise Problem(422, f"unknown action {op!r}; expected kick or delete")

        def run() -> str:
            target = f"{tube} job {queue_id} on {server}"
            try:
                tubes.act_on_buried(config, tube, server, queue_id, op == "delete")
                note = f"{target}: {'kicked' if op == 'kick' else 'deleted'}"
            except KeyError:
                raise Problem(404, f"no configured server {server!r}") from None
            except tubes.NotBuried:
                note = f"{target} is not buried any more"
            audit(services, who, f"dead.{op}", target, "", note)
            return note

        return back(request, "dashboard_dead", await run_in_threadpool(run), category=name)

    @router.get("/dead/confirm", name="dashboard_dead_confirm", response_class=HTMLResponse)
    def dead_confirm(request: Request, who: Who, category: str, op: str,
                     q: Annotated[str | None, Query(max_length=200)] = None) -> HTMLResponse:
        name = _category(config, category)
        if op not in ("kick", "delete"):
            raise HTTPException(422, f"unknown action {op!r}; expected kick or delete")
        tube = config.category(name).submission
        count = count_dead(config, services.store, name, tube, q or None)
        return pages.render(request, "dead_confirm.html", who, "Dead letters: confirm",
                            category=name, tube=tube, op=op, q=q or "", count=count)

    @router.post("/actions/dead-bulk", name="dashboard_dead_bulk")
    async def dead_bulk(request: Request, who: Writer) -> Response:
        form = await read_form(request)
        name = _category(config, form.get("category", ""))
        op = form.get("op", "")
        if op not in ("kick", "delete"):
            raise Problem(422, f"unknown action {op!r}; expected kick or delete")
        text = form.get("q") or None
        tube = config.category(name).submission
        total = _int(form, "count", 0, 2**63)
        task = bulk.start(who, name, tube, BulkAction(op), text, total)
        await run_in_threadpool(audit, services, who, f"dead.{op}-all", tube,
                                f"filter={text!r}" if text else "all",
                                f"started task {task.id} over {total} jobs")
        return back(request, "dashboard_dead_task", f"started: {op} {total} jobs",
                    id=task.id)

    @router.get("/dead/task", name="dashboard_dead_task", response_class=HTMLResponse)
    def dead_task(request: Request, who: Who, id: str) -> HTMLResponse:
        task = bulk.get(id)
        if task is None:
            return pages.missing(request, who, f"No bulk action {id!r} (they are kept "
                                 "until the server restarts).", "dashboard_dead")
        return pages.render(request, "dead_task.html", who, "Dead letters: progress",
                            task=task)

    @router.get("/dead/task.json", name="dashboard_dead_task_json")
    def dead_task_json(who: Who, id: str) -> Response:
        task = bulk.get(id)
        if task is None:
            raise Problem(404, f"no bulk action {id!r}")
        p = task.progress
        body = {"total": p.total, "done": p.done, "acted": p.acted, "skipped": p.skipped,
                "errors": p.errors, "finished": p.finished}
        return Response(msgspec.json.encode(body), media_type="application/json")

    return router
