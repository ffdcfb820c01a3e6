-- fleetscope core schema: who and what is monitored, and what was decided.
-- Telemetry tables (observations, samples, rollups) are in 0002, per mode.

CREATE TABLE operators (
    operator_id bigserial PRIMARY KEY,
    name        text NOT NULL UNIQUE CHECK (length(name) BETWEEN 1 AND 200),
    -- SHA-256 of the token: tokens are 256-bit random, so a fast hash is
    -- enough (no dictionary to attack) and lets us look them up by index.
    token_hash  bytea NOT NULL UNIQUE,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE nodes (
    node_id       bigserial PRIMARY KEY,
    operator_id   bigint NOT NULL REFERENCES operators,
    name          text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    scrape_url    text CHECK (scrape_url IS NULL OR scrape_url ~ '^https?://'),
    -- The interval divides an hour so that no uptime slot straddles an hourly
    -- rollup bucket (fleetscope/uptime.py).
    interval_s    integer NOT NULL DEFAULT 15 CHECK (interval_s BETWEEN 5 AND 3600 AND 3600 % interval_s = 0),
    grace_s       integer NOT NULL CHECK (grace_s >= interval_s AND grace_s <= 86400),
    token_hash    bytea NOT NULL UNIQUE,
    registered_at timestamptz NOT NULL DEFAULT now(),
    paused        boolean NOT NULL DEFAULT false,
    -- Alert bookkeeping (healthchecks' alert_after): the next moment this node
    -- turns down if nothing arrives. Definitions never read these columns.
    last_ok_at    timestamptz,
    alert_after   timestamptz,
    UNIQUE (operator_id, name)
);
CREATE INDEX nodes_alert_after ON nodes (alert_after) WHERE alert_after IS NOT NULL;

-- GPU identity as claimed by a node. One physical GPU claimed by two nodes is
-- two rows here and one GPU in every count (counts use DISTINCT gpu_uuid).
CREATE TABLE gpus (
    node_id            bigint NOT NULL REFERENCES nodes ON DELETE CASCADE,
    gpu_uuid           text NOT NULL CHECK (length(gpu_uuid) BETWEEN 1 AND 128),
    gpu_index          integer,
    model              text,
    serial             text,
    pci_bus_id         text,
    pci_device_id      text,
    pci_subsystem_id   text,
    board_part_number  text,
    architecture       text,
    virtualization_mode text,
    memory_total_bytes bigint,
    sm_count           integer,
    max_sm_clock_mhz   integer,
    max_mem_clock_mhz  integer,
    driver_version     text,
    vbios_version      text,
    first_seen         timestamptz NOT NULL,
    last_seen          timestamptz NOT NULL,
    -- Set by the integrity checks when they have examined this identity.
    checked_at         timestamptz,
    -- Another node claims this UUID too (kept by gpus_mark_shared). The
    -- snapshot counts the GPUs of nodes without shared claims per node and
    -- keeps the per-UUID, deduplicating count for these few.
    shared             boolean NOT NULL DEFAULT false,
    PRIMARY KEY (node_id, gpu_uuid)
);
CREATE INDEX gpus_uuid ON gpus (gpu_uuid);
-- The claims not yet marked shared: marking a UUID claimed by a thousand
-- cloned nodes then touches only the new claim, not all earlier ones.
CREATE INDEX gpus_unshared ON gpus (gpu_uuid) WHERE NOT shared;

-- Claims per UUID, kept by gpus_mark_shared (a count never decreases: a
-- deleted claim leaves the flag set, which only sends that UUID down the
-- snapshot's exact per-UUID path).
CREATE TABLE gpu_claims (
    gpu_uuid text PRIMARY KEY,
    claims   integer NOT NULL
);

CREATE FUNCTION gpus_mark_shared() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- Once per statement, per UUID: the count row's upsert lock makes two
    -- first claims of one UUID committed at the same time wait for each other
    -- (the second then sees the first, and so does the UPDATE below, a new
    -- statement). Statement-level, with UUIDs in order: a row-level trigger
    -- would update a cloned UUID's count once per claim in one transaction
    -- (a version chain walked per claim: quadratic), and an advisory lock per
    -- UUID would exhaust the lock table on a bulk registration.
    INSERT INTO gpu_claims AS c (gpu_uuid, claims)
    SELECT gpu_uuid, count(*) FROM inserted GROUP BY gpu_uuid ORDER BY gpu_uuid
        ON CONFLICT (gpu_uuid) DO UPDATE SET claims = c.claims + EXCLUDED.claims;
    UPDATE gpus g SET shared = true
      FROM gpu_claims c
     WHERE c.gpu_uuid = g.gpu_uuid AND c.claims > 1 AND NOT g.shared
       AND c.gpu_uuid IN (SELECT gpu_uuid FROM inserted);
    RETURN NULL;
END $$;
CREATE TRIGGER gpus_shared AFTER INSERT ON gpus REFERENCING NEW TABLE AS inserted
    FOR EACH STATEMENT EXECUTE FUNCTION gpus_mark_shared();

-- Which GPUs a node reported, healthy or lost, in its successful
-- observations: a row each time the set changes (not per observation), so the
-- set in force at any observation is the latest row with since <= its time.
CREATE TABLE node_gpu_sets (
    node_id bigint NOT NULL REFERENCES nodes ON DELETE CASCADE,
    since   timestamptz NOT NULL,
    healthy text[] NOT NULL,
    lost    text[] NOT NULL DEFAULT '{}',
    PRIMARY KEY (node_id, since)
);

-- A set names only GPUs registered for its node by then, each once, none both
-- healthy and lost: the snapshot counts a node's online GPUs as the size of
-- its healthy set, which is exact only under these rules.
CREATE FUNCTION node_gpu_sets_check() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    missing text;
BEGIN
    IF (SELECT count(DISTINCT u) FROM unnest(NEW.healthy || NEW.lost) AS u)
       <> cardinality(NEW.healthy) + cardinality(NEW.lost) THEN
        RAISE EXCEPTION 'a GPU set of node % names a GPU twice, or as both healthy and lost', NEW.node_id
            USING ERRCODE = 'check_violation';
    END IF;
    SELECT u INTO missing FROM unnest(NEW.healthy || NEW.lost) AS u
     WHERE NOT EXISTS (SELECT 1 FROM gpus g
                        WHERE g.node_id = NEW.node_id AND g.gpu_uuid = u AND g.first_seen <= NEW.since)
     LIMIT 1;
    IF missing IS NOT NULL THEN
        RAISE EXCEPTION 'GPU % is in a GPU set of node % but was not registered for it by %',
            missing, NEW.node_id, NEW.since USING ERRCODE = 'foreign_key_violation';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER node_gpu_sets_registered BEFORE INSERT ON node_gpu_sets
    FOR EACH ROW EXECUTE FUNCTION node_gpu_sets_check();

-- The jobs (hires) ledger, posted by the marketplace; upsert by job_id.
CREATE TABLE jobs (
    job_id             text PRIMARY KEY CHECK (length(job_id) BETWEEN 1 AND 200),
    node_id            bigint NOT NULL REFERENCES nodes,
    gpu_count          integer NOT NULL CHECK (gpu_count > 0),
    price_per_gpu_hour numeric(14, 6) NOT NULL CHECK (price_per_gpu_hour >= 0),
    started_at         timestamptz NOT NULL,
    ended_at           timestamptz,
    status             text NOT NULL CHECK (status IN ('running', 'succeeded', 'failed')),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    CHECK (ended_at IS NULL OR ended_at >= started_at),
    CHECK ((status = 'running') = (ended_at IS NULL))
);
CREATE INDEX jobs_node_started ON jobs (node_id, started_at);
CREATE INDEX jobs_started ON jobs (started_at);
CREATE INDEX jobs_running ON jobs (node_id) WHERE ended_at IS NULL;

CREATE TABLE integrity_findings (
    finding_id  bigserial PRIMARY KEY,
    kind        text NOT NULL CHECK (kind IN ('duplicate_uuid', 'virtualized', 'spec_mismatch',
                                              'cloned_telemetry', 'identity_change', 'fleet_jump')),
    node_id     bigint REFERENCES nodes ON DELETE CASCADE,
    gpu_uuid    text,
    evidence    jsonb NOT NULL DEFAULT '{}',
    first_seen  timestamptz NOT NULL,
    last_seen   timestamptz NOT NULL,
    resolved_at timestamptz,
    resolution  text
);
-- At most one open finding per kind and subject: re-running a check finds nothing new.
CREATE UNIQUE INDEX integrity_findings_open
    ON integrity_findings (kind, coalesce(node_id, 0), coalesce(gpu_uuid, ''))
    WHERE resolved_at IS NULL;
CREATE INDEX integrity_findings_gpu ON integrity_findings (gpu_uuid) WHERE gpu_uuid IS NOT NULL;
CREATE INDEX integrity_findings_node ON integrity_findings (node_id) WHERE node_id IS NOT NULL;

-- Hourly published snapshots, a hash chain: each carries the previous hash.
CREATE TABLE published_snapshots (
    snapshot_id  bigserial PRIMARY KEY,
    as_of        timestamptz NOT NULL UNIQUE,
    sha256       text NOT NULL UNIQUE,
    prev_sha256  text,
    body         text NOT NULL,          -- the canonical JSON, byte for byte
    bundle_path  text,
    published_at timestamptz NOT NULL DEFAULT now()
);

-- When fleetscope itself was observing: a row per uninterrupted run of
-- collector heartbeats. Uptime leaves out slots outside every period.
CREATE TABLE observing_periods (
    collector_id text NOT NULL,
    started_at   timestamptz NOT NULL,
    last_beat_at timestamptz NOT NULL,
    PRIMARY KEY (collector_id, started_at),
    CHECK (last_beat_at >= started_at)
);
CREATE INDEX observing_periods_span ON observing_periods (last_beat_at, started_at);

-- Batches the writer has committed: a replayed or retried batch is skipped
-- whole, so at-least-once delivery never duplicates rows.
CREATE TABLE ingest_batches (
    batch_id   text PRIMARY KEY,
    written_at timestamptz NOT NULL DEFAULT now(),
    rows       integer NOT NULL
);

CREATE TABLE alert_channels (
    channel_id  bigserial PRIMARY KEY,
    operator_id bigint NOT NULL REFERENCES operators ON DELETE CASCADE,
    kind        text NOT NULL CHECK (kind IN ('webhook', 'slack', 'discord', 'email')),
    target      text NOT NULL CHECK (length(target) BETWEEN 3 AND 2000),
    created_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (operator_id, kind, target)
);

-- Alert state per node and every delivery attempt.
CREATE TABLE alert_state (
    node_id      bigint PRIMARY KEY REFERENCES nodes ON DELETE CASCADE,
    status       text NOT NULL CHECK (status IN ('new', 'up', 'late', 'down')),
    since        timestamptz NOT NULL,
    flaps        integer NOT NULL DEFAULT 0,
    muted_until  timestamptz
);

CREATE TABLE alert_deliveries (
    delivery_id  bigserial PRIMARY KEY,
    channel_id   bigint NOT NULL REFERENCES alert_channels ON DELETE CASCADE,
    node_id      bigint NOT NULL REFERENCES nodes ON DELETE CASCADE,
    event        text NOT NULL CHECK (event IN ('node_down', 'node_up')),
    payload      jsonb NOT NULL,
    attempt      integer NOT NULL DEFAULT 1,
    attempted_at timestamptz NOT NULL DEFAULT now(),
    ok           boolean NOT NULL,
    error        text
);
CREATE INDEX alert_deliveries_node ON alert_deliveries (node_id, attempted_at DESC);
