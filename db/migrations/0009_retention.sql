-- Retention (issue 8, item 10): an attestation's stored PDF is purged when its eBox
-- period has ended and the student did not archive it there. The row stays (the student's
-- list of attestations, the code it printed); `pdf_purged_at` says when its bytes went.
ALTER TABLE attestations ADD COLUMN pdf_purged_at timestamptz;
ALTER TABLE attestations DROP CONSTRAINT attestations_check;
ALTER TABLE attestations ADD CONSTRAINT attestations_issued_has_pdf CHECK (
    status <> 'issued' OR (issued_at IS NOT NULL AND (pdf IS NOT NULL OR pdf_purged_at IS NOT NULL))
);
CREATE INDEX access_code_lookups_by_time ON access_code_lookups (looked_up_at);
