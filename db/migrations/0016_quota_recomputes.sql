-- The last recompute requested for each year, and the quota it recomputes to. A worker
-- that starts and finds balances of a year computed with another quota than the effective
-- one writes the recompute commands (one per partition of quota.recompute, shared by the
-- workers) only if no recompute to that quota was requested already: sixteen workers
-- starting at once write one set, not sixteen. A quota change writes its row too.
CREATE TABLE quota_recomputes (
    year integer PRIMARY KEY,
    hours integer NOT NULL CHECK (hours >= 0),
    event_id text NOT NULL,
    requested_at timestamptz NOT NULL DEFAULT now()
);
