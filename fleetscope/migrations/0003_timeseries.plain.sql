-- Telemetry on plain PostgreSQL: the same tables and queries as TimescaleDB
-- mode, with time_bucket() provided over date_bin() and the hourly rollup kept
-- by fleetscope/rollups.py (called by the collector's maintenance loop).

-- TimescaleDB's time_bucket origin for sub-month widths is 2000-01-03
-- (a Monday); the shim uses the same origin so buckets agree across modes.
CREATE FUNCTION time_bucket(bucket_width interval, ts timestamptz) RETURNS timestamptz
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN date_bin(bucket_width, ts, timestamptz '2000-01-03 00:00:00+00');

CREATE INDEX observations_time ON observations (time);
CREATE INDEX gpu_samples_time ON gpu_samples (time);

-- The hourly rollup per node. node_hourly_mat holds closed buckets below the
-- watermark; the view node_hourly adds the live part from raw rows, as a
-- TimescaleDB continuous aggregate with real-time aggregation does.
CREATE TABLE node_hourly_mat (
    node_id      bigint NOT NULL,
    bucket       timestamptz NOT NULL,
    ok_slots     integer NOT NULL,
    observations integer NOT NULL,
    failed       integer NOT NULL,
    PRIMARY KEY (node_id, bucket)
);
CREATE INDEX node_hourly_mat_bucket ON node_hourly_mat (bucket);

CREATE TABLE rollup_watermarks (
    name             text PRIMARY KEY,
    watermark        timestamptz,  -- NULL: nothing materialised yet
    invalidated_from timestamptz  -- oldest late row written below the watermark
);
INSERT INTO rollup_watermarks (name) VALUES ('node_hourly');

CREATE VIEW node_hourly AS
SELECT node_id, bucket, ok_slots, observations, failed
  FROM node_hourly_mat
 WHERE bucket < (SELECT coalesce(watermark, '-infinity') FROM rollup_watermarks WHERE name = 'node_hourly')
UNION ALL
SELECT node_id,
       time_bucket('1 hour', time) AS bucket,
       (count(DISTINCT slot) FILTER (WHERE ok))::integer AS ok_slots,
       count(*)::integer AS observations,
       (count(*) FILTER (WHERE NOT ok))::integer AS failed
  FROM observations
 WHERE time >= (SELECT coalesce(watermark, '-infinity') FROM rollup_watermarks WHERE name = 'node_hourly')
 GROUP BY node_id, time_bucket('1 hour', time);
