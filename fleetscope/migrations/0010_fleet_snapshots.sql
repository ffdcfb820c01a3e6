-- Each tick's fleet snapshot, computed once and stored (issue 17): the
-- collector's /metrics, the dashboard, its API and the CLI read this row
-- instead of each computing the same snapshot (fleetscope/snapshot.py,
-- stored_snapshot). The hash proves they agree.
CREATE TABLE fleet_snapshots (
    as_of        timestamptz NOT NULL,
    -- The snapshot and definitions versions it was computed under: a row
    -- computed by older definitions is never shown by newer code.
    versions     text NOT NULL,
    sha256       text NOT NULL,
    body         text NOT NULL,          -- the canonical JSON, byte for byte
    computed_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    -- How many processes computed this tick: 1, unless one computed it while
    -- another held the tick's lock too long (the later result is discarded).
    computations integer NOT NULL DEFAULT 1,
    PRIMARY KEY (as_of, versions)
);
