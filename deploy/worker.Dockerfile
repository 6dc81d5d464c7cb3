# The central Faust worker. Build from the repository root:
#   docker build -f deploy/worker.Dockerfile -t retail-worker .
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY app ./app
COPY agents ./agents
COPY domain ./domain
COPY tables ./tables
COPY sink ./sink
COPY outlet_agent ./outlet_agent
# the wheel lacks sink/migrations/*.sql until pyproject's package-data lists them: copied
RUN python -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-cache-dir --upgrade pip \
 && /opt/venv/bin/pip install --no-cache-dir . \
 && cp sink/migrations/*.sql /opt/venv/lib/python3.11/site-packages/sink/migrations/

FROM python:3.11-slim
# no dev extras: the embedded broker/PostgreSQL (devstack) are never in the image
COPY --from=build /opt/venv /opt/venv
RUN groupadd --system --gid 10001 retail \
 && useradd --system --uid 10001 --gid retail --home-dir /data --shell /usr/sbin/nologin retail \
 && mkdir -p /data && chown retail:retail /data
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    RETAIL_DATA_DIR=/data \
    RETAIL_WEB_HOST=0.0.0.0 \
    RETAIL_WEB_PORT=6066
USER retail:retail
WORKDIR /data
VOLUME ["/data"]
EXPOSE 6066
HEALTHCHECK --interval=15s --timeout=3s --start-period=60s --retries=3 \
  CMD ["python", "-c", "import os,sys,urllib.request as u; sys.exit(0 if u.urlopen('http://127.0.0.1:%s/health' % os.environ.get('RETAIL_WEB_PORT','6066'), timeout=2).status == 200 else 1)"]
ENTRYPOINT ["faust", "-A", "app", "worker", "-l", "info"]
