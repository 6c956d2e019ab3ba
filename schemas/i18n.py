"""The one message catalogue: French, Dutch, German and English (gettext, with Babel).

Every text a person reads (the pages, the attestation PDF, the description of each
anomaly code in the answers) is an English message id looked up in
``schemas/locale/<lang>/LC_MESSAGES/messages.po``. It lives in ``schemas/`` because every
layer that shows text may import it: the worker renders PDFs and builds answers
(``streams/``), the HTTP tier renders pages (``api/``).

The ``.po`` files are the only form kept in the repository: :func:`translations` compiles
a catalogue in memory the first time a language is asked for (a few milliseconds, once
per process), so a fresh clone needs no build step and no compiled ``.mo`` file can go
stale beside its source. ``docs/I18N.md`` says how to extract new messages and update
the catalogues (``pybabel extract`` / ``pybabel update``).

English is the source language: its catalogue may leave a message untranslated, and
gettext then shows the message id itself.
"""

from __future__ import annotations

import functools
import io
from collections.abc import Mapping
from datetime import date
from pathlib import Path
from typing import Literal, cast, get_args

from babel.dates import format_date, get_day_names, get_month_names
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.numbers import format_currency, format_decimal
from babel.support import Translations

from quota.ledger import AnomalyCode

Language = Literal["nl", "fr", "de", "en"]
#: Every language of the service, the national languages first.
LANGUAGES: tuple[Language, ...] = cast(tuple[Language, ...], get_args(Language))
#: Each language's own name, for the language choice on every page.
LANGUAGE_NAMES: Mapping[Language, str] = {
    "nl": "Nederlands",
    "fr": "Français",
    "de": "Deutsch",
    "en": "English",
}
#: The Babel locale of each language: Belgian conventions for dates and numbers.
LOCALES: Mapping[Language, str] = {"nl": "nl_BE", "fr": "fr_BE", "de": "de_BE", "en": "en_BE"}

LOCALE_DIR = Path(__file__).resolve().parent / "locale"
DOMAIN = "messages"


def N_(message: str) -> str:
    """Mark ``message`` for extraction without translating it now (gettext_noop)."""
    return message


#: What each anomaly code means, in one sentence a student or an employer understands.
#: The answer's ``text`` says what happened to this message (hours, dates); this says what
#: the code means, in every language (the Dimona REST answer carries FR and NL ones).
ANOMALY_DESCRIPTIONS: Mapping[AnomalyCode, str] = {
    AnomalyCode.QUOTA_EXCEEDED: N_(
        "The student quota is exceeded: the hours beyond it are at ordinary contributions."
    ),
    AnomalyCode.LATE_DECLARATION: N_(
        "Declared after the first day of work: the hours count outside the student quota."
    ),
    AnomalyCode.DMFA_ALREADY_RECEIVED: N_(
        "The quarterly wage declaration of this quarter was already received."
    ),
    AnomalyCode.DMFA_WITHOUT_DECLARATION: N_(
        "Hours in a quarterly wage declaration without a matching student declaration."
    ),
    AnomalyCode.TWELVE_MONTHS_IN_A_ROW: N_(
        "More than twelve months in a row for the same employer: no longer a student job."
    ),
    AnomalyCode.NOT_A_STUDENT: N_("The worker type is not student (STU)."),
    AnomalyCode.ZERO_HOURS: N_("A student declaration must plan at least one hour."),
    AnomalyCode.END_BEFORE_START: N_("The end date is before the start date."),
    AnomalyCode.CROSS_QUARTER: N_("A student declaration must stay within one quarter."),
    AnomalyCode.START_DATE_CHANGE: N_("The start date of a declared period cannot change."),
    AnomalyCode.UPDATE_AFTER_DMFA: N_(
        "The quarterly wage declaration was received: the period can no longer be updated."
    ),
    AnomalyCode.LATE_NOT_UPDATABLE: N_("A late declaration cannot be updated."),
    AnomalyCode.UNKNOWN_PERIOD: N_("No period of this employer has this number."),
    AnomalyCode.PERIOD_CANCELLED: N_("The period was cancelled."),
    AnomalyCode.INVALID_QUARTER: N_("The quarter must be 1, 2, 3 or 4."),
    AnomalyCode.NEGATIVE_AMOUNT: N_("Hours worked and gross wage cannot be negative."),
    AnomalyCode.INVALID_MESSAGE: N_("The message could not be read."),
    AnomalyCode.HOURS_OUT_OF_RANGE: N_("The number of hours is outside the allowed range."),
    AnomalyCode.HOURS_NOT_INTEGER: N_("Hours must be a whole number."),
    AnomalyCode.DATE_OUT_OF_RANGE: N_("A date is outside the allowed range."),
    AnomalyCode.AMOUNT_OUT_OF_RANGE: N_("An amount is outside the allowed range."),
    AnomalyCode.INVALID_TEXT: N_("A text contains characters that are not allowed."),
    AnomalyCode.INVALID_KEY: N_("The message key must be the worker's social security number."),
    AnomalyCode.INVALID_TIMESTAMP: N_("The message's timestamp is not a valid moment."),
    AnomalyCode.DUPLICATE_EVENT_ID: N_("This event id was already used for a different message."),
    AnomalyCode.MISSING_END_DATE: N_("A student declaration needs an end date."),
    AnomalyCode.PROCESSING_FAILED: N_("The message could not be processed."),
    AnomalyCode.EMPLOYER_IDS_CONFLICT: N_(
        "This NSSO registration number belongs to another enterprise number."
    ),
}


def language_or_default(value: str | None, default: Language) -> Language:
    """``value`` when it is one of :data:`LANGUAGES`, else ``default``."""
    return value if value in LANGUAGES else default


@functools.cache
def translations(language: Language) -> Translations:
    """The compiled catalogue of ``language`` (cached: compiled once per process)."""
    po = LOCALE_DIR / language / "LC_MESSAGES" / f"{DOMAIN}.po"
    with po.open("rb") as source:
        catalog = read_po(source, locale=LOCALES[language], domain=DOMAIN)
    compiled = io.BytesIO()
    write_mo(compiled, catalog)
    compiled.seek(0)
    return Translations(compiled, domain=DOMAIN)


def gettext(language: Language, message: str) -> str:
    """``message`` in ``language``."""
    return translations(language).gettext(message)


def anomaly_description(code: AnomalyCode | str, language: Language) -> str:
    """What anomaly ``code`` means, in ``language`` (the code itself if unknown)."""
    try:
        message = ANOMALY_DESCRIPTIONS[AnomalyCode(code)]
    except ValueError:
        return str(code)
    return gettext(language, message)


def format_hours(hours: int, language: Language) -> str:
    """A number of hours with the language's digit grouping (``1.250`` / ``1 250``)."""
    return format_decimal(hours, locale=LOCALES[language])


def format_long_date(day: date, language: Language) -> str:
    """A date written out (``31 januari 2027``, ``31 janvier 2027``)."""
    return format_date(day, format="long", locale=LOCALES[language])


def negotiate(accept_language: str | None, default: Language) -> Language:
    """The first of :data:`LANGUAGES` that an ``Accept-Language`` header asks for.

    ``nl-BE,nl;q=0.9,fr;q=0.8`` gives ``nl``; ranges are read by their primary subtag, in
    the order of their quality (``q``, 1 when absent; 0 means "not this one"); nothing
    usable gives ``default``.
    """
    ranked: list[tuple[float, int, str]] = []
    for index, item in enumerate((accept_language or "").split(",")):
        tag, _, params = item.strip().partition(";")
        quality = 1.0
        name, _, value = params.strip().partition("=")
        if name.strip() == "q":
            try:
                quality = float(value)
            except ValueError:
                continue
        if quality > 0 and tag:
            ranked.append((-quality, index, tag.split("-")[0].strip().lower()))
    for _quality, _index, primary in sorted(ranked):
        if primary in LANGUAGES:
            return language_or_default(primary, default)
    return default


def month_names(language: Language) -> dict[int, str]:
    """The months' names, 1 to 12, capitalised for headings (``Januari``, ``Janvier``)."""
    names = get_month_names("wide", locale=LOCALES[language])
    return {month: str(names[month]).capitalize() for month in range(1, 13)}


def weekday_names(language: Language) -> list[str]:
    """The days of the week, Monday first, as Belgian calendars start the week."""
    names = get_day_names("wide", locale=LOCALES[language])
    return [str(names[day]).capitalize() for day in range(7)]


def format_euros(cents: int, language: Language) -> str:
    """An amount in cents as the language writes euros (``€ 4.200,00``, ``4 200,00 €``)."""
    return format_currency(cents / 100, "EUR", locale=LOCALES[language])
