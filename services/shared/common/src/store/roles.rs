//! Two PostgreSQL roles per service (security review, issue 7 item 4): an
//! owner, which migrates the schema and so owns the tables and their
//! triggers, and a runtime role, which the service's pool uses and which
//! may only read and write rows. Only a table's owner (or a superuser) may
//! `ALTER TABLE ... DISABLE TRIGGER` or `DROP TRIGGER`, so the triggers that
//! keep the audit trail append-only bind the running service too.
//!
//! Each service declares what its runtime role needs per table
//! ([`Schema`]); after migrating, the owner grants exactly that and revokes
//! the rest, and the runtime connection then checks that its role can do
//! no more ([`inspect_runtime`]).

use sqlx::migrate::Migrator;
use sqlx::postgres::PgConnection;
use sqlx::{AssertSqlSafe, Connection, PgPool};

use super::error::{DatabaseError, describe};

/// A privilege on a table that a runtime role may be granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Privilege {
    Select,
    Insert,
    Update,
    Delete,
}

impl Privilege {
    fn sql(self) -> &'static str {
        match self {
            Privilege::Select => "SELECT",
            Privilege::Insert => "INSERT",
            Privilege::Update => "UPDATE",
            Privilege::Delete => "DELETE",
        }
    }
}

/// Every table privilege PostgreSQL 15 knows: what is not granted is
/// revoked. TRUNCATE skips row triggers and TRIGGER lets a role add its own,
/// so neither is ever granted.
const ALL_PRIVILEGES: [&str; 7] = [
    "SELECT",
    "INSERT",
    "UPDATE",
    "DELETE",
    "TRUNCATE",
    "REFERENCES",
    "TRIGGER",
];

/// The privileges whose presence beyond a table's declaration the runtime
/// check refuses: each lets a role change or remove rows, or add a trigger.
const CHANGING_PRIVILEGES: [&str; 4] = ["UPDATE", "DELETE", "TRUNCATE", "TRIGGER"];

/// One table of a service's schema and what its runtime role may do to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Table {
    pub name: &'static str,
    pub privileges: &'static [Privilege],
}

impl Table {
    /// Rows are added and read, never changed: audit trails and the other
    /// records the triggers keep append-only.
    pub const fn append_only(name: &'static str) -> Self {
        Self {
            name,
            privileges: &[Privilege::Select, Privilege::Insert],
        }
    }

    /// Rows are also updated in place, within what their triggers allow.
    pub const fn updated(name: &'static str) -> Self {
        Self {
            name,
            privileges: &[Privilege::Select, Privilege::Insert, Privilege::Update],
        }
    }

    /// Exactly these privileges.
    pub const fn with(name: &'static str, privileges: &'static [Privilege]) -> Self {
        Self { name, privileges }
    }

    pub fn allows(&self, privilege: &str) -> bool {
        self.privileges.iter().any(|p| p.sql() == privilege)
    }

    /// No UPDATE or DELETE: what a runtime role must never be able to
    /// rewrite.
    pub fn is_append_only(&self) -> bool {
        !self.allows("UPDATE") && !self.allows("DELETE")
    }
}

/// A service's PostgreSQL schema: its migrations and, for every table they
/// create, what the runtime role needs. `service` names its settings in
/// errors (`<service>.database_url`, `<service>.database_owner_url`).
#[derive(Debug)]
pub struct Schema {
    pub service: &'static str,
    pub migrator: &'static Migrator,
    pub tables: &'static [Table],
}

impl Schema {
    pub fn url_key(&self) -> String {
        format!("{}.database_url", self.service)
    }

    pub fn owner_url_key(&self) -> String {
        format!("{}.database_owner_url", self.service)
    }

    pub fn append_only_tables(&self) -> impl Iterator<Item = &Table> {
        self.tables.iter().filter(|t| t.is_append_only())
    }
}

/// Why a service's database roles cannot be used: each would let the running
/// service disable or get around its own triggers, or the owner could not
/// prepare the runtime role. Every message names the setting to change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RoleError {
    #[error("{key}: cannot connect: {reason}")]
    OwnerUnreachable { key: String, reason: String },
    #[error(
        "{owner_key} connects as role {role:?}, the same role as {key}: the service's runtime role must not own its tables; create a runtime role of its own (README, \"Database roles\")"
    )]
    SameRole {
        key: String,
        owner_key: String,
        role: String,
    },
    #[error(
        "{key} connects as role {role:?}, which is a superuser and could disable the audit triggers; use a role without SUPERUSER (README, \"Database roles\")"
    )]
    Superuser { key: String, role: String },
    #[error(
        "{key} connects as role {role:?}, which has CREATEROLE and could make itself a member of the owner; use a role without CREATEROLE"
    )]
    CreateRole { key: String, role: String },
    #[error(
        "{key} connects as role {role:?}, which owns (or is a member of the owner of) {object}, so it could disable or drop what guards the records; the tables must belong to the role of {owner_key} only"
    )]
    Owns {
        key: String,
        owner_key: String,
        role: String,
        object: String,
    },
    #[error(
        "{key} connects as role {role:?}, which may {privilege} table {table:?} beyond what the service needs; revoke it (from PUBLIC too, or from the role it inherits it from)"
    )]
    Privilege {
        key: String,
        role: String,
        table: String,
        privilege: String,
    },
    #[error(
        "{key} connects as role {role:?}, which cannot see table {table:?}: the owner's schema must be on the runtime role's search_path"
    )]
    MissingTable {
        key: String,
        role: String,
        table: String,
    },
    #[error("{key}: migrating as the owner failed: {reason}")]
    Migration { key: String, reason: String },
    #[error("{key}: granting the runtime role {role:?} its privileges failed: {reason}")]
    Grant {
        key: String,
        role: String,
        reason: String,
    },
}

/// Who a connection is.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct RoleIdentity {
    pub name: String,
    pub superuser: bool,
    pub create_role: bool,
}

const IDENTITY: &str = "SELECT CAST(rolname AS TEXT) AS name, rolsuper AS superuser,
     rolcreaterole AS create_role FROM pg_roles WHERE rolname = current_user";

pub async fn identity<'c, E>(executor: E) -> Result<RoleIdentity, DatabaseError>
where
    E: sqlx::PgExecutor<'c>,
{
    Ok(sqlx::query_as(IDENTITY).fetch_one(executor).await?)
}

/// A quoted identifier: `"name"`, with inner quotes doubled.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Refuses a runtime role that is the owner, a superuser or can create
/// roles, before anything is migrated or granted.
pub fn refuse_before_grants(
    schema: &Schema,
    runtime: &RoleIdentity,
    owner: &RoleIdentity,
) -> Result<(), RoleError> {
    if runtime.name == owner.name {
        return Err(RoleError::SameRole {
            key: schema.url_key(),
            owner_key: schema.owner_url_key(),
            role: runtime.name.clone(),
        });
    }
    if runtime.superuser {
        return Err(RoleError::Superuser {
            key: schema.url_key(),
            role: runtime.name.clone(),
        });
    }
    if runtime.create_role {
        return Err(RoleError::CreateRole {
            key: schema.url_key(),
            role: runtime.name.clone(),
        });
    }
    Ok(())
}

/// Gives `runtime` exactly what `schema` declares on each table, revokes
/// every other table privilege and everything on sqlx's migration table,
/// and lets it use the sequences behind its inserts. Run by the owner,
/// under the migrator's lock (concurrent GRANTs on one table can fail), in
/// one transaction so that a running replica never sees a privilege missing.
pub async fn grant_runtime(
    owner: &mut PgConnection,
    schema: &Schema,
    runtime: &str,
) -> Result<(), DatabaseError> {
    let failed = |e: sqlx::Error| {
        DatabaseError::from(RoleError::Grant {
            key: schema.owner_url_key(),
            role: runtime.to_owned(),
            reason: describe(&e),
        })
    };
    let role = quote_ident(runtime);
    let mut tx = owner.begin().await.map_err(failed)?;
    let namespace: String = sqlx::query_scalar("SELECT current_schema()")
        .fetch_one(&mut *tx)
        .await
        .map_err(failed)?;
    let namespace = quote_ident(&namespace);
    let mut statements = Vec::new();
    for table in schema.tables {
        let qualified = format!("{namespace}.{}", quote_ident(table.name));
        let granted: Vec<&str> = table.privileges.iter().map(|p| p.sql()).collect();
        let revoked: Vec<&str> = ALL_PRIVILEGES
            .into_iter()
            .filter(|p| !granted.contains(p))
            .collect();
        statements.push(format!(
            "REVOKE {} ON TABLE {qualified} FROM {role}",
            revoked.join(", ")
        ));
        statements.push(format!(
            "GRANT {} ON TABLE {qualified} TO {role}",
            granted.join(", ")
        ));
        if table.allows("INSERT") {
            // A serial column's default calls nextval, which needs USAGE.
            let sequences: Vec<String> = sqlx::query_scalar(OWNED_SEQUENCES)
                .bind(&qualified)
                .fetch_all(&mut *tx)
                .await
                .map_err(failed)?;
            for sequence in sequences {
                statements.push(format!(
                    "GRANT USAGE ON SEQUENCE {namespace}.{} TO {role}",
                    quote_ident(&sequence)
                ));
            }
        }
    }
    statements.push(format!(
        "REVOKE ALL ON TABLE {namespace}.\"_sqlx_migrations\" FROM {role}"
    ));
    let can_use_schema: bool = sqlx::query_scalar(
        "SELECT has_schema_privilege(CAST($1 AS NAME), current_schema(), 'USAGE')",
    )
    .bind(runtime)
    .fetch_one(&mut *tx)
    .await
    .map_err(failed)?;
    if !can_use_schema {
        statements.push(format!("GRANT USAGE ON SCHEMA {namespace} TO {role}"));
    }
    for statement in statements {
        // Built from quoted identifiers only: table names declared in the
        // code, the schema and role names the server reported.
        sqlx::query(AssertSqlSafe(statement))
            .execute(&mut *tx)
            .await
            .map_err(failed)?;
    }
    tx.commit().await.map_err(failed)?;
    Ok(())
}

/// The sequences owned by a table's columns (`BIGSERIAL`, identity).
const OWNED_SEQUENCES: &str = "SELECT CAST(s.relname AS TEXT) FROM pg_depend d
     JOIN pg_class s ON s.oid = d.objid AND s.relkind = 'S'
     WHERE d.classid = 'pg_class'::regclass AND d.refclassid = 'pg_class'::regclass
       AND d.refobjid = CAST($1 AS regclass) ORDER BY s.relname";

/// What the runtime connection's role could do that it must not: be a
/// superuser or create roles, own (or be a member of the owner of) a table
/// or its schema, or hold a privilege that changes rows beyond a table's
/// declaration. The first problem found, or `None`.
pub async fn inspect_runtime(
    pool: &PgPool,
    schema: &Schema,
) -> Result<Option<RoleError>, DatabaseError> {
    let runtime = identity(pool).await?;
    let key = schema.url_key();
    if runtime.superuser {
        return Ok(Some(RoleError::Superuser {
            key,
            role: runtime.name,
        }));
    }
    if runtime.create_role {
        return Ok(Some(RoleError::CreateRole {
            key,
            role: runtime.name,
        }));
    }
    for table in schema.tables {
        let found: Option<(bool, bool, String)> = sqlx::query_as(TABLE_OWNERSHIP)
            .bind(quote_ident(table.name))
            .fetch_optional(pool)
            .await?;
        let Some((owns_table, owns_schema, namespace)) = found else {
            return Ok(Some(RoleError::MissingTable {
                key,
                role: runtime.name,
                table: table.name.to_owned(),
            }));
        };
        if owns_table || owns_schema {
            let object = if owns_table {
                format!("table {:?}", table.name)
            } else {
                format!("schema {namespace:?}, whose tables it may drop")
            };
            return Ok(Some(RoleError::Owns {
                key,
                owner_key: schema.owner_url_key(),
                role: runtime.name,
                object,
            }));
        }
        for privilege in CHANGING_PRIVILEGES {
            if table.allows(privilege) {
                continue;
            }
            let held: bool =
                sqlx::query_scalar("SELECT has_table_privilege(current_user, to_regclass($1), $2)")
                    .bind(quote_ident(table.name))
                    .bind(privilege)
                    .fetch_one(pool)
                    .await?;
            if held {
                return Ok(Some(RoleError::Privilege {
                    key,
                    role: runtime.name,
                    table: table.name.to_owned(),
                    privilege: privilege.to_owned(),
                }));
            }
        }
    }
    Ok(None)
}

/// For the table the runtime role sees by that name (its search_path):
/// whether it is a member of the table's owner, and of its schema's owner
/// (who may drop the table); and the schema's name.
const TABLE_OWNERSHIP: &str = "SELECT pg_has_role(current_user, c.relowner, 'MEMBER'),
     pg_has_role(current_user, n.nspowner, 'MEMBER'), CAST(n.nspname AS TEXT)
     FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
     WHERE c.oid = to_regclass($1)";

/// Tables in `schema`'s database that its declaration leaves out, apart
/// from sqlx's own: a new migration's table the runtime role would be
/// refused. For tests, on a migrated database.
pub async fn undeclared_tables(
    pool: &PgPool,
    schema: &Schema,
) -> Result<Vec<String>, DatabaseError> {
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT CAST(tablename AS TEXT) FROM pg_tables WHERE schemaname = current_schema()
         AND tablename <> '_sqlx_migrations' ORDER BY tablename",
    )
    .fetch_all(pool)
    .await?;
    Ok(tables
        .into_iter()
        .filter(|t| !schema.tables.iter().any(|d| d.name == t))
        .collect())
}
