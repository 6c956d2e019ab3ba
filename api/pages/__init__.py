"""The server-rendered pages of the HTTP tier (Jinja2, autoescaped; docs/PAGES.md).

Students: ``/``, ``/years/{year}``, ``/years/{year}/calendar``, ``/attestations``,
``/ebox``, ``/lookups``, ``/consents``; employers ``/employer``; agencies
``/agency/students/{ssin}``; ``/dev/login`` in development mode; ``/language/{lang}``.
"""

from __future__ import annotations

from fastapi import APIRouter

from api.pages import employer, login, student

#: Every page router, included by :func:`api.app.create_app`.
PAGE_ROUTERS: tuple[APIRouter, ...] = (login.router, student.router, employer.router)
