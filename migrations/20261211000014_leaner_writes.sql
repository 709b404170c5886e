-- Work every write did that no rule needs (BENCHMARKS.md, "Against the database floor").
-- Every rule these enforced is still enforced by the schema, by the constraint named.
-- (On Citus, DDL on a distributed table goes through EXECUTE: see migration 11.)
DO $$ BEGIN
  -- A dispute's order exists: `disputes_parties_are_the_orders` (order_id, buyer_id,
  -- seller_id → orders), whose columns are all NOT NULL, checks it on every insert
  -- already; the plain key on order_id looked the order up a second time.
  EXECUTE 'ALTER TABLE disputes DROP CONSTRAINT disputes_order_id_fkey';
  -- Likewise a settlement's order: `settlements_amount_is_the_orders` (order_id,
  -- currency_code, amount_minor, all NOT NULL).
  EXECUTE 'ALTER TABLE settlements DROP CONSTRAINT settlements_order_id_fkey';
  -- An order has a few disputes at most: `disputes_order_page` (order_id, dispute_id)
  -- finds them for either order of a listing, and sorting a few rows by their last change
  -- costs less than a second index written on every insert and every update of a dispute.
  EXECUTE 'DROP INDEX disputes_order_updated';
  -- Nothing has read the outbox by time since the relay moves its rows into the event log
  -- (migration 11): the rows stay there for milliseconds, and this index was written for
  -- each and cleaned up after each.
  EXECUTE 'DROP INDEX outbox_occurred';
END $$;
