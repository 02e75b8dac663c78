"""Receiving an upload: the multipart body parsed as it streams in, with python-multipart's
streaming parser, each file part spooled to a temporary file on disk and checked on the way.

Nothing here holds a whole file in memory. A file over the size limit is refused (413) as soon
as its bytes pass the limit; a type the settings do not allow (415) as soon as its part's
headers are read; a content that is not what its declared type says (415) as soon as enough of
it was seen. Every part is received and checked before the caller stores any of them. The
whole body is bounded before it gets here, by the request-limits middleware of every service
(taskhub_common.limits; the upload route's limit allows every file at its largest).
"""

import codecs
import contextlib
import mimetypes
import shutil
import tempfile
import unicodedata
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import BinaryIO
from urllib.parse import quote

import filetype
from anyio import CancelScope, to_thread
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, MultipartState, parse_options_header
from starlette.requests import ClientDisconnect

from files.errors import TooLarge, UnsupportedMediaType
from taskhub_common.errors import AppError, Unprocessable, invalid_field

FIELD = "files"
MAX_NAME_LENGTH = 255
# What filetype reads to recognise a format.
SNIFF_BYTES = 8192
# Bytes of a file gathered before they are written to its temporary file (in a worker thread).
WRITE_BATCH = 512 * 1024

# Types whose content is text: valid UTF-8 without NUL bytes. (No magic number to sniff.)
TEXT_TYPES = frozenset({"application/json", "application/xml"})
ZIP = "application/zip"
# Formats that are zip archives inside: one may sniff as the other.
ZIP_BASED = frozenset(
    {
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        "application/vnd.openxmlformats-officedocument.presentationml.presentation",
        "application/vnd.oasis.opendocument.text",
        "application/vnd.oasis.opendocument.spreadsheet",
        "application/vnd.oasis.opendocument.presentation",
        "application/epub+zip",
    }
)
# A sniffed type that is a variant of the declared one.
SNIFF_VARIANTS = {"image/png": frozenset({"image/apng"})}
# The stored name's extension per type, where the built-in table has none or several.
EXTENSIONS = {
    "image/png": ".png",
    "image/jpeg": ".jpg",
    "image/gif": ".gif",
    "image/webp": ".webp",
    "application/pdf": ".pdf",
    "text/plain": ".txt",
    "text/csv": ".csv",
    "application/zip": ".zip",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document": ".docx",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": ".xlsx",
}
# A user's file name never makes an executable look like an attachment of an allowed type.
EXECUTABLE_EXTENSIONS = frozenset(
    {
        *(".apk", ".app", ".bat", ".cmd", ".com", ".cpl", ".dll", ".exe", ".hta", ".jar", ".js"),
        *(".jse", ".lnk", ".msi", ".msp", ".pif", ".ps1", ".reg", ".scr", ".sh", ".vb", ".vbe"),
        *(".vbs", ".wsf", ".wsh"),
    }
)
# Python's built-in table only, so the answer does not depend on the machine's mime.types.
_TYPES = mimetypes.MimeTypes()


@dataclass(frozen=True)
class UploadLimits:
    max_file_size: int
    allowed_types: frozenset[str]
    max_files: int
    spool_dir: str | None = None


@dataclass(frozen=True)
class ReceivedFile:
    """One file of an upload, checked, its bytes in a temporary file."""

    original_filename: str
    content_type: str
    extension: str
    size: int
    path: Path


# Names and headers.


def clean_filename(raw: str) -> str:
    """The user's file name fit to keep as metadata: no folders, no control or format characters
    (CR, LF, NUL, bidi overrides), no line separators, whitespace collapsed, length capped."""
    name = unicodedata.normalize("NFC", raw).replace("\\", "/").rsplit("/", 1)[-1]
    kept = []
    for char in name:
        category = unicodedata.category(char)
        if category == "Zs" or char == "\t":
            kept.append(" ")
        elif category[0] != "C" and category not in ("Zl", "Zp"):
            kept.append(char)
    name = " ".join("".join(kept).split())
    if name.strip(".") == "":
        return "file"
    if len(name) > MAX_NAME_LENGTH:
        suffix = PurePosixPath(name).suffix
        if not 1 < len(suffix) <= 16:
            suffix = ""
        name = name[: MAX_NAME_LENGTH - len(suffix)].rstrip() + suffix
    return name


def content_disposition(filename: str) -> str:
    """`attachment` with an ASCII fallback name and the exact name in RFC 5987 form (RFC 6266);
    nothing in it can end the header or the quoted string."""
    fallback = unicodedata.normalize("NFKD", filename).encode("ascii", "ignore").decode("ascii")
    fallback = "".join(c for c in fallback if c.isprintable() and c not in '"\\').strip()
    encoded = quote(filename, safe="")
    return f"attachment; filename=\"{fallback or 'download'}\"; filename*=UTF-8''{encoded}"


def stored_extension(content_type: str) -> str:
    """The extension of the stored name: the verified type's, never the user's."""
    return EXTENSIONS.get(content_type) or _TYPES.guess_extension(content_type, strict=False) or ""


def _check_name(name: str, allowed: frozenset[str]) -> None:
    """A name must not claim an executable, nor a known type that is not allowed."""
    suffixes = [suffix.lower() for suffix in PurePosixPath(name).suffixes]
    if EXECUTABLE_EXTENSIONS.intersection(suffixes):
        raise UnsupportedMediaType(f"{name}: executable files are not accepted")
    named_type = _TYPES.guess_type(name, strict=False)[0] if suffixes else None
    if named_type is not None and named_type not in allowed:
        raise UnsupportedMediaType(f"{name}: files of type {named_type} are not accepted")


def is_text_type(content_type: str) -> bool:
    return content_type.startswith("text/") or content_type in TEXT_TYPES


def content_agrees(declared: str, head: bytes) -> bool:
    """Whether the first bytes of a binary file are of the declared type."""
    kind = filetype.guess(head)
    if kind is None:
        return False
    sniffed = kind.mime
    return (
        sniffed == declared
        or sniffed in SNIFF_VARIANTS.get(declared, ())
        # A zip-based office document may sniff as a plain zip, and is a zip.
        or (declared in ZIP_BASED and sniffed == ZIP)
        or (declared == ZIP and sniffed in ZIP_BASED)
    )


# The streaming receiver.


@dataclass
class _Part:
    """A file part: checked as its bytes arrive, which are written to disk in batches."""

    original_filename: str
    content_type: str
    path: Path
    size: int = 0
    head: bytearray = field(default_factory=bytearray)
    sniffed: bool = False
    text: codecs.IncrementalDecoder | None = None
    # Received and not yet on disk (at most about WRITE_BATCH bytes).
    pending: list[bytes] = field(default_factory=list)
    pending_size: int = 0
    handle: BinaryIO | None = None


# A write of what is pending: the part, its bytes, and whether the part is complete.
_Write = tuple[_Part, list[bytes], bool]


def _write_to_disk(writes: list[_Write]) -> None:
    """Runs in a worker thread."""
    for part, data, complete in writes:
        if part.handle is None:
            part.handle = part.path.open("wb")
        part.handle.writelines(data)
        if complete:
            part.handle.close()


class _Receiver:
    """python-multipart's callbacks: headers collected, file parts checked as their bytes pass
    (in the event loop: cheap), and their bytes queued for writing (in a worker thread, in
    batches, by receive_files). Its errors are the upload's answer."""

    def __init__(self, boundary: bytes, limits: UploadLimits, folder: Path) -> None:
        self.limits = limits
        self.folder = folder
        self.files: list[ReceivedFile] = []
        self.parts: list[_Part] = []
        self.part: _Part | None = None
        self.writes: list[_Write] = []
        self.headers: dict[bytes, bytes] = {}
        self.header_field = bytearray()
        self.header_value = bytearray()
        self.parser = MultipartParser(
            boundary,
            {
                "on_part_begin": self.on_part_begin,
                "on_header_field": self.on_header_field,
                "on_header_value": self.on_header_value,
                "on_header_end": self.on_header_end,
                "on_headers_finished": self.on_headers_finished,
                "on_part_data": self.on_part_data,
                "on_part_end": self.on_part_end,
            },
        )

    def write(self, chunk: bytes) -> None:
        try:
            self.parser.write(chunk)
        except FormParserError:
            raise Unprocessable("The multipart body is malformed") from None

    def take_writes(self) -> list[_Write]:
        """What is to be written now: completed parts, and the current one's bytes once a
        batch is full."""
        part = self.part
        if part is not None and part.pending_size >= WRITE_BATCH:
            self.writes.append((part, part.pending, False))
            part.pending, part.pending_size = [], 0
        writes, self.writes = self.writes, []
        return writes

    def finish(self) -> list[ReceivedFile]:
        if not self.files:
            raise missing_files("Field required")
        if self.parser.state != MultipartState.END or self.part is not None:
            raise Unprocessable("The multipart body ended early")
        return self.files

    def close(self) -> None:
        """Runs in a worker thread, whatever happened."""
        for part in self.parts:
            if part.handle is not None:
                part.handle.close()

    def on_part_begin(self) -> None:
        self.headers = {}

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self.header_field += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self.header_value += data[start:end]

    def on_header_end(self) -> None:
        self.headers[bytes(self.header_field).lower()] = bytes(self.header_value).strip(b" \t")
        self.header_field.clear()
        self.header_value.clear()

    def on_headers_finished(self) -> None:
        _, options = parse_options_header(self.headers.get(b"content-disposition"))
        if options.get(b"name") != FIELD.encode():
            return  # another field: ignored
        raw_name = options.get(b"filename")
        if raw_name is None:
            raise invalid_field(FIELD, "Each part named `files` must be a file")
        if len(self.files) >= self.limits.max_files:
            raise invalid_field(FIELD, f"At most {self.limits.max_files} files per upload")
        # Browsers send the name as UTF-8; the parser hands the header's bytes through latin-1.
        name = clean_filename(raw_name.decode("utf-8", errors="replace"))
        # RFC 7578: a part without a Content-Type is text/plain.
        declared_bytes, _ = parse_options_header(self.headers.get(b"content-type") or b"text/plain")
        declared = declared_bytes.decode("latin-1")
        if declared not in self.limits.allowed_types:
            raise UnsupportedMediaType(f"{name}: files of type {declared or '?'} are not accepted")
        _check_name(name, self.limits.allowed_types)
        self.part = _Part(name, declared, self.folder / str(len(self.parts)))
        self.parts.append(self.part)
        if is_text_type(declared):
            self.part.text = codecs.getincrementaldecoder("utf-8")()

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        part = self.part
        if part is None:
            return
        part.size += end - start
        if part.size > self.limits.max_file_size:
            raise TooLarge(
                f"{part.original_filename} is larger than the limit of "
                f"{self.limits.max_file_size} bytes"
            )
        chunk = data[start:end]
        if part.text is not None:
            self._check_text(part, chunk)
        elif not part.sniffed:
            part.head += chunk[: SNIFF_BYTES - len(part.head)]
            if len(part.head) >= SNIFF_BYTES:
                self._sniff(part)
        part.pending.append(chunk)
        part.pending_size += len(chunk)

    def on_part_end(self) -> None:
        part = self.part
        if part is None:
            return
        self.part = None
        if part.size == 0:
            raise invalid_field(FIELD, f"{part.original_filename} is empty")
        if part.text is not None:
            self._check_text(part, b"", final=True)
        elif not part.sniffed:
            self._sniff(part)
        self.writes.append((part, part.pending, True))
        part.pending, part.pending_size = [], 0
        self.files.append(
            ReceivedFile(
                original_filename=part.original_filename,
                content_type=part.content_type,
                extension=stored_extension(part.content_type),
                size=part.size,
                path=part.path,
            )
        )

    @staticmethod
    def _check_text(part: _Part, chunk: bytes, final: bool = False) -> None:
        try:
            part.text.decode(chunk, final)
            valid = b"\x00" not in chunk
        except UnicodeDecodeError:
            valid = False
        if not valid:
            raise UnsupportedMediaType(
                f"{part.original_filename}: the content is not {part.content_type} "
                "(UTF-8 text without NUL bytes)"
            )

    @staticmethod
    def _sniff(part: _Part) -> None:
        part.sniffed = True
        if not content_agrees(part.content_type, bytes(part.head)):
            raise UnsupportedMediaType(
                f"{part.original_filename}: the content is not {part.content_type}"
            )


def multipart_boundary(content_type: str | None) -> bytes:
    media_type, options = parse_options_header(content_type)
    boundary = options.get(b"boundary")
    if media_type != b"multipart/form-data" or not boundary:
        raise missing_files("A multipart/form-data body with a `files` part is required")
    return boundary


def missing_files(message: str) -> Unprocessable:
    """Shaped like FastAPI's error for a missing field."""
    return Unprocessable([{"type": "missing", "loc": ["body", FIELD], "msg": message}])


@contextlib.asynccontextmanager
async def receive_files(
    body: AsyncIterable[bytes],
    content_type: str | None,
    limits: UploadLimits,
) -> AsyncIterator[list[ReceivedFile]]:
    """Every file of a multipart body, received and checked, in temporary files that are
    removed when the block exits."""
    boundary = multipart_boundary(content_type)
    folder = Path(
        await to_thread.run_sync(
            lambda: tempfile.mkdtemp(prefix="taskhub-upload-", dir=limits.spool_dir)
        )
    )
    receiver = _Receiver(boundary, limits, folder)
    try:
        try:
            async for chunk in body:
                receiver.write(chunk)
                if writes := receiver.take_writes():
                    await to_thread.run_sync(_write_to_disk, writes)
        except ClientDisconnect:
            raise AppError("The upload was interrupted") from None
        files = receiver.finish()
        if writes := receiver.take_writes():
            await to_thread.run_sync(_write_to_disk, writes)
        yield files
    finally:
        # Shielded: a cancelled request still leaves no temporary files behind.
        with CancelScope(shield=True):
            await to_thread.run_sync(receiver.close)
            await to_thread.run_sync(lambda: shutil.rmtree(folder, ignore_errors=True))
