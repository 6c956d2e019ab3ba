"""The message catalogue: every message in all four languages, every anomaly code described."""

from __future__ import annotations

from pathlib import Path

import pytest
from babel.messages.pofile import read_po

from quota.ledger import AnomalyCode
from schemas.answers import AnswerAnomaly
from schemas.i18n import (
    ANOMALY_DESCRIPTIONS,
    LANGUAGES,
    LOCALE_DIR,
    Language,
    anomaly_description,
    gettext,
    language_or_default,
    negotiate,
)


def catalogue_ids(path: Path) -> dict[str, str]:
    with path.open("rb") as source:
        return {str(m.id): str(m.string) for m in read_po(source) if m.id}


def test_every_anomaly_code_has_a_description() -> None:
    assert set(ANOMALY_DESCRIPTIONS) == set(AnomalyCode)


@pytest.mark.parametrize("code", list(AnomalyCode))
def test_each_anomaly_code_has_a_text_in_all_four_languages(code: AnomalyCode) -> None:
    texts = {language: anomaly_description(code, language) for language in LANGUAGES}
    assert all(texts.values()), texts
    assert texts["en"] == ANOMALY_DESCRIPTIONS[code]
    # French, Dutch and German are translations, not the English text left in place.
    assert len({texts["fr"], texts["nl"], texts["de"], texts["en"]}) == 4, texts


def test_a_known_anomaly_in_each_language() -> None:
    code = AnomalyCode.LATE_DECLARATION
    assert anomaly_description(code, "nl") == (
        "Laattijdige aangifte: de uren vallen buiten het contingent (gewone bijdragen)."
    )
    assert anomaly_description(code, "fr") == (
        "Déclaration tardive : les heures sont hors contingent (cotisations ordinaires)."
    )
    assert anomaly_description(code, "de") == (
        "Nach dem ersten Arbeitstag gemeldet: Die Stunden zählen außerhalb des "
        "Studentenkontingents."
    )
    assert anomaly_description("NO_SUCH_CODE", "de") == "NO_SUCH_CODE"


@pytest.mark.parametrize("language", LANGUAGES)
def test_each_catalogue_translates_every_extracted_message(language: Language) -> None:
    template = catalogue_ids(LOCALE_DIR / "messages.pot")
    catalogue = catalogue_ids(LOCALE_DIR / language / "LC_MESSAGES" / "messages.po")
    assert set(catalogue) == set(template)
    assert [m for m, text in catalogue.items() if not text] == []
    # Placeholders survive translation, or formatting the message would fail.
    for message, text in catalogue.items():
        for placeholder in ("%(hours)s", "%(year)s", "%(ssin)s", "%(start)s", "%(end)s"):
            assert (placeholder in message) == (placeholder in text), (language, message)


def test_an_answer_carries_the_codes_french_and_dutch_descriptions() -> None:
    anomaly = AnswerAnomaly.of(AnomalyCode.QUOTA_EXCEEDED, "exceeding 25 hours: ...", 25)
    assert anomaly.model_dump(by_alias=True) == {
        "code": "QUOTA_EXCEEDED",
        "text": "exceeding 25 hours: ...",
        "hours": 25,
        "descriptionFr": "Contingent d'heures étudiant dépassé : les heures au-delà sont "
        "soumises aux cotisations ordinaires.",
        "descriptionNl": "Urencontingent student overschreden: de uren daarboven zijn "
        "onderworpen aan de gewone bijdragen.",
    }


def test_a_language_outside_the_four_falls_back() -> None:
    assert language_or_default("nl", "en") == "nl"
    assert language_or_default("es", "fr") == "fr"
    assert language_or_default(None, "de") == "de"
    assert gettext("de", "Year") == "Jahr"


def test_accept_language_picks_the_first_served_language_by_quality() -> None:
    assert negotiate("nl-BE,nl;q=0.9,fr;q=0.8", "en") == "nl"
    assert negotiate("es-ES, fr;q=0.7, de;q=0.9", "en") == "de"
    assert negotiate("fr-BE;q=0, nl;q=0.1", "en") == "nl"  # q=0: not this one
    assert negotiate("es, it", "fr") == "fr"
    assert negotiate("", "nl") == "nl"
    assert negotiate(None, "de") == "de"
    assert negotiate("de;q=x, en", "nl") == "en"  # a broken range is skipped
