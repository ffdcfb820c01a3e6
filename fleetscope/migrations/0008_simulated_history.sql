-- Simulated history (issue 16): spans of data that a simulator wrote, not
-- data fleetscope observed. ``fleetscope demo`` writes a week of history for
-- its simulated fleet before its services start (collector/sim_history.py),
-- so that its pages have a past from the first second; the explorer labels
-- every chart and page whose time range overlaps a span listed here
-- (fleetscope/simulated.py).
--
-- What the span covers carries its marker too: the history's observations
-- and observing periods have collector_id = this row's collector_id, its
-- jobs a job_id starting with job_prefix. Proofs of GPU are never simulated:
-- "verified" means real work (docs/proof.md).

CREATE TABLE simulated_history (
    collector_id text PRIMARY KEY CHECK (length(collector_id) BETWEEN 1 AND 200),
    started_at   timestamptz NOT NULL,
    ended_at     timestamptz NOT NULL,
    job_prefix   text NOT NULL,
    nodes        integer NOT NULL CHECK (nodes >= 0),
    note         text NOT NULL,
    written_at   timestamptz NOT NULL DEFAULT now(),
    CHECK (ended_at > started_at)
);
