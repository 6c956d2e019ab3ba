"""Employer names from the Crossroads Bank for Enterprises' open data (KBO / BCE).

Declarations name an employer by its enterprise number; students know it by its name.
The federal public service Economy publishes every registered entity's names each month
as a zip of CSV files (the "KBO Open Data" export). :func:`import_export` streams two of
its files into PostgreSQL with ``COPY``:

* ``enterprise.csv``: ``"EnterpriseNumber","Status","JuridicalSituation",
  "TypeOfEnterprise","JuridicalForm","JuridicalFormCAC","StartDate"``, one row per
  enterprise, the number written ``"0403.170.701"``;
* ``denomination.csv``: ``"EntityNumber","Language","TypeOfDenomination","Denomination"``,
  one row per name; ``Language`` 0 unknown, 1 French, 2 Dutch, 3 German, 4 English;
  ``TypeOfDenomination`` ``001`` the official name, ``002`` its abbreviation, ``003`` a
  commercial name, ``004`` a branch name. The entity is an enterprise or an
  establishment unit (``2.xxx.xxx.xxx``); the latter are counted and left out, since
  declarations name enterprises.

A full export replaces every row in one transaction, so readers see the previous names
until the new ones are committed. Every row that cannot be read is refused with its file,
line and reason (counted, the first ones kept for the report); nothing is dropped
silently.

:func:`employer_names` looks names up for many numbers at once (one query per page); the
rule is the official name in the student's language, else the official name in another
language, else any other name; :func:`employer_label` is the fallback every page shows
when the export has no name: the formatted enterprise number.
"""

from __future__ import annotations

import contextlib
import csv
import zipfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import asyncpg

from schemas.i18n import Language
from schemas.identifiers import format_enterprise_number, is_valid_enterprise_number

#: The export's language codes (its ``code.csv``, category ``Language``).
KBO_LANGUAGE_CODES: dict[Language, int] = {"fr": 1, "nl": 2, "de": 3, "en": 4}
#: ``TypeOfDenomination`` of the official name.
OFFICIAL_NAME = 1
#: Longest name kept: the register's own limit is far below; a longer value is a broken line.
MAX_NAME_LENGTH = 1000
#: Refusals kept with their reason for the report (all of them are counted).
REFUSALS_KEPT = 20

ENTERPRISE_FILE = "enterprise.csv"
DENOMINATION_FILE = "denomination.csv"
ENTERPRISE_COLUMNS = ("EnterpriseNumber", "Status")
DENOMINATION_COLUMNS = ("EntityNumber", "Language", "TypeOfDenomination", "Denomination")

#: Called with (file name, bytes read so far, bytes in the file) as the import advances.
OnProgress = Callable[[str, int, int], None]


class ExportError(ValueError):
    """The path is not a KBO open-data export (missing file, missing column)."""


@dataclass
class ImportReport:
    """What an import loaded and what it refused, per file."""

    enterprises: int = 0
    names: int = 0
    #: Denominations of establishment units, left out on purpose (not an error).
    establishment_names: int = 0
    refused: int = 0
    #: The first :data:`REFUSALS_KEPT` refusals as ``file:line: reason``.
    refusals: list[str] = field(default_factory=list)

    def refuse(self, file: str, line: int, reason: str) -> None:
        self.refused += 1
        if len(self.refusals) < REFUSALS_KEPT:
            self.refusals.append(f"{file}:{line}: {reason}")


# -- reading the export --------------------------------------------------------------------


@contextlib.contextmanager
def _opened_export(path: Path) -> Iterator[Callable[[str], tuple[IO[bytes], int]]]:
    """An opener of the export's files by name, for a zip file or a folder of CSV files.

    The opener returns the binary stream and its uncompressed size (for the progress).
    In a zip the files may sit in a folder of their own; the first of that name is read.
    """
    if path.is_dir():

        def open_in_folder(name: str) -> tuple[IO[bytes], int]:
            member = path / name
            if not member.is_file():
                raise ExportError(f"{path} has no {name}: not a KBO open-data export")
            return member.open("rb"), member.stat().st_size

        yield open_in_folder
        return
    if not zipfile.is_zipfile(path):
        raise ExportError(f"{path} is neither a folder nor a zip file")
    with zipfile.ZipFile(path) as archive:
        by_name: dict[str, zipfile.ZipInfo] = {}
        for info in archive.infolist():
            by_name.setdefault(Path(info.filename).name, info)

        def open_in_zip(name: str) -> tuple[IO[bytes], int]:
            info = by_name.get(name)
            if info is None:
                raise ExportError(f"{path} has no {name}: not a KBO open-data export")
            return archive.open(info), info.file_size

        yield open_in_zip


def _rows(
    opener: Callable[[str], tuple[IO[bytes], int]],
    name: str,
    columns: Sequence[str],
    on_progress: OnProgress | None,
) -> Iterator[tuple[int, list[str]]]:
    """(line number, the wanted columns) of every data row of one CSV file, streaming.

    Lines are decoded one at a time, so the memory used does not grow with the file; the
    csv module still reads a quoted field across lines. The header must name every wanted
    column (the export's column order is not relied upon).
    """
    stream, size = opener(name)
    read = 0

    def lines() -> Iterator[str]:
        nonlocal read
        for raw in stream:
            read += len(raw)
            # utf-8-sig only matters for the first line; a BOM elsewhere would be data.
            yield raw.decode("utf-8-sig" if read == len(raw) else "utf-8", errors="replace")

    with stream:
        reader = csv.reader(lines())
        header = next(reader, None)
        if header is None:
            raise ExportError(f"{name} is empty")
        missing = [c for c in columns if c not in header]
        if missing:
            raise ExportError(f"{name} lacks the column(s) {', '.join(missing)}")
        wanted = [header.index(c) for c in columns]
        width = max(wanted) + 1
        for row in reader:
            if len(row) < width:
                yield reader.line_num, []
            else:
                yield reader.line_num, [row[i] for i in wanted]
            if on_progress is not None and reader.line_num % 20_000 == 0:
                on_progress(name, read, size)
        if on_progress is not None:
            on_progress(name, size, size)


def _enterprise_digits(written: str) -> str | None:
    """The 10 digits of ``"0403.170.701"``, or None when it is no valid enterprise number.

    Inlined rather than :func:`schemas.identifiers.normalize_enterprise_number`, which
    accepts every way people write a number: the export has one form, and this runs for
    every one of millions of rows.
    """
    digits = written.replace(".", "")
    if len(digits) != 10 or not digits.isascii() or not digits.isdigit():
        return None
    if digits[0] not in "01" or int(digits[8:]) != 97 - int(digits[:8]) % 97:
        return None
    return digits


def _enterprise_records(
    opener: Callable[[str], tuple[IO[bytes], int]],
    report: ImportReport,
    on_progress: OnProgress | None,
) -> Iterator[tuple[str, str]]:
    seen: set[str] = set()
    for line, row in _rows(opener, ENTERPRISE_FILE, ENTERPRISE_COLUMNS, on_progress):
        if not row:
            report.refuse(ENTERPRISE_FILE, line, "fewer columns than the header")
            continue
        number, status = row
        digits = _enterprise_digits(number)
        if digits is None:
            report.refuse(ENTERPRISE_FILE, line, f"not an enterprise number: {number[:40]!r}")
            continue
        if digits in seen:
            report.refuse(ENTERPRISE_FILE, line, f"enterprise {number} listed twice")
            continue
        # About 25 bytes per enterprise: a full export's 2 million fit easily.
        seen.add(digits)
        report.enterprises += 1
        yield digits, status.strip()


def _name_records(
    opener: Callable[[str], tuple[IO[bytes], int]],
    report: ImportReport,
    on_progress: OnProgress | None,
) -> Iterator[tuple[str, int, int, str]]:
    for line, row in _rows(opener, DENOMINATION_FILE, DENOMINATION_COLUMNS, on_progress):
        if not row:
            report.refuse(DENOMINATION_FILE, line, "fewer columns than the header")
            continue
        number, language, kind, denomination = row
        digits = _enterprise_digits(number)
        if digits is None:
            compact = number.replace(".", "")
            if len(compact) == 10 and compact.isdigit() and compact[0] in "2345678":
                # An establishment unit's name: valid, but no declaration names one.
                report.establishment_names += 1
            else:
                report.refuse(DENOMINATION_FILE, line, f"not an entity number: {number[:40]!r}")
            continue
        if language not in {"0", "1", "2", "3", "4"}:
            report.refuse(DENOMINATION_FILE, line, f"unknown language code {language[:10]!r}")
            continue
        if kind not in {"001", "002", "003", "004"}:
            report.refuse(DENOMINATION_FILE, line, f"unknown type of denomination {kind[:10]!r}")
            continue
        name = denomination.strip()
        if not name:
            report.refuse(DENOMINATION_FILE, line, "empty denomination")
            continue
        if len(name) > MAX_NAME_LENGTH or "\x00" in name:
            report.refuse(DENOMINATION_FILE, line, "denomination too long or with a NUL")
            continue
        report.names += 1
        yield digits, int(language), int(kind), name


async def import_export(
    conn: asyncpg.Connection, path: Path, on_progress: OnProgress | None = None
) -> ImportReport:
    """Replace every employer and name with those of the export at ``path``.

    ``path`` is the export's zip file or the folder of its CSV files. One transaction:
    a failure (an unreadable file, a missing column) leaves the previous names in place.
    """
    report = ImportReport()
    with _opened_export(path) as opener:
        async with conn.transaction():
            # DELETE rather than TRUNCATE: readers keep the committed names meanwhile
            # instead of waiting on TRUNCATE's exclusive lock.
            await conn.execute("DELETE FROM employer_names")
            await conn.execute("DELETE FROM employers")
            await conn.copy_records_to_table(
                "employers",
                records=_enterprise_records(opener, report, on_progress),
                columns=["enterprise_number", "status"],
            )
            await conn.copy_records_to_table(
                "employer_names",
                records=_name_records(opener, report, on_progress),
                columns=["enterprise_number", "language", "type_of_denomination", "name"],
            )
    return report


# -- looking names up ----------------------------------------------------------------------


def employer_label(employer: str) -> str:
    """What a page shows for an employer without a known name.

    The formatted enterprise number (``0123.456.749``); an employer known only by its
    NSSO registration number is shown as that number.
    """
    if is_valid_enterprise_number(employer):
        return format_enterprise_number(employer)
    return employer


async def employer_names(
    conn: asyncpg.Connection, employers: Iterable[str], language: Language
) -> dict[str, str]:
    """The name of every employer in ``employers`` that the export names, in one query.

    The official name in ``language``, else the official name in another language (the
    export's order of languages), else any other name in ``language`` first. Employers the
    export does not know are absent: see :func:`display_names`.
    """
    wanted = sorted(set(employers))
    if not wanted:
        return {}
    rows = await conn.fetch(
        "SELECT DISTINCT ON (enterprise_number) enterprise_number, name"
        " FROM employer_names WHERE enterprise_number = ANY($1::text[])"
        " ORDER BY enterprise_number, type_of_denomination <> $3, language <> $2,"
        " type_of_denomination, language, name",
        wanted,
        KBO_LANGUAGE_CODES[language],
        OFFICIAL_NAME,
    )
    return {str(r["enterprise_number"]): str(r["name"]) for r in rows}


async def display_names(
    conn: asyncpg.Connection, employers: Iterable[str], language: Language
) -> dict[str, str]:
    """A name for every employer: the export's, else :func:`employer_label`."""
    wanted = set(employers)
    known = await employer_names(conn, wanted, language)
    return {e: known.get(e) or employer_label(e) for e in wanted}
