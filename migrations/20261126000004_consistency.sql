-- Invariants the code keeps that the schema did not enforce yet (README, "Invariants
-- twice"), names for the checks the triggers make (so a violation maps to its domain
-- error by name), and the saved reply of an idempotent request as a domain snapshot.

-- A dispute's buyer and seller are its order's; a partial refund asked or proposed is in
-- the order's currency; a settlement settles exactly its order's amount. Composite
-- foreign keys on keys the orders table already has (order_id is its primary key, so
-- each of these is unique); a NULL refund currency (no partial refund) is not checked.
ALTER TABLE orders
  ADD CONSTRAINT orders_parties_key UNIQUE (order_id, buyer_id, seller_id),
  ADD CONSTRAINT orders_currency_key UNIQUE (order_id, currency_code),
  ADD CONSTRAINT orders_amount_key UNIQUE (order_id, currency_code, amount_minor);

ALTER TABLE disputes
  ADD CONSTRAINT disputes_parties_are_the_orders FOREIGN KEY (order_id, buyer_id, seller_id)
    REFERENCES orders (order_id, buyer_id, seller_id),
  ADD CONSTRAINT disputes_refund_in_order_currency FOREIGN KEY (order_id, refund_currency)
    REFERENCES orders (order_id, currency_code),
  ADD CONSTRAINT disputes_proposal_in_order_currency FOREIGN KEY (order_id, proposal_refund_currency)
    REFERENCES orders (order_id, currency_code);

ALTER TABLE settlements
  ADD CONSTRAINT settlements_amount_is_the_orders FOREIGN KEY (order_id, currency_code, amount_minor)
    REFERENCES orders (order_id, currency_code, amount_minor),
  ADD CONSTRAINT settlements_role_known CHECK (actor_role IN ('BUYER', 'SELLER', 'AGENT', 'SERVICE'));

-- The guards, again, with a constraint name on each refusal.
CREATE OR REPLACE FUNCTION orders_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF (NEW.order_id, NEW.buyer_id, NEW.seller_id, NEW.currency_code, NEW.amount_minor, NEW.created_at)
     IS DISTINCT FROM (OLD.order_id, OLD.buyer_id, OLD.seller_id, OLD.currency_code, OLD.amount_minor, OLD.created_at) THEN
    RAISE EXCEPTION 'registered order facts are immutable'
      USING ERRCODE = 'integrity_constraint_violation', CONSTRAINT = 'orders_facts_immutable';
  END IF;
  IF OLD.funds_state <> 'HELD' AND (NEW.funds_state, NEW.refunded_minor, NEW.released_minor, NEW.settled_at, NEW.disputes_closed)
     IS DISTINCT FROM (OLD.funds_state, OLD.refunded_minor, OLD.released_minor, OLD.settled_at, OLD.disputes_closed) THEN
    RAISE EXCEPTION 'a settled order never changes'
      USING ERRCODE = 'integrity_constraint_violation', CONSTRAINT = 'orders_settled_immutable';
  END IF;
  IF NEW.protection_ends_at < OLD.protection_ends_at THEN
    RAISE EXCEPTION 'protection may only move later'
      USING ERRCODE = 'integrity_constraint_violation', CONSTRAINT = 'orders_protection_only_later';
  END IF;
  IF OLD.disputes_closed AND NOT NEW.disputes_closed THEN
    RAISE EXCEPTION 'an order closed to disputes stays closed'
      USING ERRCODE = 'integrity_constraint_violation', CONSTRAINT = 'orders_closed_stays_closed';
  END IF;
  IF NEW.dispute_count < OLD.dispute_count THEN
    RAISE EXCEPTION 'the dispute count only grows'
      USING ERRCODE = 'integrity_constraint_violation', CONSTRAINT = 'orders_dispute_count_only_grows';
  END IF;
  RETURN NEW;
END $$;

CREATE OR REPLACE FUNCTION disputes_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF OLD.state IN ('CANCELLED', 'RESOLVED') THEN
    RAISE EXCEPTION 'a terminal dispute never changes'
      USING ERRCODE = 'integrity_constraint_violation', CONSTRAINT = 'disputes_terminal_immutable';
  END IF;
  IF (NEW.dispute_id, NEW.order_id, NEW.buyer_id, NEW.seller_id, NEW.reason, NEW.created_at)
     IS DISTINCT FROM (OLD.dispute_id, OLD.order_id, OLD.buyer_id, OLD.seller_id, OLD.reason, OLD.created_at) THEN
    RAISE EXCEPTION 'a dispute''s parties are immutable'
      USING ERRCODE = 'integrity_constraint_violation', CONSTRAINT = 'disputes_parties_immutable';
  END IF;
  RETURN NEW;
END $$;

CREATE OR REPLACE FUNCTION disputes_proposal_fixed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF OLD.proposal_remedy IS NOT NULL AND
     (NEW.proposal_remedy, NEW.proposal_refund_currency, NEW.proposal_refund_minor, NEW.proposal_message)
     IS DISTINCT FROM (OLD.proposal_remedy, OLD.proposal_refund_currency, OLD.proposal_refund_minor, OLD.proposal_message) THEN
    RAISE EXCEPTION 'a proposal is never edited'
      USING ERRCODE = 'integrity_constraint_violation', CONSTRAINT = 'disputes_proposal_fixed';
  END IF;
  RETURN NEW;
END $$;

CREATE OR REPLACE FUNCTION forbid_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION '% rows are immutable', TG_TABLE_NAME
    USING ERRCODE = 'integrity_constraint_violation', CONSTRAINT = TG_TABLE_NAME || '_immutable';
END $$;

-- What an idempotent request answered, as a domain snapshot the edge encodes the same way
-- every time (replaces `response`, the encoded protobuf, which the service no longer reads).
ALTER TABLE idempotency_keys ADD COLUMN reply jsonb;
