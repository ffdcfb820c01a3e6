-- Telemetry on TimescaleDB: hypertables with compression and retention, and
-- the hourly rollup as a continuous aggregate with real-time aggregation.

SELECT create_hypertable('observations', 'time', chunk_time_interval => INTERVAL '1 day', migrate_data => true);
SELECT create_hypertable('gpu_samples', 'time', chunk_time_interval => INTERVAL '6 hours', migrate_data => true);

ALTER TABLE observations SET (timescaledb.compress, timescaledb.compress_segmentby = 'node_id',
                              timescaledb.compress_orderby = 'time DESC');
ALTER TABLE gpu_samples SET (timescaledb.compress, timescaledb.compress_segmentby = 'node_id, gpu_uuid',
                             timescaledb.compress_orderby = 'time DESC');
SELECT add_compression_policy('observations', INTERVAL '2 days');
SELECT add_compression_policy('gpu_samples', INTERVAL '1 day');
-- Observations stay a year (uptime over 7 d, jobs over 30 d, audits after);
-- per-GPU telemetry 30 days.
SELECT add_retention_policy('observations', INTERVAL '365 days');
SELECT add_retention_policy('gpu_samples', INTERVAL '30 days');

CREATE MATERIALIZED VIEW node_hourly
WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
SELECT node_id,
       time_bucket('1 hour', time) AS bucket,
       (count(DISTINCT slot) FILTER (WHERE ok))::integer AS ok_slots,
       count(*)::integer AS observations,
       (count(*) FILTER (WHERE NOT ok))::integer AS failed
  FROM observations
 GROUP BY node_id, time_bucket('1 hour', time)
WITH NO DATA;
SELECT add_continuous_aggregate_policy('node_hourly', start_offset => INTERVAL '3 days',
                                       end_offset => INTERVAL '1 hour', schedule_interval => INTERVAL '15 minutes');
