-- Deadlines and the store record at marketplace scale (README, "Deadlines" and "The
-- store's record").
--
-- 1. The deadline worker's candidates are cut into 16 partitions by a hash of their order
--    (the same hash as the event stream's). A worker task leases a partition in
--    worker_partitions (coordinator-local on Citus), drains it, and hands it back, so
--    replicas and the tasks inside one share a wave instead of all walking the same oldest
--    candidates. A lease only saves work: every candidate is still locked and re-decided
--    in its own transaction, so a second holder changes nothing. Each partition's scan of
--    the protection ends is an index range (orders_held_by_partition).
-- 2. The store record's daily counters are spread over 64 slots per seller and day, by a
--    hash of the order: a big store's writes no longer queue on one row lock. The record
--    adds the slots up. (On Citus there are no counters: the record is counted from the
--    orders and disputes, migration 10.)

SET LOCAL citus.multi_shard_modify_mode = 'sequential';

CREATE TABLE worker_partitions (
  scan                text NOT NULL CONSTRAINT worker_partitions_scan_known
                        CHECK (scan IN ('DEADLINES', 'PROTECTION_ENDS')),
  candidate_partition smallint NOT NULL CONSTRAINT worker_partitions_partition_known
                        CHECK (candidate_partition BETWEEN 0 AND 15),
  holder              text,
  lease_until         timestamptz NOT NULL DEFAULT '-infinity',
  PRIMARY KEY (scan, candidate_partition)
);
INSERT INTO worker_partitions (scan, candidate_partition)
  SELECT scan, p FROM unnest(ARRAY['DEADLINES', 'PROTECTION_ENDS']) scan, generate_series(0, 15) p;

-- (On Citus, DDL on a distributed table goes through EXECUTE: see migration 11.)
DO $$ BEGIN
  EXECUTE 'CREATE INDEX orders_held_by_partition ON orders (((hashtext(order_id) & 15)::smallint), protection_ends_at)
           WHERE funds_state = ''HELD''';
  EXECUTE 'DROP INDEX orders_held_by_protection_end';
END $$;

-- The counters' slots. Existing rows become slot 0.
DO $$ BEGIN
  IF to_regclass('seller_daily_stats') IS NOT NULL THEN
    ALTER TABLE seller_daily_stats ADD COLUMN slot smallint NOT NULL DEFAULT 0
      CONSTRAINT seller_daily_stats_slot_known CHECK (slot BETWEEN 0 AND 63);
    ALTER TABLE seller_daily_stats DROP CONSTRAINT seller_daily_stats_pkey;
    ALTER TABLE seller_daily_stats ADD PRIMARY KEY (seller_id, day, slot);
  END IF;
END $$;

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
  -- An order's counts always go to the same one of the seller's 64 slots for the day.
  INSERT INTO seller_daily_stats AS s (seller_id, day, slot, orders_registered, opened_item_not_received,
      opened_not_as_described, opened_quality_issue, ended_cancelled_by_buyer,
      ended_resolved_buyer_favour, ended_resolved_partial, ended_resolved_seller_favour)
  VALUES (NEW.seller_id, (at AT TIME ZONE 'UTC')::date, hashtext(NEW.order_id) & 63, registered, inr, nad, qi,
          cancelled, buyer, partial, seller)
  ON CONFLICT (seller_id, day, slot) DO UPDATE SET
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
