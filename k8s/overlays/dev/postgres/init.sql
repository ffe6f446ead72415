-- dev only: one database per service (each owns its own data, DESIGN §2).
-- Run once by the postgres image, when the data volume is first initialised.
-- Production: create these (with one role each) on your managed PostgreSQL.
CREATE DATABASE equipoise_randomisation;
CREATE DATABASE equipoise_blinding;
CREATE DATABASE equipoise_safety;
