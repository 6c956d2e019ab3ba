# The one image of every Student@work service (worker, relay, eBox consumer, API, tools).
#
# Multi-stage: uv resolves the locked dependencies in a build stage; the runtime stage has
# only the virtual environment, the system libraries weasyprint needs to render
# attestations (Pango, HarfBuzz, fonts) and a non-root user.
#   docker build -t studentwork .
#   docker run --rm studentwork --help

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
COPY --from=ghcr.io/astral-sh/uv:0.9 /uv /uvx /usr/local/bin/
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/app/.venv
WORKDIR /src
# Dependencies first: this layer is rebuilt only when the lock file changes.
COPY pyproject.toml uv.lock ./
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-install-project
COPY . .
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-editable

FROM ${PYTHON_IMAGE} AS runtime
# weasyprint: Pango (with its FreeType backend), HarfBuzz (subsetting embedded fonts),
# a font to draw with.
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        libpango-1.0-0 libpangoft2-1.0-0 libharfbuzz0b libharfbuzz-subset0 \
        fonts-dejavu-core \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --user-group --home-dir /app --no-create-home studentwork
COPY --from=build --chown=studentwork:studentwork /app/.venv /app/.venv
ENV PATH=/app/.venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    STUDENTWORK_DATA_DIR=/tmp/studentwork \
    STUDENTWORK_WEB_HOST=0.0.0.0 \
    STUDENTWORK_METRICS_HOST=0.0.0.0
WORKDIR /app
USER studentwork
# 6066: the worker's web (health, metrics, API); 9464: /metrics of the relay and eBox.
EXPOSE 6066 9464
# The worker's liveness; compose gives the eBox consumer and the relay their own check.
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s \
    CMD ["python", "-c", "import urllib.request as u; u.urlopen('http://127.0.0.1:6066/health/live', timeout=2)"]
ENTRYPOINT ["studentwork"]
CMD ["worker"]
