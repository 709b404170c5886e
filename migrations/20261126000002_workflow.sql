-- The negotiation and return workflow (SPEC §6) and the indexes the deadline worker
-- (SPEC §8) scans.

ALTER TABLE disputes
  ADD COLUMN return_agreed_at         timestamptz,
  ADD COLUMN return_shipped_at        timestamptz,
  ADD COLUMN proposal_remedy          text CONSTRAINT disputes_proposal_remedy_known
                                        CHECK (proposal_remedy IN ('FULL_REFUND', 'PARTIAL_REFUND', 'RETURN_AND_REFUND')),
  ADD COLUMN proposal_refund_currency text,
  ADD COLUMN proposal_refund_minor    bigint,
  ADD COLUMN proposal_message         text CONSTRAINT disputes_proposal_message_length
                                        CHECK (char_length(proposal_message) <= 2000);

-- A seller may propose a return on a dispute that did not ask for one, so a return no
-- longer needs a RETURN_AND_REFUND remedy; but such a remedy always carries one, and an
-- item that never arrived is never returned.
ALTER TABLE disputes DROP CONSTRAINT disputes_return_iff_return_remedy;
ALTER TABLE disputes
  ADD CONSTRAINT disputes_return_remedy_has_return CHECK (remedy <> 'RETURN_AND_REFUND' OR return_status IS NOT NULL),
  ADD CONSTRAINT disputes_no_return_without_item CHECK (reason <> 'ITEM_NOT_RECEIVED' OR return_status IS NULL),
  ADD CONSTRAINT disputes_proposal_refund_amount CHECK (
    (proposal_remedy IS NOT DISTINCT FROM 'PARTIAL_REFUND') = (proposal_refund_minor IS NOT NULL AND proposal_refund_currency IS NOT NULL)
    AND (proposal_refund_minor IS NULL OR proposal_refund_minor > 0)
  ),
  ADD CONSTRAINT disputes_proposal_when_negotiated CHECK (state <> 'NEGOTIATING' OR proposal_remedy IS NOT NULL),
  ADD CONSTRAINT disputes_shipped_return_is_tracked CHECK (
    return_status IS DISTINCT FROM 'IN_TRANSIT'
    OR (return_shipped_at IS NOT NULL AND return_carrier IS NOT NULL AND return_tracking IS NOT NULL)
  ),
  ADD CONSTRAINT disputes_agreed_return_is_dated CHECK (
    return_status IS DISTINCT FROM 'AWAITING_SHIPMENT' OR return_agreed_at IS NOT NULL
  );

-- A proposal, once made, is what the buyer accepts: it is never edited.
CREATE FUNCTION disputes_proposal_fixed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF OLD.proposal_remedy IS NOT NULL AND
     (NEW.proposal_remedy, NEW.proposal_refund_currency, NEW.proposal_refund_minor, NEW.proposal_message)
     IS DISTINCT FROM (OLD.proposal_remedy, OLD.proposal_refund_currency, OLD.proposal_refund_minor, OLD.proposal_message) THEN
    RAISE EXCEPTION 'a proposal is never edited' USING ERRCODE = 'integrity_constraint_violation';
  END IF;
  RETURN NEW;
END $$;
CREATE TRIGGER disputes_proposal_fixed BEFORE UPDATE ON disputes FOR EACH ROW EXECUTE FUNCTION disputes_proposal_fixed();

-- The worker's scans: open disputes by state, held orders by protection end.
CREATE INDEX disputes_open_by_state ON disputes (state, created_at) WHERE state NOT IN ('CANCELLED', 'RESOLVED');
CREATE INDEX orders_held_by_protection_end ON orders (protection_ends_at) WHERE funds_state = 'HELD';
