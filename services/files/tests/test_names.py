"""File names and the Content-Disposition header, whatever characters a name arrives with
(a stored name may come from any client, not only a well-behaved multipart encoder)."""

import re
from urllib.parse import unquote

import pytest

from files.upload import clean_filename, content_agrees, content_disposition, stored_extension

from .conftest import DOCX, EXE, PDF, PNG, ZIP


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("report.pdf", "report.pdf"),
        ("C:\\Users\\me\\Desktop\\report.pdf", "report.pdf"),
        ("../../etc/passwd", "passwd"),
        ("a\r\nSet-Cookie: x=1.txt", "aSet-Cookie: x=1.txt"),
        ("nul\x00byte.txt", "nulbyte.txt"),
        ("bidi\u202egnp.exe", "bidignp.exe"),
        ("zero\u200bwidth.txt", "zerowidth.txt"),
        ("line\u2028sep\u2029.txt", "linesep.txt"),
        ("  many \t  spaces\u00a0here .txt ", "many spaces here .txt"),
        ("caf\u0065\u0301.txt", "caf\u00e9.txt"),
        ("日本語の資料.pdf", "日本語の資料.pdf"),
        ("..", "file"),
        ("", "file"),
        ("\r\n", "file"),
        ("x" * 300 + ".xlsx", "x" * 250 + ".xlsx"),
        ("y" * 300, "y" * 255),
    ],
)
def test_clean_filename(raw: str, clean: str) -> None:
    assert clean_filename(raw) == clean
    assert len(clean_filename(raw)) <= 255


DISPOSITION = re.compile(
    r'attachment; filename="(?P<fallback>[^"\\]*)"; filename\*=UTF-8\'\'(?P<encoded>[^;\s]+)'
)


@pytest.mark.parametrize(
    "name",
    [
        'quote"and\\backslash.txt',
        "cr\rlf\n.txt",
        "semi;colon, comma.txt",
        "percent%20name.txt",
        "résumé 日本.pdf",
        "\u202eexe.png",
        '"; filename="evil.exe',
    ],
)
def test_content_disposition_is_one_safe_header(name: str) -> None:
    value = content_disposition(name)
    assert value.isascii() and value.isprintable(), "no CR, LF or other control characters"
    match = DISPOSITION.fullmatch(value)
    assert match, value
    assert '"' not in match["fallback"] and "\\" not in match["fallback"]
    # RFC 5987 attr-chars only, and decoding gives the exact name back.
    assert re.fullmatch(r"[A-Za-z0-9!#$&+.^_`|~%-]+", match["encoded"])
    assert unquote(match["encoded"], errors="strict") == name


def test_content_disposition_ascii_fallback() -> None:
    assert content_disposition("résumé.pdf") == (
        "attachment; filename=\"resume.pdf\"; filename*=UTF-8''r%C3%A9sum%C3%A9.pdf"
    )
    assert content_disposition("日本.pdf").startswith('attachment; filename=".pdf";')
    assert content_disposition("日本").startswith('attachment; filename="download";')


def test_sniffing() -> None:
    assert content_agrees("image/png", PNG)
    assert content_agrees("application/pdf", PDF)
    assert content_agrees("application/zip", ZIP)
    docx = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
    assert content_agrees(docx, DOCX) and content_agrees("application/zip", DOCX)
    assert not content_agrees("image/png", EXE)
    assert not content_agrees("image/jpeg", PNG)
    assert not content_agrees("application/pdf", b"plain words")


def test_stored_extensions_come_from_the_type() -> None:
    assert stored_extension("image/jpeg") == ".jpg"
    assert stored_extension("text/plain") == ".txt"
    assert stored_extension(
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
    ) == (".xlsx")
