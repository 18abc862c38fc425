# syntax=docker/dockerfile:1

# Build wheels of sesrx and of every dependency in a throw-away stage, so the
# runtime stage needs neither the sources nor a compiler.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY sesrx ./sesrx
RUN pip wheel --no-cache-dir --wheel-dir /wheels '.[s3]'

# The runtime: the installed package, an unprivileged user, no sources.
FROM python:3.11-slim
LABEL org.opencontainers.image.title="sesrx" \
      org.opencontainers.image.description="Local SMTP server that runs SES receipt rule sets"
# The wheel was built one stage up from these sources, and --no-index keeps
# pip to the versions that stage resolved: there is nothing to pin here.
# hadolint ignore=DL3013
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-cache-dir --root-user-action=ignore --no-index --find-links /wheels 'sesrx[s3]' \
 && groupadd --system --gid 10001 sesrx \
 && useradd --system --uid 10001 --gid 10001 --home-dir /nonexistent \
        --shell /usr/sbin/nologin sesrx \
 && mkdir -p /data /lambdas /etc/sesrx \
 && chown 10001:10001 /data
COPY docker/sesrx.yaml /etc/sesrx/sesrx.yaml
# Handlers mounted at /lambdas are importable by any configuration. Python
# writes no __pycache__ into a mounted folder that the host owns.
ENV SESRX_CONFIG=/etc/sesrx/sesrx.yaml \
    PYTHONPATH=/lambdas \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
USER 10001:10001
WORKDIR /data
VOLUME ["/data"]
EXPOSE 2525 8025
# `sesrx healthcheck` reads the API address from $SESRX_CONFIG, as serve does.
HEALTHCHECK --interval=10s --timeout=5s --start-period=10s --retries=3 \
    CMD ["sesrx", "healthcheck", "--timeout", "3"]
# Text logs by default; add "--log-format", "json" for one JSON object a line.
CMD ["sesrx", "serve"]
