//! What the agent reads from the source's catalog: tables, their key columns and types.
//! Every query binds its inputs; identifiers that end up in SQL text are quoted by
//! [`quote_ident`].

use std::collections::HashMap;

use sqlx::{PgConnection, Row};

use super::values::{self, Kind};

/// One column of a table, as the agent converts its values.
#[derive(Debug, Clone, PartialEq)]
pub struct ColumnShape {
    pub name: String,
    pub type_name: String,
    pub kind: Kind,
}

/// A table as the snapshot reads it.
#[derive(Debug, Clone, PartialEq)]
pub struct TableShape {
    pub oid: u32,
    pub schema: String,
    pub name: String,
    pub columns: Vec<ColumnShape>,
    /// Indices into `columns` of the key, in key order.
    pub key: Vec<usize>,
    /// Whether the key is a real unique key (primary key or replica identity index), so the
    /// snapshot can be read in key order and resumed.
    pub unique_key: bool,
}

impl TableShape {
    pub fn qualified(&self) -> String {
        format!("{}.{}", quote_ident(&self.schema), quote_ident(&self.name))
    }
}

/// `"name"`, with embedded quotes doubled: an identifier that is always read as one.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The tables a publication publishes, by schema and name.
pub async fn publication_tables(
    connection: &mut PgConnection,
    publication: &str,
) -> sqlx::Result<Vec<(String, String)>> {
    sqlx::query_as(
        "select schemaname::text, tablename::text from pg_publication_tables \
         where pubname = $1 order by 1, 2",
    )
    .bind(publication)
    .fetch_all(connection)
    .await
}

/// The key columns of a table by its OID: the replica identity index's when the table's
/// replica identity is an index, the primary key's otherwise; empty when it has neither.
pub async fn key_columns(connection: &mut PgConnection, oid: u32) -> sqlx::Result<Vec<String>> {
    sqlx::query_scalar(
        "select a.attname::text from pg_class c \
         join pg_index i on i.indrelid = c.oid \
         join pg_attribute a on a.attrelid = c.oid and a.attnum = any(i.indkey) \
         where c.oid = $1::int8::oid \
           and case when c.relreplident = 'i' then i.indisreplident else i.indisprimary end \
         order by array_position(i.indkey::int2[], a.attnum)",
    )
    .bind(i64::from(oid))
    .fetch_all(connection)
    .await
}

/// A table's shape, or `None` when it does not exist.
pub async fn table_shape(
    connection: &mut PgConnection,
    schema: &str,
    name: &str,
    types: &mut TypeCache,
) -> sqlx::Result<Option<TableShape>> {
    let oid: Option<i64> = sqlx::query_scalar(
        "select c.oid::int8 from pg_class c join pg_namespace n on n.oid = c.relnamespace \
         where n.nspname = $1 and c.relname = $2 and c.relkind in ('r', 'p')",
    )
    .bind(schema)
    .bind(name)
    .fetch_optional(&mut *connection)
    .await?;
    let Some(oid) = oid else { return Ok(None) };
    let oid = oid as u32;
    let rows = sqlx::query(
        "select attname::text as name, atttypid::int8 as type_oid from pg_attribute \
         where attrelid = $1::int8::oid and attnum > 0 and not attisdropped order by attnum",
    )
    .bind(i64::from(oid))
    .fetch_all(&mut *connection)
    .await?;
    let mut columns = Vec::with_capacity(rows.len());
    for row in rows {
        let type_oid = row.try_get::<i64, _>("type_oid")? as u32;
        let (type_name, kind) = types.resolve(connection, type_oid).await?;
        columns.push(ColumnShape {
            name: row.try_get("name")?,
            type_name,
            kind,
        });
    }
    let key_names = key_columns(connection, oid).await?;
    let key: Vec<usize> = key_names
        .iter()
        .filter_map(|key| columns.iter().position(|column| &column.name == key))
        .collect();
    let unique_key = !key.is_empty();
    let key = if unique_key {
        key
    } else {
        (0..columns.len()).collect()
    };
    Ok(Some(TableShape {
        oid,
        schema: schema.to_owned(),
        name: name.to_owned(),
        columns,
        key,
        unique_key,
    }))
}

/// Type names and conversions by OID: built-ins from a table, the rest from the catalog once.
#[derive(Debug, Default)]
pub struct TypeCache {
    known: HashMap<u32, (String, Kind)>,
}

impl TypeCache {
    pub async fn resolve(
        &mut self,
        connection: &mut PgConnection,
        oid: u32,
    ) -> sqlx::Result<(String, Kind)> {
        if let Some((name, kind)) = values::builtin(oid) {
            return Ok((name.to_owned(), kind));
        }
        if let Some(known) = self.known.get(&oid) {
            return Ok(known.clone());
        }
        let row: Option<(String, String, i64)> = sqlx::query_as(
            "select format_type(t.oid, null), t.typcategory::text, \
                    (case when t.typbasetype <> 0 then t.typbasetype else t.oid end)::int8 \
             from pg_type t where t.oid = $1::int8::oid",
        )
        .bind(i64::from(oid))
        .fetch_optional(connection)
        .await?;
        let resolved = match row {
            Some((name, category, base)) => {
                (name, values::kind_of_category(&category, base as u32))
            }
            None => (format!("oid {oid}"), Kind::Text),
        };
        self.known.insert(oid, resolved.clone());
        Ok(resolved)
    }

    /// A type the replication stream described ('Y' message): a user type, by its name.
    pub fn learn(&mut self, oid: u32, namespace: &str, name: &str) {
        self.known.entry(oid).or_insert_with(|| {
            (
                format!("{}.{}", quote_ident(namespace), quote_ident(name)),
                Kind::Text,
            )
        });
    }
}
