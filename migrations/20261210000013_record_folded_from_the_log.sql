-- The store record on Citus, folded from the event log (README, "The store's record").
--
-- On one PostgreSQL the record's daily counters are kept at commit by triggers
-- (migrations 6 and 12), an order's counts in one of 64 slots. On Citus those triggers
-- would write a seller's row from every order's shard, so since migration 10 the record
-- was counted from the orders and disputes themselves: a fan-out read whose cost grew with
-- the store's rows. Now on Citus the same table, seller_daily_stats, is distributed by its
-- slot and co-located with the event log (whose partitions are 0..15), and the relay, as
-- it appends a partition's events to the log, adds what they count (a registration; an
-- opening, by reason; an ending, by outcome) to that partition's slot in the same
-- transaction, on the same shard: an event is counted exactly when it is appended, once.
-- The read is the same statement on both databases.

SET LOCAL citus.multi_shard_modify_mode = 'sequential';

-- On Citus the table was dropped by migration 10; made again as on one node.
CREATE TABLE IF NOT EXISTS seller_daily_stats (
  seller_id                    text NOT NULL,
  day                          date NOT NULL,
  orders_registered            bigint NOT NULL DEFAULT 0,
  opened_item_not_received     bigint NOT NULL DEFAULT 0,
  opened_not_as_described      bigint NOT NULL DEFAULT 0,
  opened_quality_issue         bigint NOT NULL DEFAULT 0,
  ended_cancelled_by_buyer     bigint NOT NULL DEFAULT 0,
  ended_resolved_buyer_favour  bigint NOT NULL DEFAULT 0,
  ended_resolved_partial       bigint NOT NULL DEFAULT 0,
  ended_resolved_seller_favour bigint NOT NULL DEFAULT 0,
  slot                         smallint NOT NULL DEFAULT 0
    CONSTRAINT seller_daily_stats_slot_known CHECK (slot BETWEEN 0 AND 63),
  PRIMARY KEY (seller_id, day, slot),
  CONSTRAINT seller_daily_stats_non_negative CHECK (
    LEAST(orders_registered, opened_item_not_received, opened_not_as_described, opened_quality_issue,
          ended_cancelled_by_buyer, ended_resolved_buyer_favour, ended_resolved_partial,
          ended_resolved_seller_favour) >= 0
  )
);

-- The record counted again from the tables, into the slot of each row's stream partition,
-- except what an event still waiting in the outbox will add when the relay appends it:
-- run once on Citus, when the table is distributed. An event written before this
-- migration does not say a dispute's reason nor whether its change ended the dispute, so
-- the relay counts no dispute event without "ended" (and the tables count it here); it
-- counts every registration.
CREATE OR REPLACE FUNCTION fold_record_from_the_tables() RETURNS void LANGUAGE plpgsql AS $$
BEGIN
  DELETE FROM seller_daily_stats;
  INSERT INTO seller_daily_stats (slot, seller_id, day, orders_registered,
      opened_item_not_received, opened_not_as_described, opened_quality_issue,
      ended_cancelled_by_buyer, ended_resolved_buyer_favour, ended_resolved_partial,
      ended_resolved_seller_favour)
  SELECT p, seller_id, day, sum(registered), sum(inr), sum(nad), sum(qi), sum(cancelled),
         sum(buyer), sum(partial), sum(seller)
  FROM (
    SELECT (hashtext(o.order_id) & 15)::smallint AS p, o.seller_id,
           (o.created_at AT TIME ZONE 'UTC')::date AS day, 1 AS registered, 0 AS inr, 0 AS nad,
           0 AS qi, 0 AS cancelled, 0 AS buyer, 0 AS partial, 0 AS seller
    FROM orders o
    WHERE NOT EXISTS (SELECT 1 FROM outbox x WHERE x.order_id = o.order_id
                        AND x.event_type = 'ORDER_REGISTERED')
    UNION ALL
    SELECT (hashtext(d.order_id) & 15)::smallint, d.seller_id,
           (d.created_at AT TIME ZONE 'UTC')::date, 0,
           (d.reason = 'ITEM_NOT_RECEIVED')::int, (d.reason = 'NOT_AS_DESCRIBED')::int,
           (d.reason = 'QUALITY_ISSUE')::int, 0, 0, 0, 0
    FROM disputes d
    WHERE NOT EXISTS (SELECT 1 FROM outbox x WHERE x.order_id = d.order_id
                        AND x.dispute_id = d.dispute_id AND x.event_type = 'DISPUTE_OPENED'
                        AND x.payload ? 'ended')
    UNION ALL
    SELECT (hashtext(d.order_id) & 15)::smallint, d.seller_id,
           (d.updated_at AT TIME ZONE 'UTC')::date, 0, 0, 0, 0,
           (d.outcome = 'CANCELLED_BY_BUYER')::int, (d.outcome = 'RESOLVED_BUYER_FAVOUR')::int,
           (d.outcome = 'RESOLVED_PARTIAL')::int, (d.outcome = 'RESOLVED_SELLER_FAVOUR')::int
    FROM disputes d
    WHERE d.outcome IS NOT NULL
      AND NOT EXISTS (SELECT 1 FROM outbox x WHERE x.order_id = d.order_id
                        AND x.dispute_id = d.dispute_id AND (x.payload->>'ended')::boolean)
  ) counted
  GROUP BY p, seller_id, day;
END $$;

-- Migration 11's, with the record's table distributed by slot beside the log (and counted
-- again from the tables then) instead of dropped.
CREATE OR REPLACE FUNCTION distribute_by_order() RETURNS void LANGUAGE plpgsql AS $$
DECLARE
  t text;
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'citus') THEN
    RETURN;
  END IF;
  -- Replicas starting together distribute one at a time: the record is counted once.
  PERFORM pg_advisory_xact_lock(hashtext('distribute_by_order'));
  SET LOCAL citus.enable_unsafe_triggers = on;
  SET LOCAL citus.multi_shard_modify_mode = 'sequential';
  DROP TRIGGER IF EXISTS outbox_notify ON outbox;
  DROP TRIGGER IF EXISTS orders_count_registered ON orders;
  DROP TRIGGER IF EXISTS disputes_count_opened ON disputes;
  DROP TRIGGER IF EXISTS disputes_count_ended ON disputes;
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
  IF NOT EXISTS (SELECT 1 FROM pg_dist_partition WHERE logicalrelid = 'event_log'::regclass) THEN
    PERFORM create_distributed_table('event_log', 'stream_partition', colocate_with => 'none');
  END IF;
  IF NOT EXISTS (SELECT 1 FROM pg_dist_partition WHERE logicalrelid = 'seller_daily_stats'::regclass) THEN
    PERFORM create_distributed_table('seller_daily_stats', 'slot', colocate_with => 'event_log');
    PERFORM fold_record_from_the_tables();
  END IF;
END $$;

-- The record no longer counts the tables on Citus: the indexes made for that there (by
-- migration 10) go. (DDL on a distributed table goes through EXECUTE: migration 11.)
DO $$ BEGIN
  EXECUTE 'DROP INDEX IF EXISTS orders_seller_created';
  EXECUTE 'DROP INDEX IF EXISTS disputes_seller_created';
  EXECUTE 'DROP INDEX IF EXISTS disputes_seller_ended';
END $$;

SELECT distribute_by_order();
