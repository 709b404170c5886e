-- A dispute as the service reads it: the dispute's own columns beside its order's
-- (protection end, amount, funds, closure, count). One definition, so every read and
-- every lock of a dispute projects the same columns (README, "Architecture"). A plain
-- view: PostgreSQL inlines it, so each query keeps its index plan, and a locking clause
-- on it locks the dispute's row and its order's.
CREATE VIEW dispute_rows AS
SELECT d.dispute_id, d.order_id, d.buyer_id, d.seller_id, d.reason, d.remedy,
       d.refund_currency, d.refund_minor, d.description, d.evidence_urls, d.state, d.outcome,
       d.return_status, d.return_carrier, d.return_tracking, d.return_agreed_at,
       d.return_shipped_at, d.proposal_remedy, d.proposal_refund_currency,
       d.proposal_refund_minor, d.proposal_message, d.replacement_agreed_at,
       d.replacement_carrier, d.replacement_tracking, d.replacement_shipped_at,
       d.seller_first_response_at, d.created_at, d.updated_at,
       o.protection_ends_at, o.currency_code, o.amount_minor, o.refunded_minor, o.settled_at,
       o.disputes_closed, o.dispute_count
FROM disputes d JOIN orders o ON o.order_id = d.order_id;
