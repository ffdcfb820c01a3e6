-- Offline alerts (issue 7): the alert loop's progress, flap damping per node,
-- and an outbox of messages so that delivery runs apart from evaluation.
-- collector/alerts.py and docs/alerts.md explain the rules.

-- How far the alert loop has read observations: each round reads the ok rows
-- after this mark (less an overlap for rows committed late by the writer)
-- and keeps nodes.last_ok_at / nodes.alert_after from them. One row.
CREATE TABLE alert_progress (
    one        boolean PRIMARY KEY DEFAULT true CHECK (one),
    scanned_to timestamptz  -- NULL: never ran; the first round probes every node once
);
INSERT INTO alert_progress DEFAULT VALUES;

-- Flap damping: at most a fixed number of messages per node per window
-- (collector/alerts.py, MAX_MESSAGES_PER_WINDOW). flaps (0001) counts the
-- changes left unsent since the last message; muted_until (0001) is the end
-- of a window whose quota is spent.
ALTER TABLE alert_state
    ADD COLUMN window_started_at timestamptz,
    ADD COLUMN window_messages   integer NOT NULL DEFAULT 0,
    ADD COLUMN notified          text CHECK (notified IN ('node_down', 'node_up'));
CREATE INDEX alert_state_muted ON alert_state (muted_until) WHERE muted_until IS NOT NULL;

-- One row per message per channel. Evaluation inserts rows; the delivery
-- loop claims due ones (a lease in claimed_until, so two collector replicas
-- never send one message twice), sends, and records each attempt in
-- alert_deliveries.
CREATE TABLE alert_outbox (
    outbox_id       bigserial PRIMARY KEY,
    channel_id      bigint NOT NULL REFERENCES alert_channels ON DELETE CASCADE,
    node_id         bigint NOT NULL REFERENCES nodes ON DELETE CASCADE,
    event           text NOT NULL CHECK (event IN ('node_down', 'node_up')),
    payload         jsonb NOT NULL,
    created_at      timestamptz NOT NULL,
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL,
    claimed_until   timestamptz,
    done_at         timestamptz,
    delivered       boolean,  -- true: sent; false: gave up; NULL: pending
    CHECK ((done_at IS NULL) = (delivered IS NULL))
);
CREATE INDEX alert_outbox_due ON alert_outbox (next_attempt_at) WHERE done_at IS NULL;
-- Messages to one channel about one node go out in order: a pending earlier
-- one holds back the later ones (found by this index).
CREATE INDEX alert_outbox_pending ON alert_outbox (channel_id, node_id, outbox_id) WHERE done_at IS NULL;
CREATE INDEX alert_outbox_done ON alert_outbox (done_at) WHERE done_at IS NOT NULL;

ALTER TABLE alert_deliveries
    ADD COLUMN outbox_id bigint REFERENCES alert_outbox ON DELETE SET NULL,
    ADD COLUMN kind      text;  -- the channel's kind when it was sent
CREATE INDEX alert_deliveries_outbox ON alert_deliveries (outbox_id) WHERE outbox_id IS NOT NULL;
