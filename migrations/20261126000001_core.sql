-- The core schema: orders and their escrowed funds, disputes, the settlement ledger,
-- per-dispute history and idempotency keys. Every invariant the code enforces is backed
-- here too, so no bug and no hand-written SQL can break it.

CREATE FUNCTION forbid_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION '% rows are immutable', TG_TABLE_NAME USING ERRCODE = 'integrity_constraint_violation';
END $$;

CREATE TABLE orders (
  order_id           text PRIMARY KEY CONSTRAINT orders_order_id_format CHECK (order_id ~ '^[A-Za-z0-9._:-]{1,64}$'),
  buyer_id           text NOT NULL CONSTRAINT orders_buyer_id_format CHECK (buyer_id ~ '^[A-Za-z0-9._:-]{1,64}$'),
  seller_id          text NOT NULL CONSTRAINT orders_seller_id_format CHECK (seller_id ~ '^[A-Za-z0-9._:-]{1,64}$'),
  currency_code      text NOT NULL CONSTRAINT orders_currency_format CHECK (currency_code ~ '^[A-Z]{3}$'),
  amount_minor       bigint NOT NULL CONSTRAINT orders_amount_positive CHECK (amount_minor > 0),
  protection_ends_at timestamptz NOT NULL,
  funds_state        text NOT NULL DEFAULT 'HELD'
                     CONSTRAINT orders_funds_state_known CHECK (funds_state IN ('HELD', 'RELEASED_TO_SELLER', 'REFUNDED_TO_BUYER', 'SPLIT')),
  refunded_minor     bigint,
  released_minor     bigint,
  settled_at         timestamptz,
  disputes_closed    boolean NOT NULL DEFAULT false,
  dispute_count      integer NOT NULL DEFAULT 0 CONSTRAINT orders_dispute_count_non_negative CHECK (dispute_count >= 0),
  created_at         timestamptz NOT NULL,
  updated_at         timestamptz NOT NULL,
  -- Money is conserved: held funds have no split; settled funds split the whole amount,
  -- and the state names the split.
  CONSTRAINT orders_money_conserved CHECK (
    (funds_state = 'HELD' AND refunded_minor IS NULL AND released_minor IS NULL AND settled_at IS NULL)
    OR (funds_state <> 'HELD' AND settled_at IS NOT NULL
        AND refunded_minor >= 0 AND released_minor >= 0
        AND refunded_minor + released_minor = amount_minor
        AND (funds_state = 'RELEASED_TO_SELLER') = (refunded_minor = 0)
        AND (funds_state = 'REFUNDED_TO_BUYER') = (released_minor = 0))
  ),
  -- Only a settlement closes an order to disputes.
  CONSTRAINT orders_closed_only_when_settled CHECK (NOT disputes_closed OR funds_state <> 'HELD')
);

-- The registered facts never change; a settled order never changes; protection only
-- moves later; an order never reopens to disputes; the dispute count only grows.
CREATE FUNCTION orders_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF (NEW.order_id, NEW.buyer_id, NEW.seller_id, NEW.currency_code, NEW.amount_minor, NEW.created_at)
     IS DISTINCT FROM (OLD.order_id, OLD.buyer_id, OLD.seller_id, OLD.currency_code, OLD.amount_minor, OLD.created_at) THEN
    RAISE EXCEPTION 'registered order facts are immutable' USING ERRCODE = 'integrity_constraint_violation';
  END IF;
  IF OLD.funds_state <> 'HELD' AND (NEW.funds_state, NEW.refunded_minor, NEW.released_minor, NEW.settled_at, NEW.disputes_closed)
     IS DISTINCT FROM (OLD.funds_state, OLD.refunded_minor, OLD.released_minor, OLD.settled_at, OLD.disputes_closed) THEN
    RAISE EXCEPTION 'a settled order never changes' USING ERRCODE = 'integrity_constraint_violation';
  END IF;
  IF NEW.protection_ends_at < OLD.protection_ends_at THEN
    RAISE EXCEPTION 'protection may only move later' USING ERRCODE = 'integrity_constraint_violation';
  END IF;
  IF OLD.disputes_closed AND NOT NEW.disputes_closed THEN
    RAISE EXCEPTION 'an order closed to disputes stays closed' USING ERRCODE = 'integrity_constraint_violation';
  END IF;
  IF NEW.dispute_count < OLD.dispute_count THEN
    RAISE EXCEPTION 'the dispute count only grows' USING ERRCODE = 'integrity_constraint_violation';
  END IF;
  RETURN NEW;
END $$;
CREATE TRIGGER orders_guard BEFORE UPDATE ON orders FOR EACH ROW EXECUTE FUNCTION orders_guard();
CREATE TRIGGER orders_no_delete BEFORE DELETE ON orders FOR EACH ROW EXECUTE FUNCTION forbid_change();

CREATE TABLE disputes (
  dispute_id            uuid PRIMARY KEY,
  order_id              text NOT NULL REFERENCES orders (order_id),
  buyer_id              text NOT NULL,
  seller_id             text NOT NULL,
  reason                text NOT NULL CONSTRAINT disputes_reason_known CHECK (reason IN ('ITEM_NOT_RECEIVED', 'NOT_AS_DESCRIBED', 'QUALITY_ISSUE')),
  remedy                text NOT NULL CONSTRAINT disputes_remedy_known CHECK (remedy IN ('FULL_REFUND', 'PARTIAL_REFUND', 'RETURN_AND_REFUND')),
  refund_currency       text,
  refund_minor          bigint,
  description           text NOT NULL CONSTRAINT disputes_description_length CHECK (char_length(description) <= 2000),
  evidence_urls         text[] NOT NULL CONSTRAINT disputes_evidence_count CHECK (cardinality(evidence_urls) <= 10),
  state                 text NOT NULL CONSTRAINT disputes_state_known CHECK (state IN (
                          'AWAITING_SELLER', 'NEGOTIATING', 'AWAITING_RETURN_SHIPMENT', 'RETURN_IN_TRANSIT',
                          'UNDER_REVIEW', 'CANCELLED', 'RESOLVED')),
  outcome               text CONSTRAINT disputes_outcome_known CHECK (outcome IN (
                          'CANCELLED_BY_BUYER', 'RESOLVED_BUYER_FAVOUR', 'RESOLVED_PARTIAL', 'RESOLVED_SELLER_FAVOUR')),
  return_status         text CONSTRAINT disputes_return_status_known CHECK (return_status IN (
                          'REQUESTED', 'AWAITING_SHIPMENT', 'IN_TRANSIT', 'RECEIVED', 'CANCELLED')),
  return_carrier        text,
  return_tracking       text,
  created_at            timestamptz NOT NULL,
  updated_at            timestamptz NOT NULL,
  CONSTRAINT disputes_partial_refund_amount CHECK (
    (remedy = 'PARTIAL_REFUND') = (refund_minor IS NOT NULL AND refund_currency IS NOT NULL) AND (refund_minor IS NULL OR refund_minor > 0)
  ),
  CONSTRAINT disputes_outcome_iff_terminal CHECK ((state IN ('CANCELLED', 'RESOLVED')) = (outcome IS NOT NULL)),
  CONSTRAINT disputes_outcome_matches_state CHECK (
    outcome IS NULL OR (state = 'CANCELLED') = (outcome = 'CANCELLED_BY_BUYER')
  ),
  CONSTRAINT disputes_return_iff_return_remedy CHECK ((remedy = 'RETURN_AND_REFUND') = (return_status IS NOT NULL)),
  CONSTRAINT disputes_no_return_of_missing_item CHECK (NOT (reason = 'ITEM_NOT_RECEIVED' AND remedy = 'RETURN_AND_REFUND'))
);

-- At most one active dispute per order.
CREATE UNIQUE INDEX disputes_one_active_per_order ON disputes (order_id)
  WHERE state NOT IN ('CANCELLED', 'RESOLVED');
-- Keyset pagination, newest first, and the usual filters.
CREATE INDEX disputes_order_page ON disputes (order_id, dispute_id DESC);
CREATE INDEX disputes_buyer_page ON disputes (buyer_id, dispute_id DESC);
CREATE INDEX disputes_seller_page ON disputes (seller_id, dispute_id DESC);
CREATE INDEX disputes_state_page ON disputes (state, dispute_id DESC);

-- A terminal dispute never changes; the parties and the request never change.
CREATE FUNCTION disputes_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF OLD.state IN ('CANCELLED', 'RESOLVED') THEN
    RAISE EXCEPTION 'a terminal dispute never changes' USING ERRCODE = 'integrity_constraint_violation';
  END IF;
  IF (NEW.dispute_id, NEW.order_id, NEW.buyer_id, NEW.seller_id, NEW.reason, NEW.created_at)
     IS DISTINCT FROM (OLD.dispute_id, OLD.order_id, OLD.buyer_id, OLD.seller_id, OLD.reason, OLD.created_at) THEN
    RAISE EXCEPTION 'a dispute''s parties are immutable' USING ERRCODE = 'integrity_constraint_violation';
  END IF;
  RETURN NEW;
END $$;
CREATE TRIGGER disputes_guard BEFORE UPDATE ON disputes FOR EACH ROW EXECUTE FUNCTION disputes_guard();
CREATE TRIGGER disputes_no_delete BEFORE DELETE ON disputes FOR EACH ROW EXECUTE FUNCTION forbid_change();

-- The immutable settlement ledger the payments service is fed from: one row per order.
CREATE TABLE settlements (
  order_id       text PRIMARY KEY REFERENCES orders (order_id),
  dispute_id     uuid REFERENCES disputes (dispute_id),
  currency_code  text NOT NULL,
  amount_minor   bigint NOT NULL,
  refund_minor   bigint NOT NULL,
  release_minor  bigint NOT NULL,
  actor_role     text NOT NULL,
  actor_id       text NOT NULL,
  settled_at     timestamptz NOT NULL,
  CONSTRAINT settlements_money_conserved CHECK (
    refund_minor >= 0 AND release_minor >= 0 AND refund_minor + release_minor = amount_minor
  )
);
CREATE TRIGGER settlements_immutable BEFORE UPDATE OR DELETE ON settlements FOR EACH ROW EXECUTE FUNCTION forbid_change();

-- Every change to a dispute, in order, forever.
CREATE TABLE dispute_events (
  dispute_id   uuid NOT NULL REFERENCES disputes (dispute_id),
  seq          integer NOT NULL CONSTRAINT dispute_events_seq_positive CHECK (seq > 0),
  kind         text NOT NULL,
  actor_role   text NOT NULL CONSTRAINT dispute_events_role_known CHECK (actor_role IN ('BUYER', 'SELLER', 'AGENT', 'SERVICE')),
  actor_id     text NOT NULL,
  occurred_at  timestamptz NOT NULL,
  payload      jsonb NOT NULL,
  trace_id     text,
  PRIMARY KEY (dispute_id, seq)
);
CREATE TRIGGER dispute_events_immutable BEFORE UPDATE OR DELETE ON dispute_events FOR EACH ROW EXECUTE FUNCTION forbid_change();

-- Idempotency: one remembered response per (actor, RPC, request id).
CREATE TABLE idempotency_keys (
  actor_role    text NOT NULL,
  actor_id      text NOT NULL,
  rpc           text NOT NULL,
  request_id    text NOT NULL CONSTRAINT idempotency_request_id_length CHECK (char_length(request_id) BETWEEN 1 AND 255),
  request_hash  bytea NOT NULL,
  response      bytea,
  created_at    timestamptz NOT NULL,
  PRIMARY KEY (actor_role, actor_id, rpc, request_id)
);
CREATE INDEX idempotency_keys_created ON idempotency_keys (created_at);
