# syntax=docker/dockerfile:1
# The gateway image: docker build -t gateway . (see docs/deployment.md).
# Both stages use the same base, so the venv built in the first runs unchanged in the second.
ARG PYTHON_IMAGE=python:3.12-slim

# Stage 1: build the gateway's wheel and a venv with it and its dependencies. Every
# dependency is taken as a binary wheel (--only-binary), so no compiler is needed, here or later.
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY gateway ./gateway
RUN pip wheel --no-deps --wheel-dir /wheels . \
 && python -m venv --without-pip /opt/gateway \
 && pip --python /opt/gateway/bin/python install --only-binary=:all: /wheels/*.whl

# Stage 2: the runtime. Only the venv is copied: no source tree, wheels, build backend or pip cache.
FROM ${PYTHON_IMAGE}
RUN groupadd --system --gid 10001 gateway \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin gateway
COPY --from=build /opt/gateway /opt/gateway
# config.yaml (listen: 0.0.0.0:8080, so the port is reachable from outside the container),
# the users file and file secrets are mounted at run time; env secrets come with -e/--env-file.
# Relative paths in the config resolve against the directory that holds it.
ENV PATH=/opt/gateway/bin:$PATH \
    GATEWAY_CONFIG=/etc/gateway/config.yaml \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /etc/gateway
# Numeric, so Kubernetes' runAsNonRoot can verify it. The root filesystem may be read-only;
# only workers > 1 writes, to $TMPDIR (/tmp): then mount a tmpfs or an emptyDir there.
USER 10001:10001
# listen, admin_listen (their defaults)
EXPOSE 8080 9090
# The admin listener (default 127.0.0.1:9090: loopback inside the container's own network
# namespace is where this check runs). Change the port here if admin_listen changes it.
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9090/healthz', timeout=2)"]
# On SIGTERM the gateway drains for up to drain_timeout (20s by default), longer than
# docker stop's 10s: run with --stop-timeout 30, or shorten drain_timeout.
ENTRYPOINT ["gateway", "serve"]
