-- The seller's first response of disputes opened before migration 6 recorded it: the
-- first event of the dispute's history whose actor is the seller (deadlines are the
-- service's, never the seller's; an extension of the order's protection is not an act on
-- the dispute). A terminal dispute's row never changes otherwise; its
-- guard steps aside for this one statement, which touches nothing else.
ALTER TABLE disputes DISABLE TRIGGER disputes_guard;
UPDATE disputes d SET seller_first_response_at = e.first_at
FROM (SELECT dispute_id, min(occurred_at) AS first_at
      FROM dispute_events WHERE actor_role = 'SELLER' AND kind <> 'PROTECTION_EXTENDED'
      GROUP BY dispute_id) e
WHERE d.dispute_id = e.dispute_id AND d.seller_first_response_at IS NULL;
ALTER TABLE disputes ENABLE TRIGGER disputes_guard;
