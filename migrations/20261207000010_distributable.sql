-- Every order-scoped table keyed by its order (README, "Running on Citus"), so the schema
-- can be distributed by order_id with each order's rows on one shard: every primary key,
-- unique constraint and foreign key includes order_id; the history and the idempotency
-- keys carry it; a dispute's order is found through a directory keyed by dispute id.
-- On plain PostgreSQL the same schema, and what the service answers, are unchanged.

-- A dispute's history carries its order. The rows are immutable: the guard steps aside
-- for this one backfill.
ALTER TABLE dispute_events ADD COLUMN order_id text;
ALTER TABLE dispute_events DISABLE TRIGGER dispute_events_immutable;
UPDATE dispute_events e SET order_id = d.order_id FROM disputes d WHERE d.dispute_id = e.dispute_id;
ALTER TABLE dispute_events ENABLE TRIGGER dispute_events_immutable;
ALTER TABLE dispute_events ALTER COLUMN order_id SET NOT NULL;

-- Keys with the order in them (on Citus a key must hold the distribution column). A
-- dispute's id alone is no longer a key: ids are UUIDv7 the service makes, and the
-- directory below holds each id once.
ALTER TABLE dispute_events DROP CONSTRAINT dispute_events_dispute_id_fkey;
ALTER TABLE settlements DROP CONSTRAINT settlements_dispute_id_fkey;
ALTER TABLE disputes DROP CONSTRAINT disputes_pkey;
ALTER TABLE disputes ADD CONSTRAINT disputes_pkey PRIMARY KEY (dispute_id, order_id);
ALTER TABLE dispute_events DROP CONSTRAINT dispute_events_pkey;
ALTER TABLE dispute_events
  ADD CONSTRAINT dispute_events_pkey PRIMARY KEY (order_id, dispute_id, seq),
  ADD CONSTRAINT dispute_events_dispute_fkey FOREIGN KEY (dispute_id, order_id) REFERENCES disputes (dispute_id, order_id);
ALTER TABLE settlements
  ADD CONSTRAINT settlements_dispute_fkey FOREIGN KEY (dispute_id, order_id) REFERENCES disputes (dispute_id, order_id);

-- Where each dispute lives: written once, when the command that opened the dispute has
-- committed (keyed by dispute, the row may live on another shard than the dispute), and
-- read before a command on a dispute begins, so that command's transaction goes to its
-- order's shard only. Never changes.
CREATE TABLE dispute_directory (
  dispute_id  uuid PRIMARY KEY,
  order_id    text NOT NULL
);
INSERT INTO dispute_directory (dispute_id, order_id) SELECT dispute_id, order_id FROM disputes;
CREATE TRIGGER dispute_directory_immutable BEFORE UPDATE OR DELETE ON dispute_directory
  FOR EACH ROW EXECUTE FUNCTION forbid_change();

-- Idempotency keys are scoped per order (README, "Idempotency"). A committed key always
-- has a reply, and every reply (an order or a dispute) names its order; a key without one
-- was never acknowledged, and is dropped.
ALTER TABLE idempotency_keys ADD COLUMN order_id text;
UPDATE idempotency_keys SET order_id = reply->>'order_id';
DELETE FROM idempotency_keys WHERE order_id IS NULL;
ALTER TABLE idempotency_keys ALTER COLUMN order_id SET NOT NULL;
ALTER TABLE idempotency_keys DROP CONSTRAINT idempotency_keys_pkey;
ALTER TABLE idempotency_keys ADD CONSTRAINT idempotency_keys_pkey
  PRIMARY KEY (order_id, actor_role, actor_id, rpc, request_id);

-- The outbox's rows by order; the stream still reads them by (tx_id, id).
ALTER TABLE outbox DROP CONSTRAINT outbox_pkey;
ALTER TABLE outbox DROP CONSTRAINT outbox_event_id_key;
ALTER TABLE outbox
  ADD CONSTRAINT outbox_pkey PRIMARY KEY (order_id, tx_id, id),
  ADD CONSTRAINT outbox_event_id_key UNIQUE (event_id, order_id);
CREATE INDEX outbox_position ON outbox (tx_id, id);

-- A setback always names its order; a dispute's also the dispute.
ALTER TABLE deadline_setbacks DROP CONSTRAINT deadline_setbacks_one_candidate;
ALTER TABLE deadline_setbacks DROP CONSTRAINT deadline_setbacks_dispute_key;
ALTER TABLE deadline_setbacks DROP CONSTRAINT deadline_setbacks_order_key;
UPDATE deadline_setbacks s SET order_id = d.order_id FROM disputes d WHERE d.dispute_id = s.dispute_id;
DELETE FROM deadline_setbacks WHERE order_id IS NULL;
ALTER TABLE deadline_setbacks ALTER COLUMN order_id SET NOT NULL;
CREATE UNIQUE INDEX deadline_setbacks_dispute_key ON deadline_setbacks (order_id, dispute_id)
  WHERE dispute_id IS NOT NULL;
CREATE UNIQUE INDEX deadline_setbacks_order_key ON deadline_setbacks (order_id)
  WHERE dispute_id IS NULL;
-- The one table without a primary key (a dispute's setback and its order's share the
-- order): moving a shard online (logical replication) needs its rows identified.
ALTER TABLE deadline_setbacks REPLICA IDENTITY FULL;

-- The store record's counters (migration 6) branch on the trigger's argument, not on
-- TG_TABLE_NAME, which on a Citus shard is the shard's name (orders_102008).
CREATE OR REPLACE FUNCTION seller_stats_count() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  at timestamptz;
  registered int := 0; inr int := 0; nad int := 0; qi int := 0;
  cancelled int := 0; buyer int := 0; partial int := 0; seller int := 0;
BEGIN
  IF TG_ARGV[0] = 'registered' THEN
    at := NEW.created_at; registered := 1;
  ELSIF TG_ARGV[0] = 'opened' THEN
    at := NEW.created_at;
    inr := (NEW.reason = 'ITEM_NOT_RECEIVED')::int;
    nad := (NEW.reason = 'NOT_AS_DESCRIBED')::int;
    qi := (NEW.reason = 'QUALITY_ISSUE')::int;
  ELSE
    -- An update that ended the dispute (the trigger's WHEN clause): count its outcome.
    at := NEW.updated_at;
    cancelled := (NEW.outcome = 'CANCELLED_BY_BUYER')::int;
    buyer := (NEW.outcome = 'RESOLVED_BUYER_FAVOUR')::int;
    partial := (NEW.outcome = 'RESOLVED_PARTIAL')::int;
    seller := (NEW.outcome = 'RESOLVED_SELLER_FAVOUR')::int;
  END IF;
  INSERT INTO seller_daily_stats AS s (seller_id, day, orders_registered, opened_item_not_received,
      opened_not_as_described, opened_quality_issue, ended_cancelled_by_buyer,
      ended_resolved_buyer_favour, ended_resolved_partial, ended_resolved_seller_favour)
  VALUES (NEW.seller_id, (at AT TIME ZONE 'UTC')::date, registered, inr, nad, qi,
          cancelled, buyer, partial, seller)
  ON CONFLICT (seller_id, day) DO UPDATE SET
    orders_registered = s.orders_registered + registered,
    opened_item_not_received = s.opened_item_not_received + inr,
    opened_not_as_described = s.opened_not_as_described + nad,
    opened_quality_issue = s.opened_quality_issue + qi,
    ended_cancelled_by_buyer = s.ended_cancelled_by_buyer + cancelled,
    ended_resolved_buyer_favour = s.ended_resolved_buyer_favour + buyer,
    ended_resolved_partial = s.ended_resolved_partial + partial,
    ended_resolved_seller_favour = s.ended_resolved_seller_favour + seller;
  RETURN NULL;
END $$;
DROP TRIGGER orders_count_registered ON orders;
DROP TRIGGER disputes_count_opened ON disputes;
DROP TRIGGER disputes_count_ended ON disputes;
CREATE TRIGGER orders_count_registered AFTER INSERT ON orders
  FOR EACH ROW EXECUTE FUNCTION seller_stats_count('registered');
CREATE TRIGGER disputes_count_opened AFTER INSERT ON disputes
  FOR EACH ROW EXECUTE FUNCTION seller_stats_count('opened');
CREATE TRIGGER disputes_count_ended AFTER UPDATE OF outcome ON disputes
  FOR EACH ROW WHEN (OLD.outcome IS NULL AND NEW.outcome IS NOT NULL)
  EXECUTE FUNCTION seller_stats_count('ended');

-- The guards name the rule they enforce in their message too: a refusal raised on a Citus
-- shard reaches the client without its constraint name.
CREATE OR REPLACE FUNCTION orders_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF (NEW.order_id, NEW.buyer_id, NEW.seller_id, NEW.currency_code, NEW.amount_minor, NEW.created_at)
     IS DISTINCT FROM (OLD.order_id, OLD.buyer_id, OLD.seller_id, OLD.currency_code, OLD.amount_minor, OLD.created_at) THEN
    RAISE EXCEPTION 'registered order facts are immutable (constraint "orders_facts_immutable")'
      USING ERRCODE = 'integrity_constraint_violation', CONSTRAINT = 'orders_facts_immutable';
  END IF;
  IF OLD.funds_state <> 'HELD' AND (NEW.funds_state, NEW.refunded_minor, NEW.released_minor, NEW.settled_at, NEW.disputes_closed)
     IS DISTINCT FROM (OLD.funds_state, OLD.refunded_minor, OLD.released_minor, OLD.settled_at, OLD.disputes_closed) THEN
    RAISE EXCEPTION 'a settled order never changes (constraint "orders_settled_immutable")'
      USING ERRCODE = 'integrity_constraint_violation', CONSTRAINT = 'orders_settled_immutable';
  END IF;
  IF NEW.protection_ends_at < OLD.protection_ends_at THEN
    RAISE EXCEPTION 'protection may only move later (constraint "orders_protection_only_later")'
      USING ERRCODE = 'integrity_constraint_violation', CONSTRAINT = 'orders_protection_only_later';
  END IF;
  IF OLD.disputes_closed AND NOT NEW.disputes_closed THEN
    RAISE EXCEPTION 'an order closed to disputes stays closed (constraint "orders_closed_stays_closed")'
      USING ERRCODE = 'integrity_constraint_violation', CONSTRAINT = 'orders_closed_stays_closed';
  END IF;
  IF NEW.dispute_count < OLD.dispute_count THEN
    RAISE EXCEPTION 'the dispute count only grows (constraint "orders_dispute_count_only_grows")'
      USING ERRCODE = 'integrity_constraint_violation', CONSTRAINT = 'orders_dispute_count_only_grows';
  END IF;
  RETURN NEW;
END $$;

CREATE OR REPLACE FUNCTION disputes_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF OLD.state IN ('CANCELLED', 'RESOLVED') THEN
    RAISE EXCEPTION 'a terminal dispute never changes (constraint "disputes_terminal_immutable")'
      USING ERRCODE = 'integrity_constraint_violation', CONSTRAINT = 'disputes_terminal_immutable';
  END IF;
  IF (NEW.dispute_id, NEW.order_id, NEW.buyer_id, NEW.seller_id, NEW.reason, NEW.created_at)
     IS DISTINCT FROM (OLD.dispute_id, OLD.order_id, OLD.buyer_id, OLD.seller_id, OLD.reason, OLD.created_at) THEN
    RAISE EXCEPTION 'a dispute''s parties are immutable (constraint "disputes_parties_immutable")'
      USING ERRCODE = 'integrity_constraint_violation', CONSTRAINT = 'disputes_parties_immutable';
  END IF;
  RETURN NEW;
END $$;

CREATE OR REPLACE FUNCTION disputes_proposal_fixed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF OLD.proposal_remedy IS NOT NULL AND
     (NEW.proposal_remedy, NEW.proposal_refund_currency, NEW.proposal_refund_minor, NEW.proposal_message)
     IS DISTINCT FROM (OLD.proposal_remedy, OLD.proposal_refund_currency, OLD.proposal_refund_minor, OLD.proposal_message) THEN
    RAISE EXCEPTION 'a proposal is never edited (constraint "disputes_proposal_fixed")'
      USING ERRCODE = 'integrity_constraint_violation', CONSTRAINT = 'disputes_proposal_fixed';
  END IF;
  RETURN NEW;
END $$;

CREATE OR REPLACE FUNCTION disputes_record_fixed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF OLD.replacement_agreed_at IS NOT NULL AND
     (NEW.replacement_agreed_at IS DISTINCT FROM OLD.replacement_agreed_at
      OR (OLD.replacement_shipped_at IS NOT NULL AND
          (NEW.replacement_carrier, NEW.replacement_tracking, NEW.replacement_shipped_at)
          IS DISTINCT FROM (OLD.replacement_carrier, OLD.replacement_tracking, OLD.replacement_shipped_at))) THEN
    RAISE EXCEPTION 'a replacement, once agreed or shipped, is never edited (constraint "disputes_replacement_fixed")'
      USING ERRCODE = 'integrity_constraint_violation', CONSTRAINT = 'disputes_replacement_fixed';
  END IF;
  IF OLD.seller_first_response_at IS NOT NULL
     AND NEW.seller_first_response_at IS DISTINCT FROM OLD.seller_first_response_at THEN
    RAISE EXCEPTION 'the seller''s first response is set once (constraint "disputes_first_response_fixed")'
      USING ERRCODE = 'integrity_constraint_violation', CONSTRAINT = 'disputes_first_response_fixed';
  END IF;
  RETURN NEW;
END $$;

-- On a shard TG_TABLE_NAME is the shard's name (orders_102008): the rule is the table's.
CREATE OR REPLACE FUNCTION forbid_change() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  rule text := regexp_replace(TG_TABLE_NAME, '_[0-9]+$', '') || '_immutable';
BEGIN
  RAISE EXCEPTION '% rows are immutable (constraint "%")', regexp_replace(TG_TABLE_NAME, '_[0-9]+$', ''), rule
    USING ERRCODE = 'integrity_constraint_violation', CONSTRAINT = rule;
END $$;

-- Distributes the schema when the database has the citus extension; does nothing on
-- plain PostgreSQL, or for a table already distributed (what it drops and creates first is
-- idempotent too). `dispute-service migrate` calls it after every run, so a database that
-- gains the extension later is distributed then. Every order-scoped table by order_id,
-- co-located with orders; the directory by dispute_id; the small tables of one row each
-- stay on the coordinator.
CREATE FUNCTION distribute_by_order() RETURNS void LANGUAGE plpgsql AS $$
DECLARE
  t text;
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'citus') THEN
    RETURN;
  END IF;
  -- The guard triggers run on the shards, each on its own row (no trigger left here
  -- writes another table). A transaction that ran NOTIFY cannot prepare: on Citus the
  -- stream polls instead of hearing each commit (README, "Running on Citus").
  SET LOCAL citus.enable_unsafe_triggers = on;
  SET LOCAL citus.multi_shard_modify_mode = 'sequential';
  DROP TRIGGER IF EXISTS outbox_notify ON outbox;
  -- The store record's counter row per seller and day would be written from every
  -- order's shard: on Citus the record is counted from the orders and disputes instead,
  -- through these indexes (README, "The store's record").
  DROP TRIGGER IF EXISTS orders_count_registered ON orders;
  DROP TRIGGER IF EXISTS disputes_count_opened ON disputes;
  DROP TRIGGER IF EXISTS disputes_count_ended ON disputes;
  DROP TABLE IF EXISTS seller_daily_stats;
  CREATE INDEX IF NOT EXISTS orders_seller_created ON orders (seller_id, created_at);
  CREATE INDEX IF NOT EXISTS disputes_seller_created ON disputes (seller_id, created_at) INCLUDE (reason);
  CREATE INDEX IF NOT EXISTS disputes_seller_ended ON disputes (seller_id, updated_at) INCLUDE (outcome)
    WHERE outcome IS NOT NULL;
  FOREACH t IN ARRAY ARRAY['orders', 'disputes', 'settlements', 'dispute_events', 'idempotency_keys',
                           'outbox', 'deadline_setbacks'] LOOP
    IF NOT EXISTS (SELECT 1 FROM pg_dist_partition WHERE logicalrelid = t::regclass) THEN
      IF t = 'orders' THEN
        PERFORM create_distributed_table(t, 'order_id');
      ELSE
        PERFORM create_distributed_table(t, 'order_id', colocate_with => 'orders');
      END IF;
    END IF;
  END LOOP;
  IF NOT EXISTS (SELECT 1 FROM pg_dist_partition WHERE logicalrelid = 'dispute_directory'::regclass) THEN
    PERFORM create_distributed_table('dispute_directory', 'dispute_id', colocate_with => 'none');
  END IF;
END $$;

SELECT distribute_by_order();
