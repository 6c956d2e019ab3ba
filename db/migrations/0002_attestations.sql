-- Attestations, monthly access codes, employer look-ups and their rate limiting
-- (DOMAIN.md section 5).

-- One code per student per month. The plain code is never stored: `digest` is the keyed
-- HMAC used to find a code an employer presents, `sealed` is the code under AES-256-GCM
-- (bound to "<ssin>|<month>") so the service can print the same code again in every
-- attestation of the month.
CREATE TABLE access_codes (
    ssin        text NOT NULL,
    month       date NOT NULL CHECK (extract(day FROM month) = 1),
    digest      bytea NOT NULL UNIQUE,
    sealed      bytea NOT NULL,
    valid_from  date NOT NULL,
    valid_until date NOT NULL CHECK (valid_until >= valid_from),
    created_at  timestamptz NOT NULL DEFAULT now(),
    -- "New month, new code": a rotation run twice, or a rotation racing an attestation,
    -- can never give a student two codes for one month.
    PRIMARY KEY (ssin, month)
);

-- One row per (month, partition of access-codes.rotate) that the rotation has handled.
-- The worker's start-up catch-up publishes the commands of the partitions missing here.
CREATE TABLE access_code_rotations (
    month         date NOT NULL,
    partition     integer NOT NULL CHECK (partition >= 0),
    partitions    integer NOT NULL CHECK (partitions > partition),
    codes_created integer NOT NULL DEFAULT 0,
    runs          integer NOT NULL DEFAULT 1,
    event_id      text NOT NULL,
    rotated_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (month, partition)
);

CREATE TABLE attestations (
    attestation_id   text PRIMARY KEY,
    ssin             text NOT NULL,
    year             integer NOT NULL,
    status           text NOT NULL CHECK (status IN ('pending', 'issued', 'refused', 'failed')),
    event_id         text NOT NULL,
    requested_at     timestamptz NOT NULL,
    issued_at        timestamptz,
    issued_on        date,
    remaining        integer CHECK (remaining >= 0),
    quota            integer,
    code_month       date,
    code_valid_from  date,
    code_valid_until date,
    pdf              bytea,
    sha256           text,
    reason           text,
    CHECK (status <> 'issued' OR (pdf IS NOT NULL AND issued_at IS NOT NULL))
);
CREATE INDEX attestations_by_student ON attestations (ssin, requested_at DESC);

-- Every successful employer look-up, for the student to see who looked and when. The
-- caller's address is deliberately not kept here (data minimisation).
CREATE TABLE access_code_lookups (
    id           bigserial PRIMARY KEY,
    ssin         text NOT NULL,
    employer     text NOT NULL,
    looked_up_at timestamptz NOT NULL,
    code_month   date NOT NULL
);
CREATE INDEX access_code_lookups_by_student ON access_code_lookups (ssin, looked_up_at DESC);

-- Failed look-ups in the sliding window, per employer and per client address, in the
-- database so that every worker behind the load balancer counts the same failures.
CREATE TABLE lookup_failures (
    scope     text NOT NULL CHECK (scope IN ('employer', 'address')),
    subject   text NOT NULL,
    failed_at timestamptz NOT NULL
);
CREATE INDEX lookup_failures_by_subject ON lookup_failures (scope, subject, failed_at);
CREATE INDEX lookup_failures_by_time ON lookup_failures (failed_at);
