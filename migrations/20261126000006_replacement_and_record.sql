-- Replacement instead of refund, the conversation, and the store's dispute record
-- (README, "Replacement", "The conversation", "The store's record").

-- A replacement is a remedy a buyer may ask for or a seller propose; two states follow it.
ALTER TABLE disputes
  DROP CONSTRAINT disputes_remedy_known,
  DROP CONSTRAINT disputes_proposal_remedy_known,
  DROP CONSTRAINT disputes_state_known;
ALTER TABLE disputes
  ADD CONSTRAINT disputes_remedy_known
    CHECK (remedy IN ('FULL_REFUND', 'PARTIAL_REFUND', 'RETURN_AND_REFUND', 'REPLACEMENT')),
  ADD CONSTRAINT disputes_proposal_remedy_known
    CHECK (proposal_remedy IN ('FULL_REFUND', 'PARTIAL_REFUND', 'RETURN_AND_REFUND', 'REPLACEMENT')),
  ADD CONSTRAINT disputes_state_known CHECK (state IN (
    'AWAITING_SELLER', 'NEGOTIATING', 'AWAITING_RETURN_SHIPMENT', 'RETURN_IN_TRANSIT',
    'UNDER_REVIEW', 'CANCELLED', 'RESOLVED', 'AWAITING_REPLACEMENT_SHIPMENT', 'REPLACEMENT_IN_TRANSIT')),
  ADD COLUMN replacement_agreed_at    timestamptz,
  ADD COLUMN replacement_carrier      text,
  ADD COLUMN replacement_tracking     text,
  ADD COLUMN replacement_shipped_at   timestamptz,
  -- When the order's seller first acted on the dispute: the record's response time.
  ADD COLUMN seller_first_response_at timestamptz;

ALTER TABLE disputes
  -- The replacement states need an agreed replacement; one in transit was shipped.
  ADD CONSTRAINT disputes_replacement_agreed CHECK (
    state NOT IN ('AWAITING_REPLACEMENT_SHIPMENT', 'REPLACEMENT_IN_TRANSIT') OR replacement_agreed_at IS NOT NULL
  ),
  ADD CONSTRAINT disputes_replacement_in_transit_shipped CHECK (
    state <> 'REPLACEMENT_IN_TRANSIT' OR replacement_shipped_at IS NOT NULL
  ),
  -- A shipment is its carrier, tracking and time together, after the agreement.
  ADD CONSTRAINT disputes_replacement_shipment_whole CHECK (
    (replacement_shipped_at IS NULL) = (replacement_carrier IS NULL)
    AND (replacement_shipped_at IS NULL) = (replacement_tracking IS NULL)
    AND (replacement_shipped_at IS NULL OR replacement_shipped_at >= replacement_agreed_at)
  ),
  ADD CONSTRAINT disputes_first_response_after_opening CHECK (
    seller_first_response_at IS NULL OR seller_first_response_at >= created_at
  );

-- Once agreed, shipped or answered, those facts are never edited.
CREATE FUNCTION disputes_record_fixed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF OLD.replacement_agreed_at IS NOT NULL AND
     (NEW.replacement_agreed_at IS DISTINCT FROM OLD.replacement_agreed_at
      OR (OLD.replacement_shipped_at IS NOT NULL AND
          (NEW.replacement_carrier, NEW.replacement_tracking, NEW.replacement_shipped_at)
          IS DISTINCT FROM (OLD.replacement_carrier, OLD.replacement_tracking, OLD.replacement_shipped_at))) THEN
    RAISE EXCEPTION 'a replacement, once agreed or shipped, is never edited'
      USING ERRCODE = 'integrity_constraint_violation', CONSTRAINT = 'disputes_replacement_fixed';
  END IF;
  IF OLD.seller_first_response_at IS NOT NULL
     AND NEW.seller_first_response_at IS DISTINCT FROM OLD.seller_first_response_at THEN
    RAISE EXCEPTION 'the seller''s first response is set once'
      USING ERRCODE = 'integrity_constraint_violation', CONSTRAINT = 'disputes_first_response_fixed';
  END IF;
  RETURN NEW;
END $$;
CREATE TRIGGER disputes_record_fixed BEFORE UPDATE ON disputes FOR EACH ROW EXECUTE FUNCTION disputes_record_fixed();

-- The deadline worker's scan of the replacement states uses disputes_open_by_state.

-- The store record. Counts come from one row per seller and UTC day, kept by triggers in
-- the statement that writes the order or dispute (no extra round trip; any writer, even
-- hand-written SQL, keeps them right): a registration, an opening, an ending each add one
-- to their day's row. A window of N days reads at most N rows. The cost: one upsert per
-- registration, opening and ending, and those of one seller on one day queue on that
-- day's row lock until their transactions commit.
CREATE TABLE seller_daily_stats (
  seller_id              text NOT NULL,
  day                    date NOT NULL,
  orders_registered      bigint NOT NULL DEFAULT 0,
  opened_item_not_received bigint NOT NULL DEFAULT 0,
  opened_not_as_described  bigint NOT NULL DEFAULT 0,
  opened_quality_issue     bigint NOT NULL DEFAULT 0,
  ended_cancelled_by_buyer     bigint NOT NULL DEFAULT 0,
  ended_resolved_buyer_favour  bigint NOT NULL DEFAULT 0,
  ended_resolved_partial       bigint NOT NULL DEFAULT 0,
  ended_resolved_seller_favour bigint NOT NULL DEFAULT 0,
  PRIMARY KEY (seller_id, day),
  CONSTRAINT seller_daily_stats_non_negative CHECK (
    LEAST(orders_registered, opened_item_not_received, opened_not_as_described, opened_quality_issue,
          ended_cancelled_by_buyer, ended_resolved_buyer_favour, ended_resolved_partial,
          ended_resolved_seller_favour) >= 0
  )
);

CREATE FUNCTION seller_stats_count() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  at timestamptz;
  registered int := 0; inr int := 0; nad int := 0; qi int := 0;
  cancelled int := 0; buyer int := 0; partial int := 0; seller int := 0;
BEGIN
  IF TG_TABLE_NAME = 'orders' THEN
    at := NEW.created_at; registered := 1;
  ELSIF TG_OP = 'INSERT' THEN
    at := NEW.created_at;
    inr := (NEW.reason = 'ITEM_NOT_RECEIVED')::int;
    nad := (NEW.reason = 'NOT_AS_DESCRIBED')::int;
    qi := (NEW.reason = 'QUALITY_ISSUE')::int;
  ELSE
    -- An update that ended the dispute (the trigger's WHEN clause): count its outcome.
    at := NEW.updated_at;
    cancelled := (NEW.outcome = 'CANCELLED_BY_BUYER')::int;
    buyer := (NEW.outcome = 'RESOLVED_BUYER_FAVOUR')::int;
    partial := (NEW.outcome = 'RESOLVED_PARTIAL')::int;
    seller := (NEW.outcome = 'RESOLVED_SELLER_FAVOUR')::int;
  END IF;
  INSERT INTO seller_daily_stats AS s (seller_id, day, orders_registered, opened_item_not_received,
      opened_not_as_described, opened_quality_issue, ended_cancelled_by_buyer,
      ended_resolved_buyer_favour, ended_resolved_partial, ended_resolved_seller_favour)
  VALUES (NEW.seller_id, (at AT TIME ZONE 'UTC')::date, registered, inr, nad, qi,
          cancelled, buyer, partial, seller)
  ON CONFLICT (seller_id, day) DO UPDATE SET
    orders_registered = s.orders_registered + registered,
    opened_item_not_received = s.opened_item_not_received + inr,
    opened_not_as_described = s.opened_not_as_described + nad,
    opened_quality_issue = s.opened_quality_issue + qi,
    ended_cancelled_by_buyer = s.ended_cancelled_by_buyer + cancelled,
    ended_resolved_buyer_favour = s.ended_resolved_buyer_favour + buyer,
    ended_resolved_partial = s.ended_resolved_partial + partial,
    ended_resolved_seller_favour = s.ended_resolved_seller_favour + seller;
  RETURN NULL;
END $$;
CREATE TRIGGER orders_count_registered AFTER INSERT ON orders
  FOR EACH ROW EXECUTE FUNCTION seller_stats_count();
CREATE TRIGGER disputes_count_opened AFTER INSERT ON disputes
  FOR EACH ROW EXECUTE FUNCTION seller_stats_count();
CREATE TRIGGER disputes_count_ended AFTER UPDATE OF outcome ON disputes
  FOR EACH ROW WHEN (OLD.outcome IS NULL AND NEW.outcome IS NOT NULL)
  EXECUTE FUNCTION seller_stats_count();

-- What existed before this migration, counted once.
INSERT INTO seller_daily_stats (seller_id, day, orders_registered)
  SELECT seller_id, (created_at AT TIME ZONE 'UTC')::date, count(*) FROM orders GROUP BY 1, 2
  ON CONFLICT (seller_id, day) DO UPDATE SET orders_registered = seller_daily_stats.orders_registered + excluded.orders_registered;
INSERT INTO seller_daily_stats AS s (seller_id, day, opened_item_not_received, opened_not_as_described, opened_quality_issue)
  SELECT seller_id, (created_at AT TIME ZONE 'UTC')::date,
         count(*) FILTER (WHERE reason = 'ITEM_NOT_RECEIVED'), count(*) FILTER (WHERE reason = 'NOT_AS_DESCRIBED'),
         count(*) FILTER (WHERE reason = 'QUALITY_ISSUE')
  FROM disputes GROUP BY 1, 2
  ON CONFLICT (seller_id, day) DO UPDATE SET
    opened_item_not_received = s.opened_item_not_received + excluded.opened_item_not_received,
    opened_not_as_described = s.opened_not_as_described + excluded.opened_not_as_described,
    opened_quality_issue = s.opened_quality_issue + excluded.opened_quality_issue;
INSERT INTO seller_daily_stats AS s (seller_id, day, ended_cancelled_by_buyer, ended_resolved_buyer_favour,
                                     ended_resolved_partial, ended_resolved_seller_favour)
  SELECT seller_id, (updated_at AT TIME ZONE 'UTC')::date,
         count(*) FILTER (WHERE outcome = 'CANCELLED_BY_BUYER'), count(*) FILTER (WHERE outcome = 'RESOLVED_BUYER_FAVOUR'),
         count(*) FILTER (WHERE outcome = 'RESOLVED_PARTIAL'), count(*) FILTER (WHERE outcome = 'RESOLVED_SELLER_FAVOUR')
  FROM disputes WHERE outcome IS NOT NULL GROUP BY 1, 2
  ON CONFLICT (seller_id, day) DO UPDATE SET
    ended_cancelled_by_buyer = s.ended_cancelled_by_buyer + excluded.ended_cancelled_by_buyer,
    ended_resolved_buyer_favour = s.ended_resolved_buyer_favour + excluded.ended_resolved_buyer_favour,
    ended_resolved_partial = s.ended_resolved_partial + excluded.ended_resolved_partial,
    ended_resolved_seller_favour = s.ended_resolved_seller_favour + excluded.ended_resolved_seller_favour;

-- Open disputes of a seller, counted from this index (they are few: at most one per order).
CREATE INDEX disputes_seller_open ON disputes (seller_id) WHERE state NOT IN ('CANCELLED', 'RESOLVED');
-- The median response time: an index-only range scan over the window's first responses.
CREATE INDEX disputes_seller_first_response ON disputes (seller_id, seller_first_response_at)
  INCLUDE (created_at) WHERE seller_first_response_at IS NOT NULL;
