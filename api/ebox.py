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
from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Response

from api.deps import COMMON_ERRORS, Pool, State, Student, errors
from api.models import EboxDocument, EboxList
from db import ebox as ebox_db

NO_STORE = "no-store"
_NOT_FOUND = "no such document in your eBox"

router = APIRouter(tags=["ebox"], responses={**COMMON_ERRORS, **errors(404)})

DocumentPath = Annotated[str, Path(description="The document's id (a UUID).")]


def document_out(doc: ebox_db.Document) -> EboxDocument:
    """A document as the API shows it; ``availableUntil`` is null once archived."""
    return EboxDocument(
        id=str(doc.id),
        title=doc.title,
        year=doc.year,
        file_name=doc.file_name,
        content_type=doc.content_type,
        size=doc.size,
        issued_at=doc.issued_at,
        delivered_at=doc.delivered_at,
        available_until=None if doc.archived else doc.available_until,
        archived=doc.archived,
        archived_at=doc.archived_at,
    )


def _document_id(raw: str) -> uuid.UUID:
    try:
        return uuid.UUID(raw)
    except ValueError as error:
        raise HTTPException(404, _NOT_FOUND) from error


@router.get("/v1/ebox", summary="The student's eBox documents", response_model=EboxList)
async def my_ebox(state: State, pool: Pool, principal: Student, response: Response) -> EboxList:
    async with pool.acquire() as conn:
        documents = await ebox_db.list_documents(conn, principal.subject, state.today())
    response.headers["Cache-Control"] = NO_STORE
    return EboxList(documents=[document_out(d) for d in documents])


@router.get(
    "/v1/ebox/{document_id}",
    summary="One document's PDF, as an attachment",
    response_class=Response,
    responses={
        200: {"content": {"application/pdf": {"schema": {"type": "string", "format": "binary"}}}}
    },
)
async def ebox_document(
    state: State, pool: Pool, principal: Student, document_id: DocumentPath
) -> Response:
    doc_id = _document_id(document_id)
    async with pool.acquire() as conn:
        content = await ebox_db.document_content(conn, principal.subject, doc_id, state.today())
    if content is None:
        raise HTTPException(404, _NOT_FOUND)
    return Response(
        content.content,
        media_type=content.content_type,
        headers={
            "Cache-Control": NO_STORE,
            # The name is sanitised at delivery (letters, digits, . _ - only).
            "Content-Disposition": f'attachment; filename="{content.file_name}"',
            "X-Content-Type-Options": "nosniff",
        },
    )


@router.post(
    "/v1/ebox/{document_id}/archive",
    summary="Keep a document beyond the retention months",
    response_model=EboxDocument,
)
async def archive_document(
    state: State, pool: Pool, principal: Student, response: Response, document_id: DocumentPath
) -> EboxDocument:
    doc_id = _document_id(document_id)
    async with pool.acquire() as conn:
        doc = await ebox_db.archive(
            conn, principal.subject, doc_id, state.today(), state.shared.clock()
        )
    if doc is None:
        raise HTTPException(404, _NOT_FOUND)
    response.headers["Cache-Control"] = NO_STORE
    return document_out(doc)
