-- Who read a student's remaining hours, as the student sees it (issue 8 item 8), and the
-- Dimona declarations received over HTTP with the mandates that allow a social
-- secretariat to declare for an employer (issue 9 item 5).

-- A code look-up names the role of the token that made it: employers and agencies both
-- may look a code up. Rows from before this migration were employers' (the default).
ALTER TABLE access_code_lookups ADD COLUMN reader_role text NOT NULL DEFAULT 'employer';

-- An agency's read of a consenting student's remaining hours, audited like a look-up.
CREATE TABLE agency_reads (
    id      bigserial PRIMARY KEY,
    ssin    text NOT NULL,
    agency  text NOT NULL,
    read_at timestamptz NOT NULL
);
CREATE INDEX agency_reads_by_student ON agency_reads (ssin, read_at DESC);

-- The employers a social secretariat may declare for over HTTP, loaded by an operator
-- (`studentwork mandates import CSV`). Both as the API compares them: an enterprise
-- number (10 digits) or NSSO<number>.
CREATE TABLE mandates (
    secretariat text NOT NULL,
    employer    text NOT NULL,
    loaded_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (secretariat, employer)
);

-- A Dimona declaration received by POST /v1/declarations. It reaches the worker as a
-- record of dimona.declarations through the outbox (same transaction as this row);
-- the worker's answer is copied here by the trigger below as it enters the outbox, so
-- GET /v1/declarations/{id} reads it from PostgreSQL, whatever the outbox keeps.
CREATE TABLE http_declarations (
    declaration_id text PRIMARY KEY,
    declarant      text NOT NULL,
    employer       text NOT NULL,
    ssin           text NOT NULL,
    action         text NOT NULL,
    event_id       text NOT NULL,
    body_sha256    bytea NOT NULL,
    ack_event_id   text NOT NULL UNIQUE,
    received_at    timestamptz NOT NULL,
    answer         jsonb,
    answered_at    timestamptz,
    UNIQUE (declarant, event_id)
);

CREATE FUNCTION http_declaration_answer() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    reply jsonb := convert_from(NEW.value, 'UTF8')::jsonb;
BEGIN
    UPDATE http_declarations SET answer = reply, answered_at = now()
     WHERE ack_event_id = reply->>'eventId' AND answer IS NULL;
    RETURN NEW;
END;
$$;

CREATE TRIGGER outbox_http_declaration_answers AFTER INSERT ON outbox
    FOR EACH ROW WHEN (NEW.topic = 'dimona.acks') EXECUTE FUNCTION http_declaration_answer();
