# The outlet agent (one per store). Build from the repository root:
#   docker build -f deploy/outlet.Dockerfile -t retail-outlet .
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY app ./app
COPY agents ./agents
COPY domain ./domain
COPY tables ./tables
COPY sink ./sink
COPY outlet_agent ./outlet_agent
RUN python -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-cache-dir --upgrade pip \
 && /opt/venv/bin/pip install --no-cache-dir .

FROM python:3.11-slim
COPY --from=build /opt/venv /opt/venv
RUN groupadd --system --gid 10001 retail \
 && useradd --system --uid 10001 --gid retail --home-dir /data --shell /usr/sbin/nologin retail \
 && mkdir -p /data && chown retail:retail /data
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    RETAIL_DATA_DIR=/data \
    RETAIL_OUTLET_HOST=0.0.0.0 \
    RETAIL_OUTLET_PORT=8700
USER retail:retail
WORKDIR /data
# the SQLite write-ahead log: a volume on a disk that survives the container
VOLUME ["/data"]
EXPOSE 8700
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import os,sys,urllib.request as u; sys.exit(0 if u.urlopen('http://127.0.0.1:%s/health' % os.environ.get('RETAIL_OUTLET_PORT','8700'), timeout=2).status == 200 else 1)"]
ENTRYPOINT ["python", "-m", "outlet_agent"]
CMD ["run"]
