-- The event stream without transaction ids (README, "Consuming the event stream").
--
-- A command writes its events to the outbox in its own transaction, each numbered within
-- its order (order_sequence 1, 2, 3…, from orders.event_sequence, which the command bumps
-- under the order's row lock), so an order's committed events are a gap-free prefix. A
-- relay moves committed outbox rows into event_log: per stream partition (16, each order
-- in one, by a hash of its id), positions 1, 2, 3… with no gaps, in the order the relay
-- saw them commit. One relay holds a partition at a time (stream_relays' lease); the
-- log's keys make a second one harmless. WatchEvents reads the log; a cursor holds a
-- position per partition. Nothing here reads a transaction id or a snapshot, so a
-- transaction open elsewhere delays nothing. On Citus (the log distributed by partition,
-- the outbox by order) a command's writes and each partition's append run on one shard;
-- the relay's read and delete of outbox rows span shards.

-- On Citus every DDL and move below runs over one connection per node (a function is
-- redefined in the same transaction); on plain PostgreSQL this setting is inert.
SET LOCAL citus.multi_shard_modify_mode = 'sequential';

-- Every command that writes events bumps it under the order's row lock.
-- (On Citus a constraint on a distributed table is added by EXECUTE: written out, its
-- propagation to the shards fails when the migration comes as one multi-statement query,
-- as sqlx sends it — "cannot insert multiple commands into a prepared statement".)
ALTER TABLE orders ADD COLUMN event_sequence bigint NOT NULL DEFAULT 0;
DO $$ BEGIN
  EXECUTE 'ALTER TABLE orders ADD CONSTRAINT orders_event_sequence_not_negative CHECK (event_sequence >= 0)';
END $$;

CREATE TABLE event_log (
  stream_partition smallint NOT NULL CONSTRAINT event_log_partition_known CHECK (stream_partition BETWEEN 0 AND 15),
  position         bigint NOT NULL CONSTRAINT event_log_position_positive CHECK (position > 0),
  event_id         uuid NOT NULL,
  order_id         text NOT NULL,
  order_sequence   bigint NOT NULL CONSTRAINT event_log_order_sequence_positive CHECK (order_sequence > 0),
  event_type       text NOT NULL,
  dispute_id       uuid,
  dispute_seq      integer,
  actor_role       text NOT NULL,
  actor_id         text NOT NULL,
  occurred_at      timestamptz NOT NULL,
  payload          jsonb NOT NULL,
  trace_id         text,
  relayed_at       timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (stream_partition, position),
  -- An order's event is in the log once: a second relay's copy fails here.
  CONSTRAINT event_log_once UNIQUE (stream_partition, order_id, order_sequence)
);
CREATE TRIGGER event_log_immutable BEFORE UPDATE ON event_log FOR EACH ROW EXECUTE FUNCTION forbid_change();

-- One row per partition, on the coordinator: who relays it until when, how far the log
-- is known to reach (a hint, never ahead of the log), and how far retention deleted.
CREATE TABLE stream_relays (
  stream_partition smallint PRIMARY KEY CONSTRAINT stream_relays_partition_known CHECK (stream_partition BETWEEN 0 AND 15),
  holder           text,
  lease_until      timestamptz NOT NULL DEFAULT '-infinity',
  appended_through bigint NOT NULL DEFAULT 0,
  purged_through   bigint NOT NULL DEFAULT 0
);

-- Distributes the schema when the database has the citus extension (migration 10), now
-- with the log by partition: its own co-location group, so a partition's appends and
-- reads run on one shard.
CREATE OR REPLACE FUNCTION distribute_by_order() RETURNS void LANGUAGE plpgsql AS $$
DECLARE
  t text;
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'citus') THEN
    RETURN;
  END IF;
  SET LOCAL citus.enable_unsafe_triggers = on;
    DROP TRIGGER IF EXISTS outbox_notify ON outbox;
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
  IF to_regclass('event_log') IS NOT NULL
     AND NOT EXISTS (SELECT 1 FROM pg_dist_partition WHERE logicalrelid = 'event_log'::regclass) THEN
    PERFORM create_distributed_table('event_log', 'stream_partition', colocate_with => 'none');
  END IF;
END $$;

-- The outbox's events so far move to the log here, in their old stream order (they keep
-- their place in each partition); numbered per order from the oldest kept. Old cursors
-- are refused (README, "Consuming the event stream").
SET LOCAL citus.multi_shard_modify_mode = 'sequential';
ALTER TABLE outbox ADD COLUMN stream_partition smallint
  GENERATED ALWAYS AS ((hashtext(order_id) & 15)::smallint) STORED;
SELECT distribute_by_order();
INSERT INTO event_log (stream_partition, position, event_id, order_id, order_sequence, event_type,
                       dispute_id, dispute_seq, actor_role, actor_id, occurred_at, payload, trace_id)
WITH kept AS MATERIALIZED (
  SELECT stream_partition, tx_id::text::numeric AS tx, id, event_id, order_id, event_type,
         dispute_id, dispute_seq, actor_role, actor_id, occurred_at, payload, trace_id
  FROM outbox
)
SELECT stream_partition, row_number() OVER (PARTITION BY stream_partition ORDER BY tx, id),
       event_id, order_id, row_number() OVER (PARTITION BY order_id ORDER BY tx, id), event_type,
       dispute_id, dispute_seq, actor_role, actor_id, occurred_at, payload, trace_id
FROM kept;
UPDATE orders SET event_sequence = moved.n
FROM (SELECT order_id, count(*) AS n FROM outbox GROUP BY order_id) moved
WHERE orders.order_id = moved.order_id;
INSERT INTO stream_relays (stream_partition) SELECT p FROM generate_series(0, 15) p;
DO $$
DECLARE
  moved record;
BEGIN
  FOR moved IN SELECT stream_partition, count(*) AS n FROM event_log GROUP BY stream_partition LOOP
    UPDATE stream_relays SET appended_through = moved.n WHERE stream_partition = moved.stream_partition;
  END LOOP;
END $$;
DELETE FROM outbox;

-- The outbox now only waits for the relay. Every row written from now on has its
-- order_sequence: a check NOT VALID (the rows just deleted are not read again — on Citus
-- the DDL may run on another connection than the delete, which would still see them).
DROP TRIGGER IF EXISTS outbox_notify ON outbox;
DROP FUNCTION IF EXISTS outbox_notify();
DROP TABLE outbox_retention;
DO $$
DECLARE
  ddl text;
BEGIN
  FOREACH ddl IN ARRAY ARRAY[
    'ALTER TABLE outbox DROP CONSTRAINT outbox_pkey',
    'ALTER TABLE outbox DROP COLUMN tx_id',
    'ALTER TABLE outbox ADD COLUMN order_sequence bigint',
    'ALTER TABLE outbox ADD CONSTRAINT outbox_order_sequence_positive
       CHECK (order_sequence IS NOT NULL AND order_sequence > 0) NOT VALID',
    'ALTER TABLE outbox ADD CONSTRAINT outbox_pkey PRIMARY KEY (order_id, id)',
    'ALTER TABLE outbox ADD CONSTRAINT outbox_order_sequence_once UNIQUE (order_id, order_sequence)',
    'CREATE INDEX outbox_relay ON outbox (id)'
  ] LOOP
    EXECUTE ddl;
  END LOOP;
END $$;

