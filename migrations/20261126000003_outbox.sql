-- The transactional outbox behind WatchEvents (SPEC §7). Rows are written in the same
-- transaction as the change they describe. Their position is (tx_id, id): the writing
-- transaction's id, then a sequence. Readers deliver only rows whose transaction is older
-- than the oldest transaction still in flight, so a transaction that commits late can
-- never be skipped; and every writer locks the order before its first write, so for one
-- order transaction ids follow commit order.

CREATE TABLE outbox (
  id           bigint GENERATED ALWAYS AS IDENTITY,
  tx_id        xid8 NOT NULL DEFAULT pg_current_xact_id(),
  event_id     uuid NOT NULL UNIQUE,
  event_type   text NOT NULL,
  order_id     text NOT NULL,
  dispute_id   uuid,
  -- The event's place in the dispute's history (dispute_events.seq), when it has one.
  dispute_seq  integer,
  actor_role   text NOT NULL CONSTRAINT outbox_role_known CHECK (actor_role IN ('BUYER', 'SELLER', 'AGENT', 'SERVICE')),
  actor_id     text NOT NULL,
  occurred_at  timestamptz NOT NULL,
  payload      jsonb NOT NULL,
  trace_id     text,
  PRIMARY KEY (tx_id, id),
  CONSTRAINT outbox_seq_needs_dispute CHECK (dispute_seq IS NULL OR dispute_id IS NOT NULL)
);
CREATE INDEX outbox_occurred ON outbox (occurred_at);

-- Rows never change; retention deletes old ones and records how far it went.
CREATE TRIGGER outbox_immutable BEFORE UPDATE ON outbox FOR EACH ROW EXECUTE FUNCTION forbid_change();

CREATE TABLE outbox_retention (
  singleton        boolean PRIMARY KEY DEFAULT true CHECK (singleton),
  purged_to_tx_id  xid8 NOT NULL,
  purged_to_id     bigint NOT NULL
);
INSERT INTO outbox_retention VALUES (true, '0', 0);

-- Wake streaming readers when an outbox write commits.
CREATE FUNCTION outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_notify('dispute_outbox', '');
  RETURN NULL;
END $$;
CREATE TRIGGER outbox_notify AFTER INSERT ON outbox FOR EACH STATEMENT EXECUTE FUNCTION outbox_notify();
