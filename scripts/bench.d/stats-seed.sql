-- The store record's benchmark data: one store with 100,000 orders over the last 89 days,
-- one in 20 disputed (half of those ended, four in five answered), and 100,000 orders of
-- 1,000 other stores beside it. Written through the same triggers as production, so the
-- daily counts are built the way the service builds them.
INSERT INTO orders (order_id, buyer_id, seller_id, currency_code, amount_minor, protection_ends_at, registered_protection_ends_at, created_at, updated_at)
SELECT 'st-' || g, 'b' || (g % 5000), 'bench-store', 'USD', 10000, now() + interval '30 days', now() + interval '30 days',
       now() - interval '1 day' - (g % 88) * interval '1 day' - (g % 1440) * interval '1 minute', now()
FROM generate_series(1, 100000) g;
INSERT INTO orders (order_id, buyer_id, seller_id, currency_code, amount_minor, protection_ends_at, registered_protection_ends_at, created_at, updated_at)
SELECT 'other-' || g, 'b' || (g % 5000), 'store-' || (g % 1000), 'USD', 10000, now() + interval '30 days', now() + interval '30 days',
       now() - interval '1 day' - (g % 88) * interval '1 day', now()
FROM generate_series(1, 100000) g;
INSERT INTO disputes (dispute_id, order_id, buyer_id, seller_id, reason, remedy, description, evidence_urls, state,
                      seller_first_response_at, created_at, updated_at)
SELECT md5('st' || g)::uuid, o.order_id, o.buyer_id, o.seller_id,
       (ARRAY['ITEM_NOT_RECEIVED', 'NOT_AS_DESCRIBED', 'QUALITY_ISSUE'])[1 + g % 3], 'FULL_REFUND', 'bench', '{}',
       'AWAITING_SELLER',
       CASE WHEN (g / 20) % 5 <> 0
            THEN least(now(), o.created_at + interval '1 hour' + (g / 20 % 3000) * interval '1 minute') END,
       o.created_at + interval '1 hour', o.created_at + interval '1 hour'
FROM generate_series(20, 100000, 20) g JOIN orders o ON o.order_id = 'st-' || g;
UPDATE disputes SET state = CASE WHEN g.n % 4 = 0 THEN 'CANCELLED' ELSE 'RESOLVED' END,
       outcome = (ARRAY['CANCELLED_BY_BUYER', 'RESOLVED_BUYER_FAVOUR', 'RESOLVED_PARTIAL', 'RESOLVED_SELLER_FAVOUR'])[1 + g.n % 4],
       updated_at = least(now(), created_at + interval '3 days')
FROM (SELECT dispute_id, row_number() OVER (ORDER BY dispute_id) AS n FROM disputes WHERE seller_id = 'bench-store') g
WHERE disputes.dispute_id = g.dispute_id AND g.n % 2 = 0;
VACUUM ANALYZE orders;
VACUUM ANALYZE disputes;
VACUUM ANALYZE seller_daily_stats;
