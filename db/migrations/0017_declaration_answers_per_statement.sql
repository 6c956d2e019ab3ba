-- The answers of declarations received over HTTP (migration 0010) are copied by one
-- statement per insert into the outbox instead of a PL/pgSQL call per answer: the
-- per-row trigger parsed every answer the worker wrote (replays, payroll batches) to
-- look for an HTTP declaration, some 40 % of the cost of the worker's outbox insert.
-- Now the answers are read only while some HTTP declaration waits for its answer
-- (the partial index below tells at once), and a declaration takes the first answer
-- that names it, as before.
CREATE INDEX http_declarations_unanswered ON http_declarations (ack_event_id)
    WHERE answer IS NULL;

DROP TRIGGER outbox_http_declaration_answers ON outbox;
DROP FUNCTION http_declaration_answer();

CREATE FUNCTION http_declaration_answers() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM http_declarations WHERE answer IS NULL) THEN
        UPDATE http_declarations h SET answer = a.reply, answered_at = now()
          FROM (SELECT DISTINCT ON (r.reply->>'eventId') r.reply->>'eventId' AS event_id,
                       r.reply
                  FROM (SELECT id, convert_from(value, 'UTF8')::jsonb AS reply
                          FROM inserted WHERE topic = 'dimona.acks') AS r
                 ORDER BY r.reply->>'eventId', r.id) AS a
         WHERE h.ack_event_id = a.event_id AND h.answer IS NULL;
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER outbox_http_declaration_answers AFTER INSERT ON outbox
    REFERENCING NEW TABLE AS inserted
    FOR EACH STATEMENT EXECUTE FUNCTION http_declaration_answers();
