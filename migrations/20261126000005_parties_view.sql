-- What the parties need to see (README, "Listing disputes", "Page tokens and cursors",
-- "Orders"): inbox listings by last change, the key that signs page tokens and cursors,
-- and the protection end an order was registered with.

-- ListDisputes ordered by last change, scoped to a party or to nobody.
CREATE INDEX disputes_buyer_updated ON disputes (buyer_id, updated_at DESC, dispute_id DESC);
CREATE INDEX disputes_seller_updated ON disputes (seller_id, updated_at DESC, dispute_id DESC);
CREATE INDEX disputes_order_updated ON disputes (order_id, updated_at DESC, dispute_id DESC);
CREATE INDEX disputes_updated ON disputes (updated_at DESC, dispute_id DESC);

-- Secrets every replica shares, made once, here: 32 random bytes from PostgreSQL's
-- strong random source (gen_random_uuid), unless the operator configures a key instead.
CREATE TABLE service_secrets (
  name    text PRIMARY KEY,
  secret  bytea NOT NULL CONSTRAINT service_secrets_long_enough CHECK (length(secret) >= 32)
);
INSERT INTO service_secrets (name, secret)
SELECT 'page_tokens',
       sha256(convert_to(gen_random_uuid()::text || gen_random_uuid()::text || clock_timestamp()::text, 'UTF8'));

-- The protection end as registered: re-sending the registration's facts after an
-- extension is the same registration, not a conflict. Orders extended before this
-- migration take the end their first extension started from, where the outbox still has it.
ALTER TABLE orders ADD COLUMN registered_protection_ends_at timestamptz;
UPDATE orders o
SET registered_protection_ends_at = COALESCE(
  (SELECT (e.payload->>'previous_protection_ends_at')::timestamptz
   FROM outbox e
   WHERE e.order_id = o.order_id AND e.event_type = 'PROTECTION_EXTENDED'
   ORDER BY e.tx_id, e.id
   LIMIT 1),
  o.protection_ends_at);
ALTER TABLE orders ALTER COLUMN registered_protection_ends_at SET NOT NULL;
ALTER TABLE orders ADD CONSTRAINT orders_protection_never_shortened
  CHECK (protection_ends_at >= registered_protection_ends_at);
