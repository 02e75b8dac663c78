# One image for every TaskHub service: SERVICE=<name> picks the app (taskhub_common.serve reads
# the service registry), e.g. `docker run -e SERVICE=tasks taskhub`. `--migrate` as the
# command migrates the service's schema and exits (the Kubernetes init container).
ARG BASE_IMAGE=python:3.11-slim

FROM ${BASE_IMAGE} AS builder
RUN pip install --no-cache-dir "uv>=0.5,<1"
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/app/.venv
WORKDIR /src
# The whole workspace at once (the .dockerignore leaves out tests, docs and caches): a new
# service needs no line here. --no-editable puts the services' packages, migrations included,
# into the virtual environment, so the final stage needs nothing else.
COPY . .
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-editable

FROM ${BASE_IMAGE}
RUN groupadd --system --gid 10001 taskhub \
    && useradd --system --uid 10001 --gid taskhub --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin taskhub \
    && mkdir -p /var/lib/taskhub \
    && chown taskhub:taskhub /var/lib/taskhub
COPY --from=builder /app/.venv /app/.venv
ENV PATH=/app/.venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    DATA_DIR=/var/lib/taskhub
WORKDIR /var/lib/taskhub
USER 10001:10001
EXPOSE 8000 8001 8002 8003 8004 8005 8006
ENTRYPOINT ["python", "-m", "taskhub_common.serve"]
