-- The rules of an order's and a dispute's shape, checked by one trigger per table instead of
-- a CHECK constraint per rule (BENCHMARKS.md, "Against the database floor").
--
-- Why: PostgreSQL rebuilds every CHECK constraint's expression from its stored text for
-- each statement that writes the table (`stringToNode`, then planning and compiling the
-- expression) — about 24 kB of node text for the 23 rules of `disputes`, 10 kB for the
-- 11 of `orders`: some 70 µs of the database's CPU for every insert or update of a
-- dispute (measured), and in proportion for an order, however small the row. A PL/pgSQL
-- function compiles its expressions once per connection and evaluates them per row.
--
-- Nothing is given up: each rule keeps its name and its refusal. A row that breaks one is
-- refused with SQLSTATE 23514 (check_violation) naming the rule as its constraint, in the
-- message PostgreSQL itself writes for a CHECK constraint — what the store maps to the
-- domain's error (`store::constraints`), on one node and on a Citus shard alike. A NULL
-- passes, as in a CHECK constraint. The guards that ran as separate BEFORE UPDATE triggers
-- (`orders_guard`; `disputes_guard`, `disputes_proposal_fixed`, `disputes_record_fixed`)
-- run first in the same function, in the order they fired: one trigger call per row
-- written instead of up to four. On an update, the rules of the facts the guard keeps
-- unchanged (an order's ids, currency and amount; a dispute's reason) are not checked again.
-- What a trigger cannot do that a constraint could: refuse rows written while the trigger
-- is disabled (ALTER TABLE … DISABLE TRIGGER, or session_replication_role = replica, both
-- for the table's owner or a superuser only — who could drop a constraint as well).
--
-- (On Citus a trigger on a distributed table needs citus.enable_unsafe_triggers, and DDL on
-- one goes through EXECUTE: see migrations 10 and 11. Each trigger reads and writes only
-- its own row.)
SET LOCAL citus.enable_unsafe_triggers = on;
SET LOCAL citus.multi_shard_modify_mode = 'sequential';

-- A row refused by the rule named: as PostgreSQL refuses a row by a CHECK constraint.
CREATE FUNCTION shape_refused(relation text, rule text) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION 'new row for relation "%" violates check constraint "%"', relation, rule
    USING ERRCODE = 'check_violation', CONSTRAINT = rule, TABLE = relation;
END $$;

CREATE FUNCTION orders_rules() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'INSERT' THEN
    IF NOT (NEW.amount_minor > 0) THEN
      PERFORM shape_refused('orders', 'orders_amount_positive');
    END IF;
    IF NOT (NEW.buyer_id ~ '^[A-Za-z0-9._:-]{1,64}$') THEN
      PERFORM shape_refused('orders', 'orders_buyer_id_format');
    END IF;
    IF NOT (NEW.currency_code ~ '^[A-Z]{3}$') THEN
      PERFORM shape_refused('orders', 'orders_currency_format');
    END IF;
    IF NOT (NEW.order_id ~ '^[A-Za-z0-9._:-]{1,64}$') THEN
      PERFORM shape_refused('orders', 'orders_order_id_format');
    END IF;
    IF NOT (NEW.seller_id ~ '^[A-Za-z0-9._:-]{1,64}$') THEN
      PERFORM shape_refused('orders', 'orders_seller_id_format');
    END IF;
  ELSE
    -- Was orders_guard (migrations 1, 4 and 10).
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
  END IF;
  IF NOT ((NOT NEW.disputes_closed) OR (NEW.funds_state <> 'HELD')) THEN
    PERFORM shape_refused('orders', 'orders_closed_only_when_settled');
  END IF;
  IF NOT (NEW.dispute_count >= 0) THEN
    PERFORM shape_refused('orders', 'orders_dispute_count_non_negative');
  END IF;
  IF NOT (NEW.event_sequence >= 0) THEN
    PERFORM shape_refused('orders', 'orders_event_sequence_not_negative');
  END IF;
  IF NOT (NEW.funds_state = ANY (ARRAY['HELD', 'RELEASED_TO_SELLER', 'REFUNDED_TO_BUYER', 'SPLIT'])) THEN
    PERFORM shape_refused('orders', 'orders_funds_state_known');
  END IF;
  IF NOT (((NEW.funds_state = 'HELD') AND (NEW.refunded_minor IS NULL) AND (NEW.released_minor IS NULL) AND (NEW.settled_at IS NULL)) OR ((NEW.funds_state <> 'HELD') AND (NEW.settled_at IS NOT NULL) AND (NEW.refunded_minor >= 0) AND (NEW.released_minor >= 0) AND ((NEW.refunded_minor + NEW.released_minor) = NEW.amount_minor) AND ((NEW.funds_state = 'RELEASED_TO_SELLER') = (NEW.refunded_minor = 0)) AND ((NEW.funds_state = 'REFUNDED_TO_BUYER') = (NEW.released_minor = 0)))) THEN
    PERFORM shape_refused('orders', 'orders_money_conserved');
  END IF;
  IF NOT (NEW.protection_ends_at >= NEW.registered_protection_ends_at) THEN
    PERFORM shape_refused('orders', 'orders_protection_never_shortened');
  END IF;
  RETURN NEW;
END $$;

CREATE FUNCTION disputes_rules() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'INSERT' THEN
    IF NOT (NEW.reason = ANY (ARRAY['ITEM_NOT_RECEIVED', 'NOT_AS_DESCRIBED', 'QUALITY_ISSUE'])) THEN
      PERFORM shape_refused('disputes', 'disputes_reason_known');
    END IF;
  ELSE
    -- Was disputes_guard (migrations 1, 4 and 10).
    IF OLD.state IN ('CANCELLED', 'RESOLVED') THEN
      RAISE EXCEPTION 'a terminal dispute never changes (constraint "disputes_terminal_immutable")'
        USING ERRCODE = 'integrity_constraint_violation', CONSTRAINT = 'disputes_terminal_immutable';
    END IF;
    IF (NEW.dispute_id, NEW.order_id, NEW.buyer_id, NEW.seller_id, NEW.reason, NEW.created_at)
       IS DISTINCT FROM (OLD.dispute_id, OLD.order_id, OLD.buyer_id, OLD.seller_id, OLD.reason, OLD.created_at) THEN
      RAISE EXCEPTION 'a dispute''s parties are immutable (constraint "disputes_parties_immutable")'
        USING ERRCODE = 'integrity_constraint_violation', CONSTRAINT = 'disputes_parties_immutable';
    END IF;
    -- Was disputes_proposal_fixed (migration 4).
    IF OLD.proposal_remedy IS NOT NULL AND
       (NEW.proposal_remedy, NEW.proposal_refund_currency, NEW.proposal_refund_minor, NEW.proposal_message)
       IS DISTINCT FROM (OLD.proposal_remedy, OLD.proposal_refund_currency, OLD.proposal_refund_minor, OLD.proposal_message) THEN
      RAISE EXCEPTION 'a proposal is never edited (constraint "disputes_proposal_fixed")'
        USING ERRCODE = 'integrity_constraint_violation', CONSTRAINT = 'disputes_proposal_fixed';
    END IF;
    -- Was disputes_record_fixed (migration 6).
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
  END IF;
  IF NOT ((NEW.return_status IS DISTINCT FROM 'AWAITING_SHIPMENT') OR (NEW.return_agreed_at IS NOT NULL)) THEN
    PERFORM shape_refused('disputes', 'disputes_agreed_return_is_dated');
  END IF;
  IF NOT (char_length(NEW.description) <= 2000) THEN
    PERFORM shape_refused('disputes', 'disputes_description_length');
  END IF;
  IF NOT (cardinality(NEW.evidence_urls) <= 10) THEN
    PERFORM shape_refused('disputes', 'disputes_evidence_count');
  END IF;
  IF NOT ((NEW.seller_first_response_at IS NULL) OR (NEW.seller_first_response_at >= NEW.created_at)) THEN
    PERFORM shape_refused('disputes', 'disputes_first_response_after_opening');
  END IF;
  IF NOT (NOT ((NEW.reason = 'ITEM_NOT_RECEIVED') AND (NEW.remedy = 'RETURN_AND_REFUND'))) THEN
    PERFORM shape_refused('disputes', 'disputes_no_return_of_missing_item');
  END IF;
  IF NOT ((NEW.reason <> 'ITEM_NOT_RECEIVED') OR (NEW.return_status IS NULL)) THEN
    PERFORM shape_refused('disputes', 'disputes_no_return_without_item');
  END IF;
  IF NOT ((NEW.state = ANY (ARRAY['CANCELLED', 'RESOLVED'])) = (NEW.outcome IS NOT NULL)) THEN
    PERFORM shape_refused('disputes', 'disputes_outcome_iff_terminal');
  END IF;
  IF NOT (NEW.outcome = ANY (ARRAY['CANCELLED_BY_BUYER', 'RESOLVED_BUYER_FAVOUR', 'RESOLVED_PARTIAL', 'RESOLVED_SELLER_FAVOUR'])) THEN
    PERFORM shape_refused('disputes', 'disputes_outcome_known');
  END IF;
  IF NOT ((NEW.outcome IS NULL) OR ((NEW.state = 'CANCELLED') = (NEW.outcome = 'CANCELLED_BY_BUYER'))) THEN
    PERFORM shape_refused('disputes', 'disputes_outcome_matches_state');
  END IF;
  IF NOT (((NEW.remedy = 'PARTIAL_REFUND') = ((NEW.refund_minor IS NOT NULL) AND (NEW.refund_currency IS NOT NULL))) AND ((NEW.refund_minor IS NULL) OR (NEW.refund_minor > 0))) THEN
    PERFORM shape_refused('disputes', 'disputes_partial_refund_amount');
  END IF;
  IF NOT (char_length(NEW.proposal_message) <= 2000) THEN
    PERFORM shape_refused('disputes', 'disputes_proposal_message_length');
  END IF;
  IF NOT (((NOT (NEW.proposal_remedy IS DISTINCT FROM 'PARTIAL_REFUND')) = ((NEW.proposal_refund_minor IS NOT NULL) AND (NEW.proposal_refund_currency IS NOT NULL))) AND ((NEW.proposal_refund_minor IS NULL) OR (NEW.proposal_refund_minor > 0))) THEN
    PERFORM shape_refused('disputes', 'disputes_proposal_refund_amount');
  END IF;
  IF NOT (NEW.proposal_remedy = ANY (ARRAY['FULL_REFUND', 'PARTIAL_REFUND', 'RETURN_AND_REFUND', 'REPLACEMENT'])) THEN
    PERFORM shape_refused('disputes', 'disputes_proposal_remedy_known');
  END IF;
  IF NOT ((NEW.state <> 'NEGOTIATING') OR (NEW.proposal_remedy IS NOT NULL)) THEN
    PERFORM shape_refused('disputes', 'disputes_proposal_when_negotiated');
  END IF;
  IF NOT (NEW.remedy = ANY (ARRAY['FULL_REFUND', 'PARTIAL_REFUND', 'RETURN_AND_REFUND', 'REPLACEMENT'])) THEN
    PERFORM shape_refused('disputes', 'disputes_remedy_known');
  END IF;
  IF NOT ((NEW.state <> ALL (ARRAY['AWAITING_REPLACEMENT_SHIPMENT', 'REPLACEMENT_IN_TRANSIT'])) OR (NEW.replacement_agreed_at IS NOT NULL)) THEN
    PERFORM shape_refused('disputes', 'disputes_replacement_agreed');
  END IF;
  IF NOT ((NEW.state <> 'REPLACEMENT_IN_TRANSIT') OR (NEW.replacement_shipped_at IS NOT NULL)) THEN
    PERFORM shape_refused('disputes', 'disputes_replacement_in_transit_shipped');
  END IF;
  IF NOT (((NEW.replacement_shipped_at IS NULL) = (NEW.replacement_carrier IS NULL)) AND ((NEW.replacement_shipped_at IS NULL) = (NEW.replacement_tracking IS NULL)) AND ((NEW.replacement_shipped_at IS NULL) OR (NEW.replacement_shipped_at >= NEW.replacement_agreed_at))) THEN
    PERFORM shape_refused('disputes', 'disputes_replacement_shipment_whole');
  END IF;
  IF NOT ((NEW.remedy <> 'RETURN_AND_REFUND') OR (NEW.return_status IS NOT NULL)) THEN
    PERFORM shape_refused('disputes', 'disputes_return_remedy_has_return');
  END IF;
  IF NOT (NEW.return_status = ANY (ARRAY['REQUESTED', 'AWAITING_SHIPMENT', 'IN_TRANSIT', 'RECEIVED', 'CANCELLED'])) THEN
    PERFORM shape_refused('disputes', 'disputes_return_status_known');
  END IF;
  IF NOT ((NEW.return_status IS DISTINCT FROM 'IN_TRANSIT') OR ((NEW.return_shipped_at IS NOT NULL) AND (NEW.return_carrier IS NOT NULL) AND (NEW.return_tracking IS NOT NULL))) THEN
    PERFORM shape_refused('disputes', 'disputes_shipped_return_is_tracked');
  END IF;
  IF NOT (NEW.state = ANY (ARRAY['AWAITING_SELLER', 'NEGOTIATING', 'AWAITING_RETURN_SHIPMENT', 'RETURN_IN_TRANSIT', 'UNDER_REVIEW', 'CANCELLED', 'RESOLVED', 'AWAITING_REPLACEMENT_SHIPMENT', 'REPLACEMENT_IN_TRANSIT'])) THEN
    PERFORM shape_refused('disputes', 'disputes_state_known');
  END IF;
  RETURN NEW;
END $$;

DO $$ BEGIN
  EXECUTE 'ALTER TABLE orders DROP CONSTRAINT orders_amount_positive';
  EXECUTE 'ALTER TABLE orders DROP CONSTRAINT orders_buyer_id_format';
  EXECUTE 'ALTER TABLE orders DROP CONSTRAINT orders_closed_only_when_settled';
  EXECUTE 'ALTER TABLE orders DROP CONSTRAINT orders_currency_format';
  EXECUTE 'ALTER TABLE orders DROP CONSTRAINT orders_dispute_count_non_negative';
  EXECUTE 'ALTER TABLE orders DROP CONSTRAINT orders_event_sequence_not_negative';
  EXECUTE 'ALTER TABLE orders DROP CONSTRAINT orders_funds_state_known';
  EXECUTE 'ALTER TABLE orders DROP CONSTRAINT orders_money_conserved';
  EXECUTE 'ALTER TABLE orders DROP CONSTRAINT orders_order_id_format';
  EXECUTE 'ALTER TABLE orders DROP CONSTRAINT orders_protection_never_shortened';
  EXECUTE 'ALTER TABLE orders DROP CONSTRAINT orders_seller_id_format';
  EXECUTE 'DROP TRIGGER orders_guard ON orders';
  EXECUTE 'CREATE TRIGGER orders_rules BEFORE INSERT OR UPDATE ON orders FOR EACH ROW EXECUTE FUNCTION orders_rules()';
  EXECUTE 'ALTER TABLE disputes DROP CONSTRAINT disputes_agreed_return_is_dated';
  EXECUTE 'ALTER TABLE disputes DROP CONSTRAINT disputes_description_length';
  EXECUTE 'ALTER TABLE disputes DROP CONSTRAINT disputes_evidence_count';
  EXECUTE 'ALTER TABLE disputes DROP CONSTRAINT disputes_first_response_after_opening';
  EXECUTE 'ALTER TABLE disputes DROP CONSTRAINT disputes_no_return_of_missing_item';
  EXECUTE 'ALTER TABLE disputes DROP CONSTRAINT disputes_no_return_without_item';
  EXECUTE 'ALTER TABLE disputes DROP CONSTRAINT disputes_outcome_iff_terminal';
  EXECUTE 'ALTER TABLE disputes DROP CONSTRAINT disputes_outcome_known';
  EXECUTE 'ALTER TABLE disputes DROP CONSTRAINT disputes_outcome_matches_state';
  EXECUTE 'ALTER TABLE disputes DROP CONSTRAINT disputes_partial_refund_amount';
  EXECUTE 'ALTER TABLE disputes DROP CONSTRAINT disputes_proposal_message_length';
  EXECUTE 'ALTER TABLE disputes DROP CONSTRAINT disputes_proposal_refund_amount';
  EXECUTE 'ALTER TABLE disputes DROP CONSTRAINT disputes_proposal_remedy_known';
  EXECUTE 'ALTER TABLE disputes DROP CONSTRAINT disputes_proposal_when_negotiated';
  EXECUTE 'ALTER TABLE disputes DROP CONSTRAINT disputes_reason_known';
  EXECUTE 'ALTER TABLE disputes DROP CONSTRAINT disputes_remedy_known';
  EXECUTE 'ALTER TABLE disputes DROP CONSTRAINT disputes_replacement_agreed';
  EXECUTE 'ALTER TABLE disputes DROP CONSTRAINT disputes_replacement_in_transit_shipped';
  EXECUTE 'ALTER TABLE disputes DROP CONSTRAINT disputes_replacement_shipment_whole';
  EXECUTE 'ALTER TABLE disputes DROP CONSTRAINT disputes_return_remedy_has_return';
  EXECUTE 'ALTER TABLE disputes DROP CONSTRAINT disputes_return_status_known';
  EXECUTE 'ALTER TABLE disputes DROP CONSTRAINT disputes_shipped_return_is_tracked';
  EXECUTE 'ALTER TABLE disputes DROP CONSTRAINT disputes_state_known';
  EXECUTE 'DROP TRIGGER disputes_guard ON disputes';
  EXECUTE 'DROP TRIGGER disputes_proposal_fixed ON disputes';
  EXECUTE 'DROP TRIGGER disputes_record_fixed ON disputes';
  EXECUTE 'CREATE TRIGGER disputes_rules BEFORE INSERT OR UPDATE ON disputes FOR EACH ROW EXECUTE FUNCTION disputes_rules()';
  EXECUTE 'DROP FUNCTION orders_guard()';
  EXECUTE 'DROP FUNCTION disputes_guard()';
  EXECUTE 'DROP FUNCTION disputes_proposal_fixed()';
  EXECUTE 'DROP FUNCTION disputes_record_fixed()';
END $$;
