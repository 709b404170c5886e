-- 1,000 orders with a dispute each, for get.sql.
INSERT INTO orders (order_id, buyer_id, seller_id, currency_code, amount_minor, protection_ends_at, registered_protection_ends_at, created_at, updated_at, dispute_count)
SELECT 'pg-get-' || g, 'pg-b' || (g % 100), 'pg-s' || (g % 100), 'USD', 10000, now() + interval '30 days', now() + interval '30 days', now(), now(), 1
FROM generate_series(1, 1000) g;
INSERT INTO disputes (dispute_id, order_id, buyer_id, seller_id, reason, remedy, description, evidence_urls, state, created_at, updated_at)
SELECT md5('g' || g)::uuid, 'pg-get-' || g, 'pg-b' || (g % 100), 'pg-s' || (g % 100), 'NOT_AS_DESCRIBED', 'FULL_REFUND', 'load test', '{}', 'AWAITING_SELLER', now(), now()
FROM generate_series(1, 1000) g;
INSERT INTO dispute_directory (dispute_id, order_id)
SELECT md5('g' || g)::uuid, 'pg-get-' || g FROM generate_series(1, 1000) g;
