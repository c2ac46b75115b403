"""A batch's records file, read as a stream and checked against the category's job Struct.

JSON lines (one object a line) or CSV (comma-separated, a header row of field names), both
UTF-8, with or without a byte-order mark. Only the record at hand is held in memory, so a
file of millions of records costs no more memory than one of ten (`create_batch` spools the
checked jobs to a temporary file, and stores them from there).

A record is refused, with file, line or row, column, what was wrong and how to fix it, when
it names a field the job Struct does not have (a `;`-separated CSV has one such column), a
CSV header names a column twice, a value does not fit its field, or a number is not finite
(NaN and infinity have no JSON form: every job would fail at the worker).
"""

from __future__ import annotations

import csv
import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import msgspec.inspect

from bystroq.errors import BatchError
from bystroq.messages import encode, record_key

ID_NAMES = ("submissionID", "submission_id")
_OTHER_ID_SPELLING = {"submissionID": "submissionId", "submissionId": "submissionID"}


@dataclass
class RecordsFile:
    """The jobs of one records file for one job Struct (see the module docstring)."""

    path: Path
    job_type: type[msgspec.Struct]
    batch_id: str
    params: Mapping[str, Any] = field(default_factory=dict)
    params_override: bool = False

    def __post_init__(self) -> None:
        fields = msgspec.structs.fields(self.job_type)
        self._attrs = {f.encode_name: f.name for f in fields}
        self._id_key = next((f.encode_name for f in fields if f.name in ID_NAMES),
                            "submissionID")
        # Keys a record may use: the Struct's, and the id in the other wire generation.
        self._known = {*self._attrs, *filter(None, [_OTHER_ID_SPELLING.get(self._id_key)])}
        info = msgspec.inspect.type_info(self.job_type)
        assert isinstance(info, msgspec.inspect.StructType)
        self._floats = {f.encode_name: f.name for f in info.fields if _may_be_float(f.type)}
        self._decoder = msgspec.json.Decoder(self.job_type)
        self._csv = self.path.suffix.lower() == ".csv"
        self._columns: dict[str, int] = {}
        for key in self.params:
            if key not in self._known:
                raise BatchError(f"--param {key}: {self._unknown(key)}; fix its name")

    def jobs(self) -> Iterator[tuple[str, str, bytes]]:
        """(where, submissionID, body) of every record, in file order, each checked."""
        records = self._csv_records() if self._csv else self._jsonl_records()
        for n, (where, data) in enumerate(records):
            yield where, *self._job(where, data, n)

    def rows_with(self, submission_id: str) -> list[str]:
        """Where the records with this submissionID are (for a message)."""
        return [where for where, sid, _ in self.jobs() if sid == submission_id]

    def _job(self, where: str, data: dict[str, Any], n: int) -> tuple[str, bytes]:
        params = self.params
        merged = data if not params else (
            {**data, **params} if self.params_override else {**params, **data})
        other = _OTHER_ID_SPELLING.get(self._id_key)
        if other in merged:  # the other generation of Bystro's wire names the same id
            value = merged.pop(other)
            if merged.setdefault(self._id_key, value) != value:
                raise BatchError(f"{where}: `{self._id_key}` and `{other}` differ; give the "
                                 "submission id once; nothing was created")
        merged.setdefault(self._id_key, f"{self.batch_id}-{n}")
        try:
            # CSV gives text: let "3" become an int field.
            job = msgspec.convert(merged, self.job_type, strict=not self._csv)
        except msgspec.ValidationError as exc:
            raise BatchError(self._invalid(where, exc, data)) from None
        for name, attr in self._floats.items():
            value = getattr(job, attr)
            if isinstance(value, float) and not math.isfinite(value):
                raise BatchError(f"{self._at(where, name)}: {data.get(name, value)!r} is not a "
                                 "finite number (JSON has no NaN or infinity); give a finite "
                                 "number; nothing was created")
        body = encode(job)
        try:
            self._decoder.decode(body)
        except msgspec.ValidationError as exc:  # e.g. a NaN inside a list
            raise BatchError(self._invalid(where, exc, data, " once written as JSON")) from None
        return record_key(getattr(job, self._attrs.get(self._id_key, "submissionID"))), body

    # -- messages ------------------------------------------------------------------------

    def _at(self, where: str, name: str) -> str:
        column = self._columns.get(name)
        if column is None:
            return f"{where}: field `{name}`"
        return f"{where}, column {column} (`{name}`)"

    def _unknown(self, name: str) -> str:
        return (f"not a field of {self.job_type.__name__} "
                f"(its fields: {', '.join(self._attrs)})")

    def _invalid(self, where: str, exc: msgspec.ValidationError, data: dict[str, Any],
                 when: str = "") -> str:
        text = str(exc)
        what, _, path = text.partition(" - at `$.")
        name = re.split(r"[.\[]", path.rstrip("`"))[0] if path else ""
        if not name:
            what = what.replace("Object missing required field", "missing required field")
            return f"{where}: {what}{when} (job type {self.job_type.__name__}); fix the " \
                   "record; nothing was created"
        value = f" ({data[name]!r})" if name in data else ""
        return (f"{self._at(where, name)}: {what}{value}{when} (job type "
                f"{self.job_type.__name__}); fix the value; nothing was created")

    # -- reading -------------------------------------------------------------------------

    def _lines(self) -> Iterator[str]:
        """The file's lines, as UTF-8 (a byte-order mark is dropped)."""
        with self.path.open(encoding="utf-8-sig", newline="") as lines:
            try:
                yield from lines
            except UnicodeDecodeError:
                raise BatchError(self._not_utf8()) from None

    def _not_utf8(self) -> str:
        """Where the file stops being UTF-8 (read again, line by line, to say so)."""
        with self.path.open("rb") as lines:
            for number, raw in enumerate(lines, 1):
                try:
                    raw.decode()
                except UnicodeDecodeError as exc:
                    return (f"{self.path}:{number}: not UTF-8 (byte {raw[exc.start]:#04x} at "
                            f"column {exc.start + 1}); save the file as UTF-8")
        return f"{self.path}: not UTF-8; save the file as UTF-8"

    def _jsonl_records(self) -> Iterator[tuple[str, dict[str, Any]]]:
        for number, line in enumerate(self._lines(), 1):
            if not line.strip():
                continue
            where = f"{self.path}:{number}"
            try:
                data = msgspec.json.decode(line)
            except msgspec.DecodeError as exc:
                raise BatchError(f"{where}: not valid JSON: {exc}; fix the line") from None
            if not isinstance(data, dict):
                raise BatchError(f"{where}: expected a JSON object, got "
                                 f"{type(data).__name__}; write one object a line")
            for key in data:
                if key not in self._known:
                    raise BatchError(f"{where}: field `{key}`: {self._unknown(key)}; "
                                     "rename or remove it")
            yield where, data

    def _csv_records(self) -> Iterator[tuple[str, dict[str, Any]]]:
        reader = csv.reader(self._lines())
        header = next(reader, None)
        if not header:
            raise BatchError(f"{self.path}: empty CSV file; expected a header row of field "
                             "names")
        self._check_header(header)
        for row in reader:
            if not row:
                continue
            where = f"{self.path}: row {reader.line_num}"
            if len(row) != len(header):
                raise BatchError(f"{where}: has {len(row)} columns, the header has "
                                 f"{len(header)} ({', '.join(header)}); quote values that "
                                 "contain commas")
            yield where, {name: value for name, value in zip(header, row, strict=True)
                          if value != ""}

    def _check_header(self, header: list[str]) -> None:
        where = f"{self.path}: row 1"
        self._columns = {}
        for column, name in enumerate(header, 1):
            if name in self._columns:
                raise BatchError(f"{where}: columns {self._columns[name]} and {column} are "
                                 f"both `{name}`; give each column its own name")
            if name not in self._known:
                separator = next((s for s in (";", "\t", "|") if s in name), None)
                if len(header) == 1 and separator is not None:
                    raise BatchError(f"{where}: one column `{name}`: the file looks "
                                     f"{separator!r}-separated; save it comma-separated")
                raise BatchError(f"{where}, column {column} (`{name}`): "
                                 f"{self._unknown(name)}; rename or remove the column")
            self._columns[name] = column


def _may_be_float(kind: msgspec.inspect.Type) -> bool:
    if isinstance(kind, msgspec.inspect.UnionType):
        return any(_may_be_float(t) for t in kind.types)
    return isinstance(kind, (msgspec.inspect.FloatType, msgspec.inspect.AnyType))
