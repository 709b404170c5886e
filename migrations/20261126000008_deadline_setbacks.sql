-- Deadline candidates the worker has set aside (README, "Deadlines"): a dispute whose
-- deadline, or an order whose release at the end of protection, failed to apply for a
-- reason other than an outage (a corrupt row, a bug, a trigger). The scans skip it until
-- `retry_at`, so the candidates behind it go on; each failure doubles the wait.
--
-- A table of its own rather than columns on disputes/orders: writing the bookkeeping must
-- succeed exactly when updating the candidate's row fails, must not fire the guard
-- triggers, move `updated_at` or count in the store record. No foreign keys for the same
-- reason: the insert must not wait on the candidate's row lock (another replica may hold
-- it), and disputes and orders are never deleted. A setback is for the row as it was when
-- it failed (`candidate_updated_at`): once the row changes, the worker forgets it.
CREATE TABLE deadline_setbacks (
  dispute_id           uuid CONSTRAINT deadline_setbacks_dispute_key UNIQUE,
  order_id             text CONSTRAINT deadline_setbacks_order_key UNIQUE,
  attempts             integer NOT NULL CONSTRAINT deadline_setbacks_attempts_positive CHECK (attempts > 0),
  retry_at             timestamptz NOT NULL,
  last_error           text NOT NULL,
  first_failed_at      timestamptz NOT NULL,
  candidate_updated_at timestamptz NOT NULL,
  -- Either a dispute (its deadline) or an order (its protection end), never both.
  CONSTRAINT deadline_setbacks_one_candidate CHECK ((dispute_id IS NULL) <> (order_id IS NULL))
);
