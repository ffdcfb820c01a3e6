#!/bin/sh
# Runs once, when the database container initialises an empty data directory
# (the image's /docker-entrypoint-initdb.d): a read-only role for Grafana, so
# that a dashboard query can never change fleetscope's data.
# pg_read_all_data also covers the tables later migrations create.
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
     -v reader="${FLEETSCOPE_GRAFANA_DB_USER:-grafana_reader}" \
     -v password="$FLEETSCOPE_GRAFANA_DB_PASSWORD" <<'SQL'
CREATE ROLE :"reader" LOGIN PASSWORD :'password';
GRANT pg_read_all_data TO :"reader";
SQL
