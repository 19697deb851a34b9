//! Names for the ids the app's pages would otherwise show as UUIDs: a member's email, a
//! source's, API token's or dashboard's name, the workspace's own name. They are read in the
//! page's own transaction (so they are only ever the workspace's), and every name keeps its id
//! one click away (`templates/app/macros.html`).

use std::collections::HashMap;

use store::{StoreError, TenantTx};
use uuid::Uuid;

/// A name that stands for an id, as a page shows it.
#[derive(Debug, Clone)]
pub(crate) struct Labelled {
    /// What a reader reads: a name, or the raw text when nothing is known by that id.
    pub(crate) label: String,
    /// What kind of thing the id names (`member`, `source`, ...), for the id's title.
    pub(crate) kind: &'static str,
    /// The id behind the label, when the label is a name rather than the id itself.
    pub(crate) id: Option<String>,
}

impl Labelled {
    /// Text shown as it is: there is no id behind it.
    pub(crate) fn plain(text: impl Into<String>) -> Self {
        Labelled {
            label: text.into(),
            kind: "",
            id: None,
        }
    }

    /// `label` standing for `id`.
    pub(crate) fn named(
        label: impl Into<String>,
        kind: &'static str,
        id: impl Into<String>,
    ) -> Self {
        Labelled {
            label: label.into(),
            kind,
            id: Some(id.into()),
        }
    }
}

/// The names of a workspace's ids.
#[derive(Debug, Default)]
pub(crate) struct Names(HashMap<Uuid, (&'static str, String)>);

impl Names {
    /// No names: every id is shown as recorded (a page read where the workspace's members and
    /// sources are not visible, as internal operations reading a tenant's audit log).
    pub(crate) fn none() -> Self {
        Names::default()
    }

    /// The names of the transaction's workspace: its members, sources, API tokens, dashboards
    /// and the workspace itself. The caller's role must be allowed to read them all (the audit
    /// log's readers, owners and admins, are).
    pub(crate) async fn of_workspace(tx: &mut TenantTx) -> Result<Self, StoreError> {
        let mut names = HashMap::new();
        let tenant = store::control::current_tenant(tx).await?;
        names.insert(*tenant.tenant_id.as_uuid(), ("workspace", tenant.name));
        for member in store::members::list(tx).await? {
            names.insert(*member.user_id.as_uuid(), ("member", member.email));
        }
        for source in store::sources::list_sources(tx).await? {
            names.insert(*source.source_id.as_uuid(), ("source", source.name));
        }
        for token in store::api_tokens::list(tx).await? {
            names.insert(token.token_id, ("API token", token.name));
        }
        for dashboard in store::dashboards::list(tx).await? {
            names.insert(dashboard.id, ("dashboard", dashboard.name));
        }
        Ok(Names(names))
    }

    /// `text` by its name when it is (or starts with, as `{source}/{table}` does) a known id;
    /// else as it is.
    pub(crate) fn label(&self, text: &str) -> Labelled {
        let (head, rest) = match text.split_once('/') {
            Some((head, rest)) => (head, Some(rest)),
            None => (text, None),
        };
        match head.parse::<Uuid>().ok().and_then(|id| self.0.get(&id)) {
            Some((kind, name)) => {
                let label = match rest {
                    Some(rest) => format!("{name}/{rest}"),
                    None => name.clone(),
                };
                Labelled::named(label, kind, head)
            }
            None => Labelled::plain(text),
        }
    }

    /// An audit entry's actor: a member by email, an API token or an agent by its (source's)
    /// name, a platform job or an operator by the name recorded.
    pub(crate) fn actor(&self, actor_type: &str, actor_id: &str) -> Labelled {
        if self.0.is_empty() {
            return Labelled::plain(format!("{actor_type}:{actor_id}"));
        }
        let known = actor_id.parse::<Uuid>().ok().and_then(|id| self.0.get(&id));
        match (actor_type, known) {
            ("user", Some((_, email))) => Labelled::named(email.clone(), "member", actor_id),
            // A former member, or platform staff.
            ("user", None) => {
                Labelled::named("an account outside this workspace", "user", actor_id)
            }
            ("api_token", Some((_, name))) => {
                Labelled::named(format!("API token “{name}”"), "API token", actor_id)
            }
            ("api_token", None) => Labelled::named("an API token", "API token", actor_id),
            ("agent", Some((_, name))) => {
                Labelled::named(format!("agent of {name}"), "source", actor_id)
            }
            ("agent", None) => Labelled::named("an agent", "source", actor_id),
            ("system", _) => Labelled::plain(format!("platform: {actor_id}")),
            ("cli", _) => Labelled::plain(format!("operator: {actor_id}")),
            (other, _) => Labelled::plain(format!("{other}: {actor_id}")),
        }
    }
}

/// An entry's details as key and value rows: each field of a JSON object (nested values as
/// compact JSON, ids by their names); anything else as one `value` row.
pub(crate) fn detail_rows(names: &Names, details: &serde_json::Value) -> Vec<(String, Labelled)> {
    let value = |value: &serde_json::Value| match value {
        serde_json::Value::String(text) => names.label(text),
        serde_json::Value::Null => Labelled::plain("—"),
        other => Labelled::plain(other.to_string()),
    };
    match details {
        serde_json::Value::Object(fields) => fields
            .iter()
            .map(|(key, field)| (key.clone(), value(field)))
            .collect(),
        serde_json::Value::Null => Vec::new(),
        other => vec![("value".to_owned(), value(other))],
    }
}
