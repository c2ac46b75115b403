"""Opening a records store: one-line errors, no credential printed, read-only stores."""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path

import pytest

from bystroq.errors import BystroqError
from bystroq.records import open_store
from tests.conftest import Invoke


def test_a_sqlite_path_that_cannot_be_made_is_one_line(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(BystroqError) as raised:
        open_store(f"sqlite:///{blocker / 'sub' / 'records.db'}")
    assert "cannot create the folder" in str(raised.value)
    assert "\n" not in str(raised.value)


@pytest.mark.parametrize("url", [
    "postgresql://bob:s3cr@tpw@127.0.0.1:5432/nodb",  # '@' in the password
    "postgresql://bob:s3cr@tpw@127.0.0.1:notaport/nodb",
    "postgresql://bob:s3cr:tpw@127.0.0.1:1/nodb",
    "postgresql://bob:s3crtpw@127.0.0.1:1/nodb?sslmode=bogus",
])
def test_a_bad_postgresql_url_never_prints_the_password(url: str) -> None:
    pytest.importorskip("psycopg")
    with pytest.raises(BystroqError) as raised:
        open_store(url)
    message = str(raised.value)
    assert "s3cr" not in message and "tpw" not in message, message
    assert message.startswith("postgresql://bob@127.0.0.1") and "\n" not in message


def test_read_only_commands_create_no_store(records_cli: Invoke, tmp_path: Path) -> None:
    missing = tmp_path / "nothing-here.db"
    code, _, err = records_cli("list", "--records", f"sqlite:///{missing}")
    assert code != 0 and "no records database at" in err and str(missing) in err
    assert not missing.exists()


def test_list_and_status_read_a_store_on_a_read_only_file_system(tmp_path: Path) -> None:
    mount = Path(f"/tmp/bystroq-ro-{uuid.uuid4().hex[:8]}")
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if made.returncode != 0:
        mount.rmdir()
        pytest.skip(f"cannot mount a file system here: {made.stderr.strip()}")
    try:
        url = f"sqlite:///{mount / 'records.db'}"
        with open_store(url) as store:
            store.record_queued("r1", "echo", 1, "127.0.0.1:11300")
        subprocess.run(["mount", "-o", "remount,ro", str(mount)], check=True)
        with open_store(url, read_only=True) as store:
            record = store.get("r1")
            assert record is not None and record.state == "queued"
            assert [r.submission_id for r in store.list()] == ["r1"]
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)
        mount.rmdir()
