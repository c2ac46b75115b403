"""Every `--json` output is a public view: the wire's names, no bookkeeping fields."""

from __future__ import annotations

import json
from pathlib import Path

from bystroq.config import LoadedConfig
from tests.conftest import Invoke

SUBMISSION_KEYS = {
    "submissionID", "category", "state", "attempts", "queueID", "server", "worker",
    "progress", "skipped", "total", "percent", "etaS", "messages", "result", "reason",
    "traceback", "traceparent", "batch", "submittedAt",
    "startedAt", "finishedAt", "updatedAt", "runs",
}
TIMELINE_KEYS = {"at", "event", "attempt", "seq", "worker", "applied", "message"}
BATCH_KEYS = {"batchID", "category", "state", "reason", "total", "concurrency",
              "errorPolicy", "priority", "createdAt", "finishedAt"}
BATCH_STATUS_KEYS = {"batch", "counts", "done", "percent", "ratePerS", "etaS", "failures"}
TUBE_KEYS = {"server", "tube", "ready", "reserved", "delayed", "buried", "watching", "total"}
# What the store keeps for itself and never shows.
BOOKKEEPING = {"run_base", "runBase", "attempt_done", "attemptDone", "prior_runs",
               "priorRuns", "body", "fed", "watermarks", "submission_id", "queue_id"}


def _run_two_jobs(run: Invoke) -> None:
    submit = ("submit", "--tube", "echo", "--json")
    assert run(*submit, '{"submissionID": "a", "message": "m"}')[0] == 0
    assert run(*submit, '{"submissionID": 7, "fail": "boom"}')[0] == 0
    assert run("listen", "--tube", "echo", "--burst")[0] == 0
    code, out, _ = run("consume", "--burst", "--json")
    assert code == 0
    assert json.loads(out) == {"applied": 4, "malformed": 0, "rejected": 0,
                               "storeOutages": 0, "byEvent": {"started": 2, "completed": 1,
                                                              "failed": 1}}


def test_list_and_status_json_are_the_submission_views(records_cli: Invoke) -> None:
    _run_two_jobs(records_cli)
    code, out, _ = records_cli("list", "--json")
    assert code == 0
    rows = json.loads(out)
    assert all(set(row) == SUBMISSION_KEYS for row in rows)
    by_id = {row["submissionID"]: row for row in rows}
    assert set(by_id) == {"a", 7}  # the submissionID keeps its type
    assert (by_id["a"]["state"], by_id["a"]["result"]) == ("completed", {"message": "m"})
    assert by_id[7]["state"] == "failed" and "boom" in by_id[7]["reason"]

    code, out, _ = records_cli("status", "7", "--json")
    assert code == 0
    status = json.loads(out)
    assert set(status) == {"submission", "timeline"}
    assert set(status["submission"]) == SUBMISSION_KEYS
    assert status["submission"]["queueID"] == by_id[7]["queueID"]
    assert [set(e) for e in status["timeline"]] == [TIMELINE_KEYS] * 2
    assert [e["event"] for e in status["timeline"]] == ["started", "failed"]
    assert status["timeline"][1]["message"]["submissionID"] == 7
    assert not BOOKKEEPING & (set(status["submission"]) | set(by_id["a"]))


def test_batch_status_json_is_the_batch_status_view(
    records_cli: Invoke, tmp_path: Path
) -> None:
    path = tmp_path / "items.jsonl"
    path.write_text('{"message": "x"}\n{"fail": "no"}\n')
    code, out, _ = records_cli("batch", "create", "--tube", "echo", "--records-file",
                               str(path), "--json")
    assert code == 0
    created = json.loads(out)
    assert set(created) == BATCH_KEYS and created["total"] == 2
    code, out, _ = records_cli("batch", "status", created["batchID"], "--json")
    assert code == 0
    status = json.loads(out)
    assert set(status) == BATCH_STATUS_KEYS
    assert set(status["batch"]) == BATCH_KEYS
    assert status["batch"]["batchID"] == created["batchID"]
    assert status["counts"]["queued"] == 2 and status["done"] == 0
    code, out, _ = records_cli("batch", "list", "--json")
    assert code == 0 and [v["batch"]["batchID"] for v in json.loads(out)] == [
        created["batchID"]]
    code, out, _ = records_cli("batch", "cancel", created["batchID"], "--json")
    assert code == 0  # no worker runs: both jobs were queued, and are deleted
    assert json.loads(out) == {"batchID": created["batchID"], "deleted": 2, "requested": 0}


def test_stats_json_is_the_stats_view(records_cli: Invoke, config: LoadedConfig) -> None:
    assert records_cli("submit", "--tube", "echo", "--json", '{"submissionID": 1}')[0] == 0
    code, out, _ = records_cli("stats", "--json")
    assert code == 0
    stats = json.loads(out)
    assert set(stats) == {"tubes", "unreachable"} and stats["unreachable"] == []
    assert all(set(row) == TUBE_KEYS for row in stats["tubes"])
    echo = next(row for row in stats["tubes"] if row["tube"].endswith("echo"))
    assert (echo["ready"], echo["total"]) == (1, 1)


def test_peek_kick_and_cancel_json(records_cli: Invoke) -> None:
    code, out, _ = records_cli("submit", "--tube", "echo", "--json", '{"submissionID": "p"}',
                               "--delay", "60")
    queue_id = json.loads(out)["queueID"]
    code, out, _ = records_cli("peek", "--tube", "echo", "--state", "delayed", "--json")
    assert code == 0
    (peeked,) = json.loads(out)
    assert (peeked["queueID"], json.loads(peeked["body"])) == (queue_id, {"submissionID": "p"})
    code, out, _ = records_cli("cancel", "p", "--json")
    assert code == 0
    assert json.loads(out) | {"message": ""} == {"submissionID": "p", "result": "deleted",
                                                 "message": ""}
    code, out, _ = records_cli("kick", "--tube", "echo", "--json")
    assert code == 0 and [row["count"] for row in json.loads(out)] == [0]


def test_global_options_work_after_the_command(records_cli: Invoke, tmp_path: Path) -> None:
    """--config, --log-level and --json-logs are taken before or after the command name."""
    other = tmp_path / "other.yml"
    other.write_text("beanstalkd:\n  addresses: [127.0.0.1:1]\n  tubes: {}\n")
    code, _, err = records_cli("submit", "--tube", "echo", "--json", "{}", "--config",
                               str(other))
    assert code == 2 and "no category or submission tube named 'echo'" in err
    code, out, _ = records_cli("stats", "--log-level", "debug", "--json-logs", "--json")
    assert code == 0 and "tubes" in json.loads(out)


def test_json_logs_after_the_command(records_cli: Invoke) -> None:
    assert records_cli("submit", "--tube", "echo", "--json", '{"submissionID": 5}')[0] == 0
    code, _, err = records_cli("listen", "--tube", "echo", "--burst", "--json-logs",
                               "--log-level", "debug")  # a line a job is at debug
    assert code == 0
    logs = [json.loads(line) for line in err.splitlines() if line.strip()]
    assert any(entry["event"] == "job completed" and entry["submissionID"] == 5
               for entry in logs)


def test_list_says_when_more_rows_exist_and_times_say_their_zone(records_cli: Invoke) -> None:
    for n in range(3):
        assert records_cli("submit", "--tube", "echo", "--json",
                           f'{{"submissionID": "m{n}"}}')[0] == 0
    code, out, err = records_cli("list", "--limit", "2")
    assert code == 0 and "more exist" in err and "UTC" in out
    code, out, err = records_cli("list", "--limit", "3")
    assert code == 0 and "more exist" not in err
