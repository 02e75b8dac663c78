"""The export: the filtered tasks as an .xlsx (openpyxl write-only mode) or CSV, written row by
row as they come from the database, so memory does not grow with the number of rows."""

import asyncio
import csv
import io
import os
import tempfile
from collections.abc import AsyncIterator
from datetime import UTC, datetime

from openpyxl import Workbook
from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE
from sqlalchemy.engine import Row

from analytics.repository import AnalyticsRepository, Filters
from taskhub_common.db import Database

XLSX_MEDIA_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
COLUMNS = (
    "ID",
    "Title",
    "Description",
    "Status",
    "Priority",
    "Assignee",
    "Tags",
    "Due Date",
    "Created At",
    "Completed At",
)
# A spreadsheet runs a cell starting with one of these as a formula (OWASP "CSV injection").
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
BATCH_ROWS = 1000
CHUNK_BYTES = 64 * 1024


def neutralise(text: str | None) -> str | None:
    """Text a spreadsheet would run as a formula, made plain text by a leading apostrophe."""
    if text and text.startswith(FORMULA_STARTS):
        return "'" + text
    return text


def naive_utc(moment: datetime | None) -> datetime | None:
    """Spreadsheets have no time zones: the UTC wall time (the column headers say UTC nowhere,
    docs/analytics.md does)."""
    return moment.astimezone(UTC).replace(tzinfo=None) if moment else None


def cells(row: Row) -> list:
    return [
        str(row.id),
        neutralise(row.title),
        neutralise(row.description),
        row.status,
        row.priority,
        neutralise(row.assignee),
        neutralise(", ".join(row.tags)),
        naive_utc(row.due_date),
        naive_utc(row.created_at),
        naive_utc(row.completed_at),
    ]


async def _batches(database: Database, filters: Filters) -> AsyncIterator[list[Row]]:
    async with database.sessionmaker() as session:
        batch: list[Row] = []
        async for row in AnalyticsRepository(session).export_rows(filters):
            batch.append(row)
            if len(batch) == BATCH_ROWS:
                yield batch
                batch = []
        if batch:
            yield batch


async def csv_stream(database: Database, filters: Filters) -> AsyncIterator[bytes]:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(COLUMNS)
    async for batch in _batches(database, filters):
        for row in batch:
            values = cells(row)
            writer.writerows(
                [[value.isoformat() if isinstance(value, datetime) else value for value in values]]
            )
        yield buffer.getvalue().encode()
        buffer.seek(0)
        buffer.truncate()
    if buffer.tell():
        yield buffer.getvalue().encode()


def xml_safe(value: object) -> object:
    """Control characters XML cannot hold (a title may have them) as U+FFFD: openpyxl refuses
    them, and one such task made every export that included it a 500."""
    if isinstance(value, str):
        return ILLEGAL_CHARACTERS_RE.sub("\ufffd", value)
    return value


def _append(sheet, batch: list[Row]) -> None:
    for row in batch:
        sheet.append([xml_safe(value) for value in cells(row)])


async def xlsx_stream(database: Database, filters: Filters) -> AsyncIterator[bytes]:
    """Rows go to openpyxl's write-only sheet (kept in a temporary file, not in memory) batch by
    batch, in a worker thread so the event loop keeps serving; the finished workbook is then
    streamed from disk."""
    workbook = Workbook(write_only=True)
    sheet = workbook.create_sheet("Tasks")
    sheet.append(list(COLUMNS))
    async for batch in _batches(database, filters):
        await asyncio.to_thread(_append, sheet, batch)
    handle, path = tempfile.mkstemp(suffix=".xlsx")
    os.close(handle)
    try:
        await asyncio.to_thread(workbook.save, path)
        with open(path, "rb") as workbook_file:  # noqa: ASYNC230 - chunks read in a thread
            while chunk := await asyncio.to_thread(workbook_file.read, CHUNK_BYTES):
                yield chunk
    finally:
        os.unlink(path)
