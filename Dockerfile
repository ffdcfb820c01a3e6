# fleetscope's Python services: the one-shot `fleetscope db init`, the
# collector and the dashboard (docker-compose.yml runs one container each,
# with its own command). Build from the repository root:
#   docker build -t fleetscope .
# The exporter, which runs on GPU hosts, has its own image (exporters/Dockerfile).
FROM python:3.12-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    FLEETSCOPE_SPOOL_DIR=/var/lib/fleetscope/spool

WORKDIR /src
COPY pyproject.toml README.md ./
COPY fleetscope ./fleetscope
COPY exporters ./exporters
COPY collector ./collector
COPY dashboard ./dashboard
RUN pip install --no-cache-dir . && rm -rf /src

# Not root; the spool (the collector's writer keeps data here while the
# database is away) is a volume owned by this user.
RUN useradd --system --no-create-home --uid 10001 fleetscope \
    && mkdir -p /var/lib/fleetscope/spool /var/lib/fleetscope/bundles \
    && chown -R fleetscope /var/lib/fleetscope
USER fleetscope
WORKDIR /
EXPOSE 9300 8050
# No entrypoint: each service names its `fleetscope ...` command in docker-compose.yml.
CMD ["fleetscope", "--help"]
