"""The student's eBox: list, download and archive delivered attestations.

- ``GET /v1/ebox``: the student's documents (id, title, year, delivery, availability).
- ``GET /v1/ebox/{id}``: the PDF itself (``application/pdf``).
- ``POST /v1/ebox/{id}/archive``: keep the document past its availability date.

The eBox consumer (``studentwork ebox``) fills the table; these views only read it and
set the archive flag. A document is available until ``availableUntil`` (delivery date
plus the retention months) unless archived; an expired one is hidden at once, whether
or not the periodic purge has deleted it yet. Another student's document, a malformed
id and an expired document all answer 404: nothing tells them apart.
"""

from __future__ import annotations

import uuid
from datetime import date
from typing import TYPE_CHECKING, Any

import faust
from faust import web
from faust.web import exceptions

from db import ebox as ebox_db
from streams.web.auth import Role
from streams.web.base import ApiView

if TYPE_CHECKING:
    from streams.runtime import WorkerState

NO_STORE = {"Cache-Control": "no-store"}
_NOT_FOUND = "no such document in your eBox"


def document_json(doc: ebox_db.Document) -> dict[str, Any]:
    """A document as the API shows it; ``availableUntil`` is null once archived."""
    return {
        "id": str(doc.id),
        "title": doc.title,
        "year": doc.year,
        "fileName": doc.file_name,
        "contentType": doc.content_type,
        "size": doc.size,
        "issuedAt": doc.issued_at.isoformat(),
        "deliveredAt": doc.delivered_at.isoformat(),
        "availableUntil": None if doc.archived else doc.available_until.isoformat(),
        "archived": doc.archived,
        "archivedAt": doc.archived_at.isoformat() if doc.archived_at else None,
    }


def _document_id(raw: str) -> uuid.UUID:
    try:
        return uuid.UUID(raw)
    except ValueError as error:
        raise exceptions.NotFound(_NOT_FOUND) from error


class _EboxView(ApiView):
    def today(self) -> date:
        return self.state.settings.today_in_brussels(self.state.clock())


class EboxListView(_EboxView):
    """``GET /v1/ebox``."""

    async def get(self, request: web.Request, **kwargs: Any) -> web.Response:
        ssin = self.principal(request, Role.STUDENT).subject
        pool = await self.state.pool()
        async with pool.acquire() as conn:
            documents = await ebox_db.list_documents(conn, ssin, self.today())
        return self.json(
            {"documents": [document_json(d) for d in documents]}, headers=dict(NO_STORE)
        )


class EboxDocumentView(_EboxView):
    """``GET /v1/ebox/{document_id}``: the PDF, as an attachment."""

    async def get(self, request: web.Request, document_id: str = "", **kwargs: Any) -> web.Response:
        ssin = self.principal(request, Role.STUDENT).subject
        doc_id = _document_id(document_id)
        pool = await self.state.pool()
        async with pool.acquire() as conn:
            content = await ebox_db.document_content(conn, ssin, doc_id, self.today())
        if content is None:
            raise exceptions.NotFound(_NOT_FOUND)
        return self.bytes(
            content.content,
            content_type=content.content_type,
            headers={
                **NO_STORE,
                # The name is sanitised at delivery (letters, digits, . _ - only).
                "Content-Disposition": f'attachment; filename="{content.file_name}"',
                "X-Content-Type-Options": "nosniff",
            },
        )


class EboxArchiveView(_EboxView):
    """``POST /v1/ebox/{document_id}/archive``: keep it beyond the retention months."""

    async def post(
        self, request: web.Request, document_id: str = "", **kwargs: Any
    ) -> web.Response:
        ssin = self.principal(request, Role.STUDENT).subject
        doc_id = _document_id(document_id)
        pool = await self.state.pool()
        async with pool.acquire() as conn:
            doc = await ebox_db.archive(conn, ssin, doc_id, self.today(), self.state.clock())
        if doc is None:
            raise exceptions.NotFound(_NOT_FOUND)
        return self.json(document_json(doc), headers=dict(NO_STORE))


def register(app: faust.App, state: WorkerState) -> None:
    """Mount the eBox views."""
    app.page("/v1/ebox")(EboxListView)
    app.page("/v1/ebox/{document_id}")(EboxDocumentView)
    app.page("/v1/ebox/{document_id}/archive")(EboxArchiveView)
