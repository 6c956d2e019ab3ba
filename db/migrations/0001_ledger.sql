-- The hour ledger, the balances derived from it, and the machinery of effectively-once
-- processing: applied event ids and the transactional outbox.

CREATE TABLE students (
    ssin      text PRIMARY KEY,
    -- Next acceptance rank in this student's ledger (first come, first served).
    next_seq  bigint NOT NULL DEFAULT 1
);

CREATE TABLE periods (
    period_id        text PRIMARY KEY,
    ssin             text NOT NULL REFERENCES students (ssin),
    employer         text NOT NULL,
    declarant        text NOT NULL,
    start_date       date NOT NULL,
    end_date         date NOT NULL,
    -- Reservations in acceptance order: an update that raises the hours queues its
    -- extra hours behind everything accepted before it.
    tranche_seqs     bigint[] NOT NULL,
    tranche_hours    integer[] NOT NULL,
    planned_hours    integer NOT NULL CHECK (planned_hours > 0),
    received_at      timestamptz NOT NULL,
    late             boolean NOT NULL,
    cancelled        boolean NOT NULL DEFAULT false,
    event_id         text NOT NULL,
    joint_commission text,
    using_employer   text
);
CREATE INDEX periods_by_student ON periods (ssin);
CREATE INDEX periods_by_employer ON periods (employer);

CREATE TABLE wage_reports (
    ssin             text NOT NULL REFERENCES students (ssin),
    employer         text NOT NULL,
    year             integer NOT NULL,
    quarter          integer NOT NULL CHECK (quarter BETWEEN 1 AND 4),
    hours_worked     integer NOT NULL CHECK (hours_worked >= 0),
    gross_wage_cents bigint NOT NULL CHECK (gross_wage_cents >= 0),
    received_at      timestamptz NOT NULL,
    event_id         text NOT NULL,
    seq              bigint NOT NULL,
    PRIMARY KEY (ssin, employer, year, quarter)
);

CREATE TABLE balances (
    ssin       text NOT NULL,
    year       integer NOT NULL,
    quota      integer NOT NULL,
    used       integer NOT NULL,
    remaining  integer NOT NULL CHECK (remaining >= 0),
    version    bigint NOT NULL,
    -- The balance with every term of its computation (the contract of student.balances).
    document   jsonb NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (ssin, year)
);
CREATE INDEX balances_by_year ON balances (year);

CREATE TABLE applied_events (
    event_id   text PRIMARY KEY,
    applied_at timestamptz NOT NULL DEFAULT now()
);

-- Quota per year as changed by operators; configuration gives the defaults.
CREATE TABLE quota_years (
    year       integer PRIMARY KEY,
    hours      integer NOT NULL CHECK (hours >= 0),
    event_id   text NOT NULL,
    changed_at timestamptz NOT NULL DEFAULT now()
);

-- One row that every batch reads FOR SHARE and a quota change locks FOR UPDATE, so a
-- recomputation of a whole year never interleaves with a batch using the old quota.
CREATE TABLE quota_lock (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton)
);
INSERT INTO quota_lock DEFAULT VALUES;

CREATE TABLE outbox (
    id         bigserial PRIMARY KEY,
    topic      text NOT NULL,
    key        bytea,
    value      bytea NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    sent_at    timestamptz
);
CREATE INDEX outbox_pending ON outbox (id) WHERE sent_at IS NULL;

CREATE FUNCTION outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('studentwork_outbox', '');
    RETURN NULL;
END $$;

CREATE TRIGGER outbox_inserted AFTER INSERT ON outbox
    FOR EACH STATEMENT EXECUTE FUNCTION outbox_notify();
