-- One employer, one identity (issue "right to the hour in the corner cases", item 4).

-- An employer may file its Dimona under its enterprise number and its DmfA under its NSSO
-- registration number. Each NSSO number belongs to one enterprise (an enterprise may
-- hold several NSSO numbers). The worker learns a row from every message that names
-- both numbers (`source` 'message', `origin` the record topic[partition]@offset);
-- operators import the rest (`studentwork employer-ids import`, `source` 'operator').
-- A row is never changed once made: a message or an import naming another enterprise
-- for a known NSSO number is refused with the reason.
CREATE TABLE employer_ids (
    nsso_id           text PRIMARY KEY CHECK (nsso_id ~ '^NSSO[1-9][0-9]{0,9}$'),
    enterprise_number text NOT NULL CHECK (enterprise_number ~ '^[01][0-9]{9}$'),
    source            text NOT NULL CHECK (source IN ('message', 'operator')),
    origin            text,
    learned_at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX employer_ids_by_enterprise ON employer_ids (enterprise_number);

-- NSSO numbers are compared without leading zeros from now on (the Dimona REST interface
-- carries them as JSON numbers). Rows stored "as written" are brought to that form.
UPDATE periods SET employer = 'NSSO' || ltrim(substr(employer, 5), '0')
    WHERE employer ~ '^NSSO0+[1-9]';
UPDATE periods SET declarant = 'NSSO' || ltrim(substr(declarant, 5), '0')
    WHERE declarant ~ '^NSSO0+[1-9]';
-- Two DmfA lines of one employer and quarter under both spellings: the later one stands,
-- as a corrected DmfA replaces the previous one.
DELETE FROM wage_reports w USING wage_reports o
    WHERE w.employer ~ '^NSSO0+[1-9]'
      AND o.employer = 'NSSO' || ltrim(substr(w.employer, 5), '0')
      AND (o.ssin, o.year, o.quarter) = (w.ssin, w.year, w.quarter)
      AND o.received_at >= w.received_at;
DELETE FROM wage_reports o USING wage_reports w
    WHERE w.employer ~ '^NSSO0+[1-9]'
      AND o.employer = 'NSSO' || ltrim(substr(w.employer, 5), '0')
      AND (o.ssin, o.year, o.quarter) = (w.ssin, w.year, w.quarter);
-- Their places are derived again from the declarations of the group they now join
-- (quota.balance.derived_dmfa_tranches), as for the reports stored before 0006.
UPDATE wage_reports SET employer = 'NSSO' || ltrim(substr(employer, 5), '0'),
        tranche_seqs = NULL, tranche_hours = NULL
    WHERE employer ~ '^NSSO0+[1-9]';
-- Idempotency keys name the declarant or the employer: the same message keeps the same key.
DELETE FROM applied_events a USING applied_events b
    WHERE a.event_id ~ '^(dimona|dmfa):NSSO0+[1-9]'
      AND b.event_id = regexp_replace(a.event_id, '^(dimona|dmfa):NSSO0+', '\1:NSSO');
UPDATE applied_events SET event_id = regexp_replace(event_id, '^(dimona|dmfa):NSSO0+', '\1:NSSO')
    WHERE event_id ~ '^(dimona|dmfa):NSSO0+[1-9]';
