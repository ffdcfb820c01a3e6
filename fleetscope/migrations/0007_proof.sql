-- Proof of GPU (issue 14; fleetscope/proof.py, docs/proof.md): rounds, one
-- challenge per claimed GPU with its commitment, openings and verdict, and
-- the integrity finding a failed proof opens.

CREATE TABLE proof_rounds (
    round_id         bigserial PRIMARY KEY,
    opened_at        timestamptz NOT NULL,
    -- Hex; told to each challenged host when it starts, published with the round.
    seed             text NOT NULL,
    protocol_version integer NOT NULL,
    -- The throughput scale the round was sized with (1 in production; the
    -- demo and the tests prove on CPUs): published so anyone can re-size it.
    scale            double precision NOT NULL CHECK (scale > 0),
    share            double precision NOT NULL CHECK (share > 0 AND share <= 1),
    collector_id     text
);
CREATE INDEX proof_rounds_opened ON proof_rounds (opened_at);

CREATE TABLE proof_challenges (
    round_id         bigint NOT NULL REFERENCES proof_rounds ON DELETE CASCADE,
    node_id          bigint NOT NULL REFERENCES nodes ON DELETE CASCADE,
    gpu_uuid         text NOT NULL,
    -- The claimed model (its reference row) and memory, and the work it was
    -- given: the work is re-derived from these alone (fleetscope verify),
    -- whatever the host reports later.
    model            text NOT NULL,
    memory_total_bytes bigint,
    n                integer NOT NULL CHECK (n > 0),
    k                integer NOT NULL CHECK (k > 0),
    reference_tflops double precision NOT NULL,
    budget_s         double precision NOT NULL,
    offered_at       timestamptz NOT NULL,
    -- When the host asked for the seed; rtt_s = started_at - offered_at, as counted (at most proof.MAX_RTT_S).
    started_at       timestamptz,
    rtt_s            double precision,
    committed_at     timestamptz,
    root             text,
    rows             integer[],
    columns          integer[],
    -- Per opened row: index, leaf, Merkle path, the checked entries, and the
    -- whole row (base64) when it is small enough to publish (docs/proof.md).
    openings         jsonb,
    verdict          text CHECK (verdict IN ('passed', 'failed', 'no_answer')),
    reason           text,
    seconds          double precision,
    tflops           double precision,
    decided_at       timestamptz,
    PRIMARY KEY (round_id, node_id, gpu_uuid)
);
-- A GPU's verdicts by time: verified = a pass in the last 24 h (fleetscope/proof.py, PROVED_SQL).
CREATE INDEX proof_challenges_gpu ON proof_challenges (node_id, gpu_uuid, decided_at DESC) WHERE verdict IS NOT NULL;
CREATE INDEX proof_challenges_passed ON proof_challenges (decided_at) WHERE verdict = 'passed';
-- The collector closes what is still undecided after a restart.
CREATE INDEX proof_challenges_open ON proof_challenges (round_id) WHERE verdict IS NULL;

ALTER TABLE integrity_findings DROP CONSTRAINT integrity_findings_kind_check;
ALTER TABLE integrity_findings ADD CONSTRAINT integrity_findings_kind_check
    CHECK (kind IN ('duplicate_uuid', 'virtualized', 'spec_mismatch', 'cloned_telemetry', 'identity_change',
                    'fleet_jump', 'proof_failed'));

-- Each claim's latest passed proof, kept by the trigger below: the snapshot
-- reads "verified" from this column for the 80,000 claims instead of
-- aggregating the day's passes (fleetscope/proof.py, PROVED_CLAIM_SQL).
ALTER TABLE gpus ADD COLUMN last_passed_at timestamptz;

CREATE FUNCTION gpus_note_passed_proof() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE gpus g SET last_passed_at = p.decided_at
      FROM (SELECT node_id, gpu_uuid, max(decided_at) AS decided_at FROM changed
             WHERE verdict = 'passed' AND decided_at IS NOT NULL GROUP BY node_id, gpu_uuid) p
     WHERE g.node_id = p.node_id AND g.gpu_uuid = p.gpu_uuid
       AND (g.last_passed_at IS NULL OR g.last_passed_at < p.decided_at);
    RETURN NULL;
END $$;
CREATE TRIGGER proof_challenges_passed_insert AFTER INSERT ON proof_challenges
    REFERENCING NEW TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION gpus_note_passed_proof();
CREATE TRIGGER proof_challenges_passed_update AFTER UPDATE ON proof_challenges
    REFERENCING NEW TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION gpus_note_passed_proof();
