-- pgbench mimic of the `open` operation: the statements the service runs for RegisterOrder
-- and then OpenDispute, two transactions, as the service sends them (keep in step with
-- src/store/). Unique ids from a random number.
\set r random(1, 9000000000000000)
BEGIN;
SELECT order_id, buyer_id, seller_id, currency_code, amount_minor, protection_ends_at, refunded_minor, settled_at, disputes_closed, dispute_count FROM orders WHERE order_id = 'pg-' || :r FOR UPDATE;
INSERT INTO idempotency_keys (actor_role, actor_id, rpc, request_id, request_hash, created_at) VALUES ('SERVICE', 'pgbench', 'RegisterOrder', 'r-' || :r, '\x00', now()) ON CONFLICT DO NOTHING RETURNING true AS inserted;
INSERT INTO orders (order_id, buyer_id, seller_id, currency_code, amount_minor, protection_ends_at, created_at, updated_at) VALUES ('pg-' || :r, 'pg-b' || (:r % 100), 'pg-s' || (:r % 100), 'USD', 10000, now() + interval '30 days', now(), now()) ON CONFLICT (order_id) DO NOTHING;
WITH history AS (INSERT INTO dispute_events (dispute_id, seq, kind, actor_role, actor_id, occurred_at, payload, trace_id) SELECT NULL::uuid, COALESCE(MAX(seq), 0) + 1, 'ORDER_REGISTERED', 'SERVICE', 'pgbench', now(), '{"version": 2}', NULL FROM dispute_events WHERE dispute_id = NULL::uuid AND NULL::uuid IS NOT NULL HAVING NULL::uuid IS NOT NULL RETURNING seq) INSERT INTO outbox (event_id, event_type, order_id, dispute_id, dispute_seq, actor_role, actor_id, occurred_at, payload, trace_id) VALUES (gen_random_uuid(), 'ORDER_REGISTERED', 'pg-' || :r, NULL, (SELECT seq FROM history), 'SERVICE', 'pgbench', now(), '{"version": 2}', NULL);
UPDATE idempotency_keys SET reply = '{}' WHERE actor_role = 'SERVICE' AND actor_id = 'pgbench' AND rpc = 'RegisterOrder' AND request_id = 'r-' || :r AND reply IS NULL;
COMMIT;
BEGIN;
SELECT order_id, buyer_id, seller_id, currency_code, amount_minor, protection_ends_at, refunded_minor, settled_at, disputes_closed, dispute_count FROM orders WHERE order_id = 'pg-' || :r FOR UPDATE;
INSERT INTO idempotency_keys (actor_role, actor_id, rpc, request_id, request_hash, created_at) VALUES ('BUYER', 'pg-b' || (:r % 100), 'OpenDispute', 'o-' || :r, '\x00', now()) ON CONFLICT DO NOTHING RETURNING true AS inserted;
SELECT dispute_id FROM disputes WHERE order_id = 'pg-' || :r AND state NOT IN ('CANCELLED', 'RESOLVED');
INSERT INTO disputes (dispute_id, order_id, buyer_id, seller_id, reason, remedy, refund_currency, refund_minor, description, evidence_urls, state, outcome, return_status, created_at, updated_at) VALUES (md5('d' || :r)::uuid, 'pg-' || :r, 'pg-b' || (:r % 100), 'pg-s' || (:r % 100), 'NOT_AS_DESCRIBED', 'FULL_REFUND', NULL, NULL, 'load test', '{}', 'AWAITING_SELLER', NULL, NULL, now(), now());
UPDATE orders SET funds_state = 'HELD', refunded_minor = NULL, released_minor = NULL, settled_at = NULL, disputes_closed = false, dispute_count = 1, protection_ends_at = protection_ends_at, updated_at = now() WHERE order_id = 'pg-' || :r;
WITH history AS (INSERT INTO dispute_events (dispute_id, seq, kind, actor_role, actor_id, occurred_at, payload, trace_id) SELECT md5('d' || :r)::uuid, COALESCE(MAX(seq), 0) + 1, 'DISPUTE_OPENED', 'BUYER', 'pg-b' || (:r % 100), now(), '{"version": 2}', 'trace' FROM dispute_events WHERE dispute_id = md5('d' || :r)::uuid HAVING true RETURNING seq) INSERT INTO outbox (event_id, event_type, order_id, dispute_id, dispute_seq, actor_role, actor_id, occurred_at, payload, trace_id) VALUES (gen_random_uuid(), 'DISPUTE_OPENED', 'pg-' || :r, md5('d' || :r)::uuid, (SELECT seq FROM history), 'BUYER', 'pg-b' || (:r % 100), now(), '{"version": 2}', 'trace');
UPDATE idempotency_keys SET reply = '{}' WHERE actor_role = 'BUYER' AND actor_id = 'pg-b' || (:r % 100) AND rpc = 'OpenDispute' AND request_id = 'o-' || :r AND reply IS NULL;
COMMIT;
