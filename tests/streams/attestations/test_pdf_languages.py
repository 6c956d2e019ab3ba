"""The attestation in the student's language: Dutch, French and German labels in the PDF."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from schemas.i18n import Language
from streams.attestation_pdf import render_html, render_pdf
from tests.streams.attestations.test_pdf import DOC, needs_poppler, pdf_text

LABELS: dict[Language, tuple[str, ...]] = {
    "nl": (
        "Attest voor het jaar 2026",
        "Rijksregisternummer (INSZ)",
        "413 uren",
        "650 uren",
        "Toegangscode voor werkgevers",
        "Geldig van 01/11/2026 tot 31/01/2027",
        "Uitgereikt op",
    ),
    "fr": (
        "Attestation pour l'année 2026",
        "413 heures",
        "Code d'accès pour les employeurs",
        "Valable du 01/11/2026 au 31/01/2027",
    ),
    "de": ("Bescheinigung für das Jahr 2026", "413 Stunden", "Gültig vom 01/11/2026 bis"),
}


@needs_poppler
@pytest.mark.parametrize("language", list(LABELS))
def test_a_pdf_rendered_in_a_language_has_its_labels(language: Language, tmp_path: Path) -> None:
    text = pdf_text(render_pdf(replace(DOC, language=language)), tmp_path)
    for label in LABELS[language]:
        assert label in text, (language, label)
    assert "ABCD-EFGH-JKMN-PQRS" in text
    assert "hours" not in text  # no English label left


def test_the_html_says_its_language() -> None:
    assert '<html lang="nl">' in render_html(replace(DOC, language="nl"))
    assert '<html lang="en">' in render_html(DOC)
