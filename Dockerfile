# syntax=docker/dockerfile:1
# Build a wheel in a throwaway stage; the final image has no compiler and no pip cache.
FROM python:3.12-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY gateway ./gateway
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.12-slim
RUN useradd --system --uid 10001 --no-create-home gateway
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
USER 10001
WORKDIR /etc/gateway
# config.yaml and secrets are mounted at run time, e.g. -v ./config.yaml:/etc/gateway/config.yaml
ENV GATEWAY_CONFIG=/etc/gateway/config.yaml PYTHONUNBUFFERED=1
EXPOSE 8080 9090
HEALTHCHECK --interval=10s --timeout=3s CMD ["python", "-c", "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:9090/healthz', timeout=2).status != 200)"]
ENTRYPOINT ["gateway", "serve"]
