"""A realistic category: annotate a file of variants.

The input is a tab-separated file of variants (`chrom  pos  ref  alt`, `#` comments
allowed); each valid row is annotated (variant type, transition/transversion) and written
to `<outputBasePath>.annotation.tsv`. Rows that do not parse are skipped and counted.
Progress is reported as it goes; the completed message carries the totals, so counts stay
right even if progress events are lost.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec

from bystroq import (
    BaseMessage,
    CompletedJobMessage,
    ProgressPublisher,
    SubmittedJobMessage,
    get_progress_reporter,
)

TRANSITIONS = {frozenset("AG"), frozenset("CT")}
BASES = set("ACGT")


class AnnotationJobData(BaseMessage, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Bystro's annotation job: where the input is, where to write, which assembly."""

    inputFilePath: str
    outputBasePath: str
    assembly: str = "hg38"


class AnnotationTotals(msgspec.Struct, frozen=True):
    """What the handler returns and the completed message carries."""

    records: int
    annotated: int
    skipped: int
    outputFile: str


class AnnotationCompleted(CompletedJobMessage, frozen=True, kw_only=True):
    results: AnnotationTotals


job_data_type = AnnotationJobData


def annotate(chrom: str, pos: str, ref: str, alt: str) -> list[str] | None:
    """One row's annotation, or None if the row is not a variant we understand."""
    ref, alt = ref.upper(), alt.upper()
    if not pos.isdigit() or not ref or not alt or not set(ref + alt) <= BASES:
        return None
    if len(ref) == len(alt) == 1:
        kind = "SNP"
        change = "transition" if frozenset(ref + alt) in TRANSITIONS else "transversion"
    elif len(ref) > len(alt):
        kind, change = "DEL", ""
    elif len(ref) < len(alt):
        kind, change = "INS", ""
    else:
        kind, change = "MNP", ""
    return [chrom, pos, ref, alt, kind, change]


def handler_fn(publisher: ProgressPublisher, job: AnnotationJobData) -> AnnotationTotals:
    source = Path(job.inputFilePath)
    if not source.is_file():
        raise FileNotFoundError(f"input file {source} does not exist")
    target = Path(f"{job.outputBasePath}.annotation.tsv")
    target.parent.mkdir(parents=True, exist_ok=True)
    reporter = get_progress_reporter(publisher, update_interval=1000, min_interval_s=0.5)
    records = annotated = 0
    with source.open() as rows, target.open("w") as out:
        out.write("chrom\tpos\tref\talt\ttype\tchange\n")
        for line in rows:
            if not line.strip() or line.startswith("#"):
                continue
            records += 1
            fields = line.rstrip("\n").split("\t")
            row = annotate(*fields[:4]) if len(fields) >= 4 else None
            if row is None:
                reporter.increment_skipped(1)
                continue
            out.write("\t".join(row) + "\n")
            annotated += 1
            reporter.increment(1)
    return AnnotationTotals(records, annotated, records - annotated, str(target))


def submit_msg_fn(job: AnnotationJobData) -> SubmittedJobMessage:
    return SubmittedJobMessage(submissionID=job.submissionID)


def completed_msg_fn(job: AnnotationJobData, result: Any) -> AnnotationCompleted:
    return AnnotationCompleted(submissionID=job.submissionID, results=result)
