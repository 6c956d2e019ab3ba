-- Agency consents (DOMAIN.md section 2) and the student's eBox (section 5).

-- The current state of each (student, agency) consent: the latest change applied in the
-- order of the `consents` topic (one partition per student, so stream order is the
-- order the student acted in). A revoked consent keeps its row, so the student sees it.
CREATE TABLE consents (
    ssin        text NOT NULL,
    agency      text NOT NULL,
    active      boolean NOT NULL,
    granted_at  timestamptz,
    revoked_at  timestamptz,
    -- The change that produced this state.
    event_id    text NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (ssin, agency)
);

-- Every change ever applied: the written record of when a student agreed and withdrew.
CREATE TABLE consent_changes (
    event_id    text PRIMARY KEY,
    ssin        text NOT NULL,
    agency      text NOT NULL,
    action      text NOT NULL CHECK (action IN ('grant', 'revoke')),
    changed_at  timestamptz NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX consent_changes_by_student ON consent_changes (ssin, agency);

-- Attestations delivered to the student's eBox. `id` is derived from the delivery's
-- event id (UUID v5), so a rebuilt eBox gives every document the same address.
CREATE TABLE ebox_documents (
    id              uuid PRIMARY KEY,
    event_id        text NOT NULL UNIQUE,
    attestation_id  text NOT NULL,
    ssin            text NOT NULL,
    year            integer NOT NULL,
    title           text NOT NULL,
    file_name       text NOT NULL,
    content_type    text NOT NULL,
    content         bytea NOT NULL,
    sha256          text NOT NULL,
    issued_at       timestamptz NOT NULL,
    delivered_at    timestamptz NOT NULL,
    -- Delivery date (Europe/Brussels) + the retention months: the last day it is shown,
    -- unless the student archived it.
    available_until date NOT NULL,
    archived_at     timestamptz,
    UNIQUE (ssin, attestation_id)
);
CREATE INDEX ebox_documents_by_student ON ebox_documents (ssin, delivered_at DESC);
CREATE INDEX ebox_documents_expiring ON ebox_documents (available_until)
    WHERE archived_at IS NULL;
