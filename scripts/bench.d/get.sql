-- pgbench mimic of GetDispute: the service's one statement, on one of the disputes
-- setup.sql made.
\set k random(1, 1000)
SELECT d.dispute_id, d.order_id, d.buyer_id, d.seller_id, d.reason, d.remedy, d.refund_currency, d.refund_minor, d.description, d.evidence_urls, d.state, d.outcome, d.return_status, d.return_carrier, d.return_tracking, d.return_agreed_at, d.return_shipped_at, d.proposal_remedy, d.proposal_refund_currency, d.proposal_refund_minor, d.proposal_message, o.protection_ends_at, d.created_at, d.updated_at FROM disputes d JOIN orders o USING (order_id) WHERE d.dispute_id = md5('g' || :k)::uuid;
