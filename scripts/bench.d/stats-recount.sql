-- The same record counted from the orders and disputes themselves: what answering
-- without the daily counts would cost (pgbench, scripts/bench-stats).
SELECT (SELECT count(*) FROM orders WHERE seller_id = 'bench-store' AND created_at >= date_trunc('day', now()) - interval '89 days'),
       count(*) FILTER (WHERE reason = 'ITEM_NOT_RECEIVED' AND created_at >= date_trunc('day', now()) - interval '89 days'),
       count(*) FILTER (WHERE reason = 'NOT_AS_DESCRIBED' AND created_at >= date_trunc('day', now()) - interval '89 days'),
       count(*) FILTER (WHERE reason = 'QUALITY_ISSUE' AND created_at >= date_trunc('day', now()) - interval '89 days'),
       count(*) FILTER (WHERE outcome = 'CANCELLED_BY_BUYER' AND updated_at >= date_trunc('day', now()) - interval '89 days'),
       count(*) FILTER (WHERE outcome = 'RESOLVED_BUYER_FAVOUR' AND updated_at >= date_trunc('day', now()) - interval '89 days'),
       count(*) FILTER (WHERE outcome = 'RESOLVED_PARTIAL' AND updated_at >= date_trunc('day', now()) - interval '89 days'),
       count(*) FILTER (WHERE outcome = 'RESOLVED_SELLER_FAVOUR' AND updated_at >= date_trunc('day', now()) - interval '89 days'),
       count(*) FILTER (WHERE outcome IS NULL)
FROM disputes WHERE seller_id = 'bench-store';
