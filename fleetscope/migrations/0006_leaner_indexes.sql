-- Fewer indexes on the two tables the writer fills (issue 4: the writer's
-- rows/s against a bare COPY). Each index is paid on every row written; these
-- two had no reader the others do not serve:
--
-- - gpu_samples_uuid_time (gpu_uuid, time DESC): no query reads samples by
--   UUID alone. Per-GPU telemetry is read through its node (a GPU's nodes are
--   in gpus), which gpu_samples_node_time serves with node_id = ... AND
--   gpu_uuid = ... . A text key of 36+ bytes inserted at random places was
--   the dearest index of the table: dropping it took a 200,000-row COPY from
--   ~0.86 s to ~0.52 s here (bench/bench_writer.py, docs/benchmarks.md).
-- - observations_node_ok_time (node_id, time DESC) WHERE ok: the unique
--   (node_id, time) index serves the same lookups (a node's latest successful
--   observation, its uptime slots), reading past the failed rows, which are
--   few; the fleet-wide node states read observations_time.
--
-- Kept: gpu_samples (node_id, time DESC) and its time index (TimescaleDB's
-- own on a hypertable), observations' unique (node_id, time) and time index.
DROP INDEX IF EXISTS gpu_samples_uuid_time;
DROP INDEX IF EXISTS observations_node_ok_time;
