-- Integrity checks and published snapshots (issue 6).

-- A fleet-level finding (fleet_jump) names neither a node nor a GPU; its
-- subject says which event it is ("registered@2026-11-24T12:00:00Z"), so two
-- jumps can be open at once and re-running the check finds the same one.
ALTER TABLE integrity_findings ADD COLUMN subject text;
DROP INDEX integrity_findings_open;
CREATE UNIQUE INDEX integrity_findings_open
    ON integrity_findings (kind, coalesce(node_id, 0), coalesce(gpu_uuid, ''), coalesce(subject, ''))
    WHERE resolved_at IS NULL;
-- Each check reads its own kind's open findings every run.
CREATE INDEX integrity_findings_kind_open ON integrity_findings (kind) WHERE resolved_at IS NULL;

-- Registered and online GPU counts over time, one row per maintenance run:
-- the history fleet_jump judges a step change against (fleetscope/integrity/fleet_jump.py).
CREATE TABLE fleet_gpu_counts (
    at         timestamptz PRIMARY KEY,
    registered integer NOT NULL CHECK (registered >= 0),
    online     integer NOT NULL CHECK (online >= 0)
);


-- Each node's successful-observation slots as runs of consecutive slots
-- (fleetscope/slot_runs.py): what published bundles carry for uptime, kept
-- incrementally so a publication reads the last hour of raw observations,
-- not a week of them (400 M rows at 10,000 nodes).
CREATE TABLE node_slot_runs (
    node_id    bigint NOT NULL,
    interval_s integer NOT NULL,
    first_slot bigint NOT NULL,
    last_slot  bigint NOT NULL,
    PRIMARY KEY (node_id, first_slot),
    CHECK (last_slot >= first_slot)
);
-- Raw observations at or after this time are not in node_slot_runs yet.
CREATE TABLE node_slot_runs_watermark (
    only_row  boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    watermark timestamptz NOT NULL
);
