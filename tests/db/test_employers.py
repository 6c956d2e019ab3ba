"""Employer names: the KBO open-data import on a real PostgreSQL, and the name look-up."""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
import zipfile
from pathlib import Path

import asyncpg
import pytest

from db.employers import ExportError, display_names, employer_names, import_export
from db.migrate import migrate
from tests.support import EMPLOYER_A, EMPLOYER_B

pytestmark = pytest.mark.integration

FIXTURE = Path(__file__).resolve().parent.parent / "fixtures" / "kbo"
#: The fixture's employer whose official name is markup (tests/fixtures/kbo/make_fixture.py).
EMPLOYER_MARKUP = "0877901171"
MARKUP_NAME = '<script>alert("kroon")</script> & <b>Zonen</b>'
#: A valid enterprise number the fixture does not name.
UNKNOWN_EMPLOYER = "0202239951"

# What the fixture holds: 700 simulated parties and the 3 employers of the tests; 862
# denominations, one of them an establishment unit's.
FIXTURE_ENTERPRISES = 703
FIXTURE_NAMES = 861


def write_export(folder: Path, enterprises: list[str], denominations: list[str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "enterprise.csv").write_text(
        '"EnterpriseNumber","Status","JuridicalSituation","TypeOfEnterprise","JuridicalForm",'
        '"JuridicalFormCAC","StartDate"\n' + "".join(f"{line}\n" for line in enterprises),
        encoding="utf-8",
    )
    (folder / "denomination.csv").write_text(
        '"EntityNumber","Language","TypeOfDenomination","Denomination"\n'
        + "".join(f"{line}\n" for line in denominations),
        encoding="utf-8",
    )
    return folder


async def test_the_fixture_export_loads_every_enterprise_and_name(
    conn: asyncpg.Connection,
) -> None:
    report = await import_export(conn, FIXTURE)
    assert (report.enterprises, report.names, report.establishment_names) == (
        FIXTURE_ENTERPRISES,
        FIXTURE_NAMES,
        1,
    )
    assert (report.refused, report.refusals) == (0, [])
    assert await conn.fetchval("SELECT count(*) FROM employers") == FIXTURE_ENTERPRISES
    assert await conn.fetchval("SELECT count(*) FROM employer_names") == FIXTURE_NAMES


async def test_the_official_name_in_the_students_language_else_another(
    conn: asyncpg.Connection,
) -> None:
    await import_export(conn, FIXTURE)
    employers = [EMPLOYER_A, EMPLOYER_B]
    assert await employer_names(conn, employers, "nl") == {
        EMPLOYER_A: "Brasserie De Kroon",
        # Named in French only: the official name, not the commercial one.
        EMPLOYER_B: "Supermarché Lambert",
    }
    assert await employer_names(conn, employers, "fr") == {
        EMPLOYER_A: "Brasserie La Couronne",
        EMPLOYER_B: "Supermarché Lambert",
    }
    # No German name: the official name in the export's first language (French).
    assert (await employer_names(conn, [EMPLOYER_A], "de"))[EMPLOYER_A] == "Brasserie La Couronne"


async def test_an_unknown_employer_shows_its_formatted_number(conn: asyncpg.Connection) -> None:
    await import_export(conn, FIXTURE)
    nsso_only = "123456789"  # an employer known by its NSSO registration number only
    assert await display_names(conn, [UNKNOWN_EMPLOYER, EMPLOYER_A, nsso_only], "nl") == {
        UNKNOWN_EMPLOYER: "0202.239.951",
        EMPLOYER_A: "Brasserie De Kroon",
        nsso_only: "123456789",
    }
    assert await employer_names(conn, [], "nl") == {}


async def test_markup_in_a_name_is_stored_as_the_text_it_is(conn: asyncpg.Connection) -> None:
    await import_export(conn, FIXTURE)
    assert await employer_names(conn, [EMPLOYER_MARKUP], "en") == {EMPLOYER_MARKUP: MARKUP_NAME}


async def test_the_export_as_published_a_zip_with_a_folder(
    conn: asyncpg.Connection, tmp_path: Path
) -> None:
    archive = tmp_path / "KboOpenData_0140_2026_11_Full.zip"
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as out:
        for name in ("enterprise.csv", "denomination.csv"):
            out.write(FIXTURE / name, f"KboOpenData_0140_2026_11_Full/{name}")
    report = await import_export(conn, archive)
    assert (report.enterprises, report.names, report.refused) == (
        FIXTURE_ENTERPRISES,
        FIXTURE_NAMES,
        0,
    )
    assert (await employer_names(conn, [EMPLOYER_A], "nl"))[EMPLOYER_A] == "Brasserie De Kroon"


async def test_every_unreadable_row_is_refused_with_its_line_and_reason(
    conn: asyncpg.Connection, tmp_path: Path
) -> None:
    export = write_export(
        tmp_path / "export",
        [
            '"0123.456.749","AC","000","2","610",,01-01-2010',
            '"0123.456.748","AC","000","2","610",,01-01-2010',  # check digits wrong
            '"0123.456.749","AC","000","2","610",,01-01-2010',  # listed twice
            '"0403.170.701"',  # too few columns
        ],
        [
            '"0123.456.749","2","001","Brasserie De Kroon"',
            '"0123.456.749","9","001","Kroon"',
            '"0123.456.749","2","007","Kroon"',
            '"0123.456.749","2","001","  "',
            '"9.999.999.999","2","001","Nobody"',
            '"0403.170.701","1","001","Supermarché ""Lambert"""',
        ],
    )
    report = await import_export(conn, export)
    assert (report.enterprises, report.names, report.refused) == (1, 2, 7)
    assert report.refusals == [
        "enterprise.csv:3: not an enterprise number: '0123.456.748'",
        "enterprise.csv:4: enterprise 0123.456.749 listed twice",
        "enterprise.csv:5: fewer columns than the header",
        "denomination.csv:3: unknown language code '9'",
        "denomination.csv:4: unknown type of denomination '007'",
        "denomination.csv:5: empty denomination",
        "denomination.csv:6: not an entity number: '9.999.999.999'",
    ]
    assert await employer_names(conn, [EMPLOYER_B], "nl") == {EMPLOYER_B: 'Supermarché "Lambert"'}


async def test_a_new_export_replaces_the_names_and_a_broken_one_changes_nothing(
    conn: asyncpg.Connection, tmp_path: Path
) -> None:
    await import_export(conn, FIXTURE)
    smaller = write_export(
        tmp_path / "next-month",
        ['"0123.456.749","AC","000","2","610",,01-01-2010'],
        ['"0123.456.749","2","001","Brasserie De Nieuwe Kroon"'],
    )
    report = await import_export(conn, smaller)
    assert (report.enterprises, report.names) == (1, 1)
    assert await display_names(conn, [EMPLOYER_A, EMPLOYER_B], "nl") == {
        EMPLOYER_A: "Brasserie De Nieuwe Kroon",
        EMPLOYER_B: "0403.170.701",
    }
    broken = tmp_path / "broken"
    broken.mkdir()
    shutil.copy(smaller / "enterprise.csv", broken / "enterprise.csv")
    (broken / "denomination.csv").write_text('"EntityNumber","Language"\n', encoding="utf-8")
    with pytest.raises(ExportError, match="lacks the column"):
        await import_export(conn, broken)
    half = tmp_path / "half"
    half.mkdir()
    shutil.copy(FIXTURE / "enterprise.csv", half / "enterprise.csv")
    with pytest.raises(ExportError, match=r"has no denomination\.csv"):
        await import_export(conn, half)
    with pytest.raises(ExportError, match="neither a folder nor a zip file"):
        await import_export(conn, half / "enterprise.csv")
    assert await employer_names(conn, [EMPLOYER_A], "nl") == {
        EMPLOYER_A: "Brasserie De Nieuwe Kroon"
    }


async def test_the_command_imports_and_reports(database_url: str) -> None:
    await migrate(database_url)
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "infra",
        "employers",
        "import",
        str(FIXTURE),
        env={**os.environ, "DATABASE_URL": database_url},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    assert process.returncode == 0, err.decode()
    assert out.decode().startswith(f"{FIXTURE_ENTERPRISES:,} enterprises, {FIXTURE_NAMES:,} names")
    assert "1 names of establishment units left out); refused: 0" in out.decode()
