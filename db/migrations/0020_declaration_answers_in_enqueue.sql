-- The answers of HTTP declarations are copied by db.store.enqueue, the one writer of the
-- outbox, in the same transaction and with the same rule (a waiting declaration takes
-- the first answer that names it), and only after it found a declaration waiting. The
-- statement trigger of migration 0017 needed a transition table: PostgreSQL copied every
-- inserted row into it, answers or not, someone waiting or not, about a sixth of the
-- worker's outbox insert (docs/ARCHITECTURE.md).
DROP TRIGGER outbox_http_declaration_answers ON outbox;
DROP FUNCTION http_declaration_answers();
