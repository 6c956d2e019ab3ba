-- The places a DmfA keeps in the year's queue (first come, first served).

-- The hours a DmfA confirms keep the places of the declarations they replace; the hours it
-- reports beyond them queue at its own rank, behind everything accepted before it (the
-- way an update raising hours does). Same layout as periods.tranche_seqs/_hours. NULL for
-- rows stored before this migration: the worker derives their places from the
-- declarations of the group (quota.balance.dmfa_places) until the report changes.
ALTER TABLE wage_reports
    ADD COLUMN tranche_seqs  bigint[],
    ADD COLUMN tranche_hours integer[],
    ADD CONSTRAINT wage_report_tranches_paired CHECK (
        (tranche_seqs IS NULL) = (tranche_hours IS NULL)
        AND cardinality(tranche_seqs) = cardinality(tranche_hours)
    );
