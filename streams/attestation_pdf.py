"""Rendering attestations: HTML from a Jinja2 template, then PDF with weasyprint.

Rendering costs a few hundred milliseconds of CPU per document, so the worker never
renders on its event loop (docs/ARCHITECTURE.md): :class:`PdfRenderer` runs
:func:`render_pdf` in a pool of processes. Everything the template shows arrives as one
picklable :class:`AttestationDocument`, so a pool process needs nothing else (no
database, no settings, no secrets).

The template is autoescaped: every value, including an optional display name, is text
and can never become markup. Fetching resources is disabled altogether, so a document
cannot make the renderer read a file or call a URL.

What a process keeps between documents, so that each one costs only weasyprint's own
pipeline (about 40 ms of CPU, mostly layout and drawing): the font configuration, the
stylesheet parsed once (``attestation.css``, not a ``<style>`` element parsed again with
every page), and weasyprint itself, imported and exercised by a sample document when the
process starts, so that no request pays for a cold process.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import multiprocessing
import multiprocessing.connection
import os
import threading
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from datetime import date
from multiprocessing.process import BaseProcess
from pathlib import Path

import jinja2

from schemas.i18n import Language, translations

log = logging.getLogger(__name__)

TEMPLATES = Path(__file__).resolve().parent / "templates"
TEMPLATE_NAME = "attestation.html"
STYLESHEET = TEMPLATES / "attestation.css"


@dataclass(frozen=True, slots=True)
class AttestationDocument:
    """What an attestation shows; plain values only, so it crosses process boundaries."""

    attestation_id: str
    ssin: str
    year: int
    remaining_hours: int
    quota: int
    #: The access code in its printed form (``ABCD-EFGH-JKMN-PQRS``).
    access_code: str
    valid_from: date
    valid_until: date
    issued_on: date
    #: Not known to the system (Dimona carries only the SSIN); shown escaped when given.
    display_name: str | None = None
    #: The language the student reads it in (labels and sentences; dates stay dd/mm/yyyy,
    #: as every Belgian administration prints them).
    language: Language = "en"


def format_ssin(ssin: str) -> str:
    """The usual printed form of an SSIN: ``93051822361`` -> ``93.05.18-223.61``."""
    if len(ssin) != 11 or not ssin.isdigit():
        return ssin
    return f"{ssin[0:2]}.{ssin[2:4]}.{ssin[4:6]}-{ssin[6:9]}.{ssin[9:11]}"


def format_day(day: date) -> str:
    """A date as Belgian documents print it: ``31/01/2027``."""
    return day.strftime("%d/%m/%Y")


@functools.cache
def _environment() -> jinja2.Environment:
    # autoescape=True for every template, whatever its name: this one is HTML and values
    # must stay text. StrictUndefined turns a typo in the template into an error instead
    # of a silently empty field on a legal document.
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def render_html(doc: AttestationDocument) -> str:
    """The attestation as an HTML page (what :func:`render_pdf` lays out), in its language."""
    # The catalogue is passed per render, not installed on the shared environment: one
    # pool process renders documents in every language.
    return (
        _environment()
        .get_template(TEMPLATE_NAME)
        .render(
            doc=doc,
            language=doc.language,
            _=translations(doc.language).gettext,
            ssin=format_ssin(doc.ssin),
            issued_on=format_day(doc.issued_on),
            valid_from=format_day(doc.valid_from),
            valid_until=format_day(doc.valid_until),
        )
    )


@functools.cache
def _font_config() -> object:
    """One weasyprint font configuration per process, shared by its documents.

    Building it (fontconfig, the @font-face rules) for every document cost about 45 %
    of a render (71 ms against 40 ms on the development machine, same bytes out).
    """
    from weasyprint.text.fonts import FontConfiguration

    return FontConfiguration()


@functools.cache
def _stylesheet() -> object:
    """The attestation's stylesheet, parsed once per process with its font configuration.

    The same rules in a ``<style>`` element were tokenised and preprocessed again for
    every document; a parsed :class:`weasyprint.CSS` applies to any number of them.
    """
    from weasyprint import CSS

    return CSS(string=STYLESHEET.read_text(encoding="utf-8"), font_config=_font_config())


def render_pdf(doc: AttestationDocument) -> bytes:
    """The attestation as PDF bytes. CPU-bound: call it in a pool process, not a loop."""
    from weasyprint import HTML
    from weasyprint.urls import URLFetcher

    # No protocol is allowed: the document is self-contained and must stay so.
    fetcher = URLFetcher(allowed_protocols=set())
    pdf: bytes = HTML(string=render_html(doc), url_fetcher=fetcher).write_pdf(
        font_config=_font_config(), stylesheets=[_stylesheet()]
    )
    return pdf


def warm_up() -> int:
    """Import weasyprint and lay out a sample once, so the first real request is fast."""
    sample = AttestationDocument(
        attestation_id="warm-up",
        ssin="93051822361",
        year=2000,
        remaining_hours=0,
        quota=0,
        access_code="2222-2222-2222-2222",
        valid_from=date(2000, 1, 1),
        valid_until=date(2000, 3, 31),
        issued_on=date(2000, 1, 1),
    )
    return len(render_pdf(sample))


def _exit_with_parent() -> None:
    """End this process when the worker that spawned it dies.

    A pool process blocks reading its task queue, whose pipe it holds both ends of, so a
    worker killed with SIGKILL (or by the OOM killer) would otherwise leave it behind
    forever. The parent's sentinel becomes readable exactly when the parent is gone.
    """
    parent = multiprocessing.parent_process()
    if parent is None:
        return
    sentinel = parent.sentinel

    def watch() -> None:
        multiprocessing.connection.wait([sentinel])
        os._exit(0)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def _start_process() -> None:
    """Pool process initializer: tie the process to its parent, then warm it up.

    Every process of the pool, a replacement for a broken one included, has imported
    weasyprint, built its font configuration and parsed the stylesheet before it takes
    its first document (about 1 - 2 s of CPU that a request would otherwise wait for).
    A failed warm-up is logged, not raised: raising here would break the whole pool,
    while the document itself reports the same error where it can be handled.
    """
    _exit_with_parent()
    try:
        warm_up()
    except Exception:
        log.exception("PDF renderer process warm-up failed; its documents will retry it")


def _ready() -> int:
    """A task that only says the (already warmed) process is there: its pid."""
    return os.getpid()


class PdfRenderer:
    """A pool of processes rendering attestations for the event loop.

    Processes are spawned (not forked): forking a process that runs an event loop, a
    Kafka client and database connections copies their threads' locks in whatever state
    they were. A broken pool (a process killed, e.g. by the OOM killer) is replaced and
    the document rendered again once.
    """

    def __init__(self, processes: int) -> None:
        self._processes = processes
        self._pool: ProcessPoolExecutor | None = None
        self._closed = False

    def _executor(self) -> ProcessPoolExecutor:
        if self._closed:
            # The worker is stopping: the batch is abandoned uncommitted and will be
            # redelivered, exactly as if the worker had stopped a moment earlier.
            raise asyncio.CancelledError("the PDF renderer is closed")
        if self._pool is None:
            self._pool = ProcessPoolExecutor(
                max_workers=self._processes,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_start_process,
            )
        return self._pool

    async def warm_up(self) -> None:
        """Start every process of the pool and return when each has warmed up.

        A process pool spawns its processes on demand, one per task submitted while none
        is idle: started lazily, the second process would be spawned by the first burst
        of requests, and they would wait for its imports (seconds) instead of being
        rendered. Tasks submitted together spawn all of them; each warms up in its
        initializer before it takes a task, so once every process has answered (by its
        pid; a warm one may answer for a cold one, hence the rounds) all are warm.
        """
        loop = asyncio.get_running_loop()
        ready: set[int] = set()
        try:
            while len(ready) < self._processes:
                pool = self._executor()
                pids = await asyncio.gather(
                    *(loop.run_in_executor(pool, _ready) for _ in range(self._processes))
                )
                ready.update(pids)
                if len(ready) < self._processes:
                    await asyncio.sleep(0.1)  # the others are still in their initializer
        except BrokenProcessPool:
            if not self._closed:  # closed while warming up: nothing to warm any more
                raise

    async def render(self, doc: AttestationDocument) -> bytes:
        """Render one document in the pool; the event loop only awaits."""
        loop = asyncio.get_running_loop()
        pool = self._executor()
        try:
            return await loop.run_in_executor(pool, render_pdf, doc)
        except BrokenProcessPool:
            if self._closed:
                raise asyncio.CancelledError("the PDF renderer is closed") from None
            if self._pool is pool:  # not already replaced by a concurrent render
                log.warning("PDF process pool broke; starting a new one")
                self._pool = None
                pool.shutdown(wait=False, cancel_futures=True)
            return await loop.run_in_executor(self._executor(), render_pdf, doc)

    def close(self) -> None:
        """Stop the pool now, abandoning documents being rendered.

        Nothing is lost: a batch commits only after its documents are rendered, so an
        abandoned one is redelivered. Waiting instead would hold a stopping worker for as
        long as a render (or the start-up warm-up, seconds of importing) takes.
        """
        self._closed = True
        pool, self._pool = self._pool, None
        if pool is None:
            return
        # ProcessPoolExecutor.terminate_workers() arrives in Python 3.14; until then the
        # pool's processes are only reachable through this attribute.
        workers: dict[int, BaseProcess] = getattr(pool, "_processes", None) or {}
        processes = list(workers.values())
        pool.shutdown(wait=False, cancel_futures=True)
        for process in processes:
            process.terminate()
        for process in processes:
            process.join(5)
