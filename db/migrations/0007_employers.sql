-- Employer names from the Crossroads Bank for Enterprises' open data (KBO / BCE).

-- Loaded by `studentwork employers import PATH` from the export's enterprise.csv and
-- denomination.csv; a full export replaces every row. The pages show a name where the
-- export has one and the formatted enterprise number otherwise, so nothing of the ledger
-- depends on these tables (no foreign key from periods or wage_reports).

-- One row per registered enterprise (establishment units are left out: declarations name
-- the enterprise). status is the export's code (AC active, ST stopped).
CREATE TABLE employers (
    enterprise_number text PRIMARY KEY CHECK (enterprise_number ~ '^[01][0-9]{9}$'),
    status            text NOT NULL
);

-- Every denomination of an enterprise, as the export lists them. language is the export's
-- code (0 unknown, 1 French, 2 Dutch, 3 German, 4 English); type_of_denomination 1 is the
-- official name, 2 its abbreviation, 3 a commercial name, 4 a branch name. An enterprise
-- can have several names of one type and language (commercial names), so there is no
-- unique key beyond the row.
CREATE TABLE employer_names (
    enterprise_number    text NOT NULL CHECK (enterprise_number ~ '^[01][0-9]{9}$'),
    language             smallint NOT NULL,
    type_of_denomination smallint NOT NULL,
    name                 text NOT NULL
);
CREATE INDEX employer_names_by_number ON employer_names (enterprise_number);
