-- Telemetry tables, the same in both modes; 0003 makes them hypertables
-- (TimescaleDB) or adds the plain-PostgreSQL equivalents.

-- One row per scrape attempt or accepted push, at the collector's receive
-- time (a host cannot backfill its own uptime).
CREATE TABLE observations (
    time         timestamptz NOT NULL,
    node_id      bigint NOT NULL,
    ok           boolean NOT NULL,
    source       text NOT NULL CHECK (source IN ('push', 'scrape')),
    -- floor(epoch(time) / interval_s) under the interval in force when it was
    -- received: the uptime grid cell, stored so rollups need no join.
    slot         bigint NOT NULL,
    latency_ms   real,
    error        text,
    collector_id text
);

-- GPU telemetry: one wide row per GPU per sample (not one per metric).
CREATE TABLE gpu_samples (
    time          timestamptz NOT NULL,
    node_id       bigint NOT NULL,
    gpu_uuid      text NOT NULL,
    gpu_index     smallint,
    gpu_util      real,
    mem_copy_util real,
    fb_used_mib   real,
    fb_free_mib   real,
    power_w       real,
    energy_mj     double precision,
    temp_c        real,
    sm_clock_mhz  real,
    mem_clock_mhz real,
    pcie_replay   bigint,
    ecc_sbe       bigint,
    ecc_dbe       bigint,
    xid_last      integer,
    lost          boolean NOT NULL DEFAULT false
);

-- Node state at t reads the latest successful observation per node.
CREATE UNIQUE INDEX observations_node_time ON observations (node_id, time);
CREATE INDEX observations_node_ok_time ON observations (node_id, time DESC) WHERE ok;
CREATE INDEX gpu_samples_node_time ON gpu_samples (node_id, time DESC);
CREATE INDEX gpu_samples_uuid_time ON gpu_samples (gpu_uuid, time DESC);
