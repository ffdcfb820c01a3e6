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
CREATE TABLE fleet_counts (
    at         timestamptz PRIMARY KEY,
    registered integer NOT NULL CHECK (registered >= 0),
    online     integer NOT NULL CHECK (online >= 0)
);

