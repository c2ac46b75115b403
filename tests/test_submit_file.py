"""`bystroq submit --file` with files people really have, checked whole before any put,
and resumable after an interruption."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bystroq.config import LoadedConfig
from bystroq.ops.submit import SLICE, SubmitStopped, check_job, submit_jobs
from bystroq.records import Store
from tests.conftest import Invoke, Tubes


def _lines(path: Path, jobs: list[dict[str, object]], prefix: bytes = b"") -> Path:
    path.write_bytes(prefix + b"".join(json.dumps(j).encode() + b"\n" for j in jobs))
    return path


def test_a_file_with_a_byte_order_mark_is_read(records_cli: Invoke, config: LoadedConfig,
                                               tubes: Tubes, tmp_path: Path) -> None:
    path = _lines(tmp_path / "excel.jsonl", [{"submissionID": "b1"}, {"submissionID": "b2"}],
                  prefix=b"\xef\xbb\xbf")
    code, out, err = records_cli("submit", "--tube", "echo", "--file", str(path))
    assert code == 0, err
    assert [json.loads(line)["submissionID"] for line in out.splitlines()] == ["b1", "b2"]


def test_a_latin1_file_is_one_line_naming_the_line(records_cli: Invoke, config: LoadedConfig,
                                                   tubes: Tubes, tmp_path: Path) -> None:
    path = tmp_path / "latin1.jsonl"
    path.write_bytes(b'{"submissionID": "ok"}\n{"submissionID": "caf\xe9"}\n')
    code, _, err = records_cli("submit", "--tube", "echo", "--file", str(path))
    assert code == 2 and f"{path}:2: not UTF-8 text" in err and "Traceback" not in err
    assert tubes.counts(config.category("echo").submission)["ready"] == 0


def test_a_line_too_big_is_named_before_any_put(records_cli: Invoke, config: LoadedConfig,
                                                tubes: Tubes, tmp_path: Path) -> None:
    path = _lines(tmp_path / "big.jsonl", [{"submissionID": "small"},
                                           {"submissionID": "big", "message": "x" * (1 << 20)},
                                           {"submissionID": "after"}])
    code, _, err = records_cli("submit", "--tube", "echo", "--file", str(path))
    assert code == 2 and f"{path}:2: the job is" in err and "max-job-size" in err
    assert tubes.counts(config.category("echo").submission)["ready"] == 0


def test_skip_resumes_after_the_first_n(records_cli: Invoke, config: LoadedConfig,
                                        tubes: Tubes, tmp_path: Path) -> None:
    path = _lines(tmp_path / "four.jsonl", [{"submissionID": f"s{n}"} for n in range(4)])
    code, out, _ = records_cli("submit", "--tube", "echo", "--file", str(path), "--skip", "2")
    assert code == 0
    assert [json.loads(line)["submissionID"] for line in out.splitlines()] == ["s2", "s3"]
    assert tubes.counts(config.category("echo").submission)["ready"] == 2


def test_a_stopped_submit_says_how_to_resume_and_every_job_put_has_its_record(
    config: LoadedConfig, store: Store, tubes: Tubes
) -> None:
    total = 2 * SLICE + SLICE // 2
    jobs = [check_job(None, json.dumps({"submissionID": f"j{n}"}).encode(), f"f:{n + 1}")
            for n in range(total)]
    asked = []

    def stop() -> bool:  # Ctrl-C lands while the first slice is being put
        asked.append(1)
        return len(asked) > 1

    put = []
    with pytest.raises(SubmitStopped,
                       match=f"submitted {SLICE} of {total}; resume with --skip {SLICE}"):
        for handle, _ in submit_jobs(config, "echo", jobs, store, stop=stop):
            put.append(handle)
    assert len(put) == SLICE == tubes.counts(config.category("echo").submission)["ready"]
    assert store.count_by_state() == {"queued": SLICE}
