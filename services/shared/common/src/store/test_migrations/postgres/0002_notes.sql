-- A second migration, for adoption up to version 1 then migration to 2.
CREATE TABLE notes (id BIGINT PRIMARY KEY, text TEXT NOT NULL UNIQUE);
