"""Rendering: the template escapes every value, the PDF carries what the student needs."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import replace
from datetime import date
from pathlib import Path

import pytest

from streams.attestation_pdf import AttestationDocument, render_html, render_pdf

DOC = AttestationDocument(
    attestation_id="3f2b8c1e-0000-4000-8000-000000000001",
    ssin="93051822361",
    year=2026,
    remaining_hours=413,
    quota=650,
    access_code="ABCD-EFGH-JKMN-PQRS",
    valid_from=date(2026, 11, 1),
    valid_until=date(2027, 1, 31),
    issued_on=date(2026, 11, 30),
)

needs_poppler = pytest.mark.skipif(
    shutil.which("pdftotext") is None,
    reason="pdftotext (poppler-utils) is not installed; infra/test installs it",
)


def pdf_text(pdf: bytes, tmp_path: Path) -> str:
    path = tmp_path / "doc.pdf"
    path.write_bytes(pdf)
    out = subprocess.run(
        ["pdftotext", "-layout", str(path), "-"], check=True, capture_output=True, text=True
    )
    return out.stdout


def test_markup_in_a_value_stays_text_in_the_html() -> None:
    html = render_html(replace(DOC, display_name="<b>x</b> & <script>"))
    assert "&lt;b&gt;x&lt;/b&gt; &amp; &lt;script&gt;" in html
    assert "<b>x</b>" not in html
    assert "<script>" not in html


@needs_poppler
def test_markup_in_a_value_is_printed_literally_in_the_pdf(tmp_path: Path) -> None:
    doc = replace(DOC, display_name="<b>x</b>")
    text = pdf_text(render_pdf(doc), tmp_path)
    assert "<b>x</b>" in text


@needs_poppler
def test_the_pdf_shows_every_fact_of_the_attestation(tmp_path: Path) -> None:
    # (The worker renders in its process pool; the end-to-end tests go through it.)
    pdf = render_pdf(DOC)
    assert pdf.startswith(b"%PDF-")
    text = pdf_text(pdf, tmp_path)
    for fact in (
        "93.05.18-223.61",
        "2026",
        "413 hours",
        "650 hours",
        "ABCD-EFGH-JKMN-PQRS",
        "Valid from 01/11/2026 until 31/01/2027",
        "30/11/2026",
    ):
        assert fact in text, fact


def test_no_display_name_no_name_row() -> None:
    assert "Student</th>" not in render_html(DOC)
