# syntax=docker/dockerfile:1

# Build a wheel of sesrx and its dependencies in a throw-away stage.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY sesrx ./sesrx
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

# The runtime: no compilers, no sources, an unprivileged user.
FROM python:3.11-slim
LABEL org.opencontainers.image.title="sesrx" \
      org.opencontainers.image.description="Local SMTP server that runs SES receipt rule sets"
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index --find-links /wheels sesrx \
 && useradd --system --uid 10001 --home-dir /nonexistent --shell /usr/sbin/nologin sesrx \
 && mkdir -p /data /lambdas /etc/sesrx \
 && chown sesrx /data
COPY docker/sesrx.yaml /etc/sesrx/sesrx.yaml
ENV PYTHONPATH=/lambdas PYTHONUNBUFFERED=1
USER sesrx
VOLUME ["/data"]
EXPOSE 2525
CMD ["sesrx", "serve", "--config", "/etc/sesrx/sesrx.yaml"]
