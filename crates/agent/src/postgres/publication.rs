//! The agent's two publications, so that capturing never changes what the source's own
//! statements can do.
//!
//! PostgreSQL refuses an `UPDATE` or `DELETE` on a table that a publication publishes for
//! updates or deletes unless the table has a replica identity (a primary key, a `REPLICA
//! IDENTITY USING INDEX` index, or `REPLICA IDENTITY FULL`). So the agent keeps:
//!
//! - the main publication (`<publication>`): the tables with a usable replica identity, for
//!   every operation;
//! - the insert-only publication (`<publication>_insert_only`, `publish = 'insert, truncate'`):
//!   the tables without one. Inserts and truncates never need an identity; these tables'
//!   updates and deletes are not captured, and the agent reports them as `not_captured` with
//!   the fix (`REPLICA IDENTITY FULL` or a key).
//!
//! The replication stream subscribes to both. When a table's identity changes, the agent
//! moves it between them (in one transaction, so no statement ever sees it in the wrong one).
//! Without a list of tables, the insert-only publication is `FOR ALL TABLES`, so a table
//! created later is captured from its first insert; the agent adds it to the main publication
//! once it has an identity.

use std::collections::BTreeSet;

use anyhow::{Context, bail};
use sqlx::{AssertSqlSafe, Connection, PgConnection};

use super::Settings;
use super::catalog::quote_ident;

/// A table by schema and name.
pub type Name = (String, String);

/// The insert-only publication's name for a main publication.
pub fn insert_only_name(publication: &str) -> String {
    format!("{publication}_insert_only")
}

/// The longest main publication name: its insert-only sibling must fit PostgreSQL's 63 bytes.
pub const MAX_PUBLICATION_NAME: usize = 63 - "_insert_only".len();

/// A table and whether its updates and deletes can be published without failing on the source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableIdentity {
    pub name: Name,
    pub usable: bool,
}

/// What a publication holds now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Membership {
    pub exists: bool,
    /// `FOR ALL TABLES`: its tables cannot be added or dropped one by one.
    pub all_tables: bool,
    /// Whether it publishes updates or deletes.
    pub updates_or_deletes: bool,
    pub tables: BTreeSet<Name>,
}

/// The statements that bring both publications where the tables' identities say.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    pub create_main: bool,
    /// `Some(true)`: create it `FOR ALL TABLES`.
    pub create_insert_only: Option<bool>,
    /// The insert-only publication publishes updates or deletes: set it back.
    pub restrict_insert_only: bool,
    pub add_main: Vec<Name>,
    pub drop_main: Vec<Name>,
    pub add_insert_only: Vec<Name>,
    pub drop_insert_only: Vec<Name>,
    /// Tables whose updates and deletes are not captured.
    pub not_captured: Vec<Name>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        !self.create_main
            && self.create_insert_only.is_none()
            && !self.restrict_insert_only
            && self.add_main.is_empty()
            && self.drop_main.is_empty()
            && self.add_insert_only.is_empty()
            && self.drop_insert_only.is_empty()
    }

    /// The SQL, in order (to be run in one transaction).
    pub fn statements(&self, publication: &str) -> Vec<String> {
        let main = quote_ident(publication);
        let insert_only = quote_ident(&insert_only_name(publication));
        let list = |tables: &[Name]| {
            tables
                .iter()
                .map(|(schema, table)| format!("{}.{}", quote_ident(schema), quote_ident(table)))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut out = Vec::new();
        if self.create_main {
            out.push(format!("create publication {main}"));
        }
        match self.create_insert_only {
            Some(true) => out.push(format!(
                "create publication {insert_only} for all tables with (publish = 'insert, truncate')"
            )),
            Some(false) => out.push(format!(
                "create publication {insert_only} with (publish = 'insert, truncate')"
            )),
            None => {}
        }
        if self.restrict_insert_only {
            out.push(format!(
                "alter publication {insert_only} set (publish = 'insert, truncate')"
            ));
        }
        // Drops first: a table is never in both publications, not even inside the transaction.
        if !self.drop_main.is_empty() {
            out.push(format!(
                "alter publication {main} drop table {}",
                list(&self.drop_main)
            ));
        }
        if !self.drop_insert_only.is_empty() {
            out.push(format!(
                "alter publication {insert_only} drop table {}",
                list(&self.drop_insert_only)
            ));
        }
        if !self.add_main.is_empty() {
            out.push(format!(
                "alter publication {main} add table {}",
                list(&self.add_main)
            ));
        }
        if !self.add_insert_only.is_empty() {
            out.push(format!(
                "alter publication {insert_only} add table {}",
                list(&self.add_insert_only)
            ));
        }
        out
    }
}

/// Where every table belongs. `tables` are the tables to capture and those either publication
/// already holds; `listed`: the configuration lists its tables (otherwise every table).
pub fn plan(
    tables: &[TableIdentity],
    main: &Membership,
    insert_only: &Membership,
    listed: bool,
) -> anyhow::Result<Plan> {
    let mut plan = Plan {
        create_main: !main.exists,
        create_insert_only: (!insert_only.exists).then_some(!listed),
        restrict_insert_only: insert_only.exists && insert_only.updates_or_deletes,
        ..Plan::default()
    };
    let insert_only_all = if insert_only.exists {
        insert_only.all_tables
    } else {
        !listed
    };
    let keyless: Vec<&Name> = tables
        .iter()
        .filter(|table| !table.usable)
        .map(|table| &table.name)
        .collect();
    if main.exists && main.all_tables && main.updates_or_deletes && !keyless.is_empty() {
        bail!(
            "the publication publishes every table for updates and deletes, and {} ha{} no \
             replica identity, so updates and deletes on {} fail on the source: give {} a \
             primary key or run ALTER TABLE ... REPLICA IDENTITY FULL, or drop the \
             publication so that the agent creates it again, per table",
            display(&keyless),
            if keyless.len() == 1 { "s" } else { "ve" },
            if keyless.len() == 1 { "it" } else { "them" },
            if keyless.len() == 1 { "it" } else { "each" },
        );
    }
    for table in tables {
        let in_main = main.tables.contains(&table.name);
        let in_insert_only = insert_only.tables.contains(&table.name);
        if table.usable {
            if !main.all_tables && !in_main {
                plan.add_main.push(table.name.clone());
            }
            if !insert_only_all && in_insert_only {
                plan.drop_insert_only.push(table.name.clone());
            }
        } else {
            plan.not_captured.push(table.name.clone());
            if !main.all_tables && in_main {
                plan.drop_main.push(table.name.clone());
            }
            if !insert_only_all && !in_insert_only {
                plan.add_insert_only.push(table.name.clone());
            }
        }
    }
    Ok(plan)
}

fn display(tables: &[&Name]) -> String {
    tables
        .iter()
        .map(|(schema, table)| format!("{schema}.{table}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A publication's current state.
pub async fn membership(connection: &mut PgConnection, name: &str) -> sqlx::Result<Membership> {
    let row: Option<(bool, bool)> = sqlx::query_as(
        "select puballtables, pubupdate or pubdelete from pg_publication where pubname = $1",
    )
    .bind(name)
    .fetch_optional(&mut *connection)
    .await?;
    let Some((all_tables, updates_or_deletes)) = row else {
        return Ok(Membership::default());
    };
    let tables: Vec<Name> = sqlx::query_as(
        "select n.nspname::text, c.relname::text from pg_publication_rel r \
         join pg_publication p on p.oid = r.prpubid \
         join pg_class c on c.oid = r.prrelid join pg_namespace n on n.oid = c.relnamespace \
         where p.pubname = $1",
    )
    .bind(name)
    .fetch_all(&mut *connection)
    .await?;
    Ok(Membership {
        exists: true,
        all_tables,
        updates_or_deletes,
        tables: tables.into_iter().collect(),
    })
}

/// Every user table and whether it has a usable replica identity: `FULL`, or an index
/// (`DEFAULT` with a primary key, `USING INDEX` with the index present).
pub async fn identities(connection: &mut PgConnection) -> sqlx::Result<Vec<TableIdentity>> {
    let rows: Vec<(String, String, bool)> = sqlx::query_as(
        "select n.nspname::text, c.relname::text, \
                c.relreplident = 'f' or (c.relreplident in ('d', 'i') and exists ( \
                  select 1 from pg_index i where i.indrelid = c.oid \
                    and case when c.relreplident = 'i' then i.indisreplident else i.indisprimary end)) \
         from pg_class c join pg_namespace n on n.oid = c.relnamespace \
         where c.relkind in ('r', 'p') and n.nspname not in ('pg_catalog', 'information_schema') \
           and n.nspname not like 'pg\\_%' order by 1, 2",
    )
    .fetch_all(connection)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(schema, table, usable)| TableIdentity {
            name: (schema, table),
            usable,
        })
        .collect())
}

/// Brings both publications where the tables' identities say (creating them the first time),
/// and returns the tables whose updates and deletes are not captured.
pub async fn reconcile(
    connection: &mut PgConnection,
    settings: &Settings,
) -> anyhow::Result<Vec<Name>> {
    let main = membership(connection, &settings.publication).await?;
    let insert_only = membership(connection, &insert_only_name(&settings.publication)).await?;
    let listed = !settings.tables.is_empty();
    let wanted: BTreeSet<Name> = settings.table_names().into_iter().collect();
    let all = identities(connection).await?;
    if listed {
        let missing: Vec<String> = wanted
            .iter()
            .filter(|name| !all.iter().any(|table| &table.name == *name))
            .map(|(schema, table)| format!("{schema}.{table}"))
            .collect();
        if !missing.is_empty() {
            bail!("the listed table(s) {} do not exist", missing.join(", "));
        }
    }
    let tables: Vec<TableIdentity> = all
        .into_iter()
        .filter(|table| {
            !listed
                || wanted.contains(&table.name)
                || main.tables.contains(&table.name)
                || insert_only.tables.contains(&table.name)
        })
        .collect();
    let plan = plan(&tables, &main, &insert_only, listed)
        .with_context(|| format!("the publication {:?}", settings.publication))?;
    if !plan.is_empty() {
        let statements = plan.statements(&settings.publication);
        let mut transaction = connection.begin().await?;
        for statement in &statements {
            // Names are quoted identifiers.
            if let Err(error) = sqlx::raw_sql(AssertSqlSafe(statement.clone()))
                .execute(&mut *transaction)
                .await
            {
                let detail = super::database_message(&error);
                bail!(
                    "changing the publications failed ({detail}): it needs {} of every captured \
                     table; ask their owner or a superuser to run `{}`",
                    if listed {
                        "ownership"
                    } else {
                        "a superuser (for the FOR ALL TABLES publication) and ownership"
                    },
                    statements.join("; ")
                );
            }
        }
        transaction.commit().await?;
        for (schema, table) in &plan.drop_main {
            tracing::warn!(
                schema,
                table,
                "a table lost its replica identity; only its inserts and truncates are captured now"
            );
        }
        for (schema, table) in &plan.add_main {
            tracing::info!(
                schema,
                table,
                "a table is captured with its updates and deletes"
            );
        }
    }
    Ok(plan.not_captured)
}

/// The fix for a table whose updates and deletes are not captured.
pub fn fix(schema: &str, table: &str) -> String {
    let name = format!("{}.{}", quote_ident(schema), quote_ident(table));
    format!("ALTER TABLE {name} REPLICA IDENTITY FULL, or add a primary key")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(table: &str) -> Name {
        ("public".to_owned(), table.to_owned())
    }

    fn identity(table: &str, usable: bool) -> TableIdentity {
        TableIdentity {
            name: name(table),
            usable,
        }
    }

    fn members(tables: &[&str]) -> Membership {
        Membership {
            exists: true,
            all_tables: false,
            updates_or_deletes: true,
            tables: tables.iter().map(|table| name(table)).collect(),
        }
    }

    fn insert_only(tables: &[&str]) -> Membership {
        Membership {
            updates_or_deletes: false,
            ..members(tables)
        }
    }

    #[test]
    fn the_first_run_puts_keyed_tables_in_the_main_publication_and_keyless_ones_apart() {
        let tables = [identity("keyed", true), identity("bag", false)];
        let plan = plan(
            &tables,
            &Membership::default(),
            &Membership::default(),
            true,
        )
        .unwrap();
        assert!(plan.create_main);
        assert_eq!(plan.create_insert_only, Some(false));
        assert_eq!(plan.add_main, vec![name("keyed")]);
        assert_eq!(plan.add_insert_only, vec![name("bag")]);
        assert_eq!(plan.not_captured, vec![name("bag")]);
        assert_eq!(
            plan.statements("tributary"),
            vec![
                "create publication \"tributary\"".to_owned(),
                "create publication \"tributary_insert_only\" with (publish = 'insert, truncate')"
                    .to_owned(),
                "alter publication \"tributary\" add table \"public\".\"keyed\"".to_owned(),
                "alter publication \"tributary_insert_only\" add table \"public\".\"bag\""
                    .to_owned(),
            ]
        );
    }

    #[test]
    fn without_a_list_the_insert_only_publication_takes_every_table() {
        let tables = [identity("keyed", true), identity("bag", false)];
        let plan = plan(
            &tables,
            &Membership::default(),
            &Membership::default(),
            false,
        )
        .unwrap();
        assert_eq!(plan.create_insert_only, Some(true));
        assert_eq!(plan.add_main, vec![name("keyed")]);
        assert!(plan.add_insert_only.is_empty());
        assert!(
            plan.statements("p")[1].contains("for all tables with (publish = 'insert, truncate')")
        );
    }

    #[test]
    fn a_table_that_lost_its_identity_leaves_the_main_publication() {
        let tables = [identity("keyed", false)];
        let plan = plan(&tables, &members(&["keyed"]), &insert_only(&[]), true).unwrap();
        assert_eq!(plan.drop_main, vec![name("keyed")]);
        assert_eq!(plan.add_insert_only, vec![name("keyed")]);
        let statements = plan.statements("p");
        assert!(
            statements[0].contains("drop table"),
            "drops come first: {statements:?}"
        );
    }

    #[test]
    fn a_table_that_gained_an_identity_moves_to_the_main_publication() {
        let tables = [identity("bag", true)];
        let plan = plan(&tables, &members(&[]), &insert_only(&["bag"]), true).unwrap();
        assert_eq!(plan.add_main, vec![name("bag")]);
        assert_eq!(plan.drop_insert_only, vec![name("bag")]);
        assert!(plan.not_captured.is_empty());
    }

    #[test]
    fn publications_in_place_need_nothing() {
        let tables = [identity("keyed", true), identity("bag", false)];
        let plan = plan(&tables, &members(&["keyed"]), &insert_only(&["bag"]), true).unwrap();
        assert!(plan.is_empty());
        assert_eq!(plan.not_captured, vec![name("bag")]);
        // An insert-only publication that publishes more is set back.
        let widened = Membership {
            updates_or_deletes: true,
            ..insert_only(&["bag"])
        };
        let plan = super::plan(&tables, &members(&["keyed"]), &widened, true).unwrap();
        assert!(plan.restrict_insert_only);
    }

    #[test]
    fn an_all_tables_publication_with_keyless_tables_is_refused_with_the_fix() {
        let all = Membership {
            all_tables: true,
            ..members(&[])
        };
        let error = plan(&[identity("bag", false)], &all, &insert_only(&[]), false)
            .unwrap_err()
            .to_string();
        assert!(error.contains("public.bag"), "{error}");
        assert!(error.contains("REPLICA IDENTITY FULL"), "{error}");
        // Without keyless tables it is used as it is.
        let plan = plan(&[identity("keyed", true)], &all, &insert_only(&[]), false).unwrap();
        assert!(plan.add_main.is_empty());
    }
}
