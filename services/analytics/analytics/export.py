"""The export: the filtered tasks as an .xlsx or CSV, written and sent batch by batch as the
rows come from the database, so memory does not grow with the number of rows and the first
bytes leave at once (decision 0064)."""

import asyncio
import csv
import io
import zipfile
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from xml.sax.saxutils import escape

from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE
from openpyxl.utils import get_column_letter
from openpyxl.utils.datetime import to_excel
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


# The parts of a workbook of one sheet, "Tasks", whose rows are streamed; style 1 is a date.
MAIN = "http://schemas.openxmlformats.org/spreadsheetml/2006/main"
RELATIONSHIPS = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"
PACKAGE = "http://schemas.openxmlformats.org/package/2006"
XML_HEAD = '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
FIXED_PARTS = {
    "[Content_Types].xml": (
        f'<Types xmlns="{PACKAGE}/content-types">'
        '<Default Extension="rels" '
        'ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
        '<Default Extension="xml" ContentType="application/xml"/>'
        '<Override PartName="/xl/workbook.xml" ContentType="application/'
        'vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml"/>'
        '<Override PartName="/xl/worksheets/sheet1.xml" ContentType="application/'
        'vnd.openxmlformats-officedocument.spreadsheetml.worksheet+xml"/>'
        '<Override PartName="/xl/styles.xml" ContentType="application/'
        'vnd.openxmlformats-officedocument.spreadsheetml.styles+xml"/>'
        "</Types>"
    ),
    "_rels/.rels": (
        f'<Relationships xmlns="{PACKAGE}/relationships">'
        f'<Relationship Id="rId1" Type="{RELATIONSHIPS}/officeDocument" '
        'Target="xl/workbook.xml"/></Relationships>'
    ),
    "xl/workbook.xml": (
        f'<workbook xmlns="{MAIN}" xmlns:r="{RELATIONSHIPS}">'
        '<sheets><sheet name="Tasks" sheetId="1" r:id="rId1"/></sheets></workbook>'
    ),
    "xl/_rels/workbook.xml.rels": (
        f'<Relationships xmlns="{PACKAGE}/relationships">'
        f'<Relationship Id="rId1" Type="{RELATIONSHIPS}/worksheet" '
        'Target="worksheets/sheet1.xml"/>'
        f'<Relationship Id="rId2" Type="{RELATIONSHIPS}/styles" Target="styles.xml"/>'
        "</Relationships>"
    ),
    "xl/styles.xml": (
        f'<styleSheet xmlns="{MAIN}">'
        '<numFmts count="1"><numFmt numFmtId="164" formatCode="yyyy-mm-dd hh:mm:ss"/></numFmts>'
        '<fonts count="1"><font><sz val="11"/><name val="Calibri"/></font></fonts>'
        '<fills count="2"><fill><patternFill patternType="none"/></fill>'
        '<fill><patternFill patternType="gray125"/></fill></fills>'
        '<borders count="1"><border><left/><right/><top/><bottom/><diagonal/></border></borders>'
        '<cellStyleXfs count="1"><xf numFmtId="0" fontId="0" fillId="0" borderId="0"/>'
        "</cellStyleXfs>"
        '<cellXfs count="2"><xf numFmtId="0" fontId="0" fillId="0" borderId="0" xfId="0"/>'
        '<xf numFmtId="164" fontId="0" fillId="0" borderId="0" xfId="0" '
        'applyNumberFormat="1"/></cellXfs>'
        '<cellStyles count="1"><cellStyle name="Normal" xfId="0" builtinId="0"/></cellStyles>'
        "</styleSheet>"
    ),
}
SHEET = "xl/worksheets/sheet1.xml"
SHEET_HEAD = f'<worksheet xmlns="{MAIN}"><sheetData>'
SHEET_TAIL = "</sheetData></worksheet>"
LETTERS = [get_column_letter(index) for index in range(1, len(COLUMNS) + 1)]


def xml_text(text: str) -> str:
    """Text as XML holds it: control characters XML cannot hold (a title may have them) as
    U+FFFD (one such task once made every export that included it a 500), markup escaped."""
    return escape(ILLEGAL_CHARACTERS_RE.sub("\ufffd", text))


def xml_row(number: int, values: list) -> str:
    """One <row>: text as inline strings, datetimes as serial numbers in the date style, no
    cell for an empty value."""
    parts = [f'<row r="{number}">']
    for letter, value in zip(LETTERS, values, strict=True):
        if value is None:
            continue
        if isinstance(value, datetime):
            parts.append(f'<c r="{letter}{number}" s="1"><v>{to_excel(value)!r}</v></c>')
        else:
            parts.append(
                f'<c r="{letter}{number}" t="inlineStr"><is>'
                f'<t xml:space="preserve">{xml_text(value)}</t></is></c>'
            )
    parts.append("</row>")
    return "".join(parts)


class _Chunks:
    """What the zip writer writes, held until the response takes it (the zip writer sees an
    unseekable file, so it writes each entry's sizes after its data)."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def write(self, data: bytes) -> int:
        self.parts.append(bytes(data))
        return len(data)

    def flush(self) -> None:
        pass

    def take(self) -> bytes:
        taken = b"".join(self.parts)
        self.parts.clear()
        return taken


async def xlsx_stream(database: Database, filters: Filters) -> AsyncIterator[bytes]:
    """The workbook is written as the rows come and sent as it is written: the sheet's XML is
    compressed into the zip batch by batch (in a worker thread, so the event loop keeps
    serving) and each batch's bytes go out at once. Memory holds one batch; the first bytes
    leave before the last row is read (a gateway waiting for them does not time out)."""
    chunks = _Chunks()
    archive = zipfile.ZipFile(chunks, "w", compression=zipfile.ZIP_DEFLATED)
    for name, xml in FIXED_PARTS.items():
        archive.writestr(name, XML_HEAD + xml)
    sheet = archive.open(SHEET, "w", force_zip64=True)
    sheet.write((XML_HEAD + SHEET_HEAD + xml_row(1, list(COLUMNS))).encode())
    yield chunks.take()
    number = 1

    def write(batch: list[Row], first: int) -> None:
        rows = (xml_row(first + offset, cells(row)) for offset, row in enumerate(batch))
        sheet.write("".join(rows).encode())

    async for batch in _batches(database, filters):
        await asyncio.to_thread(write, batch, number + 1)
        number += len(batch)
        if data := chunks.take():
            yield data
    sheet.write(SHEET_TAIL.encode())
    sheet.close()
    archive.close()
    yield chunks.take()
