//! `/api/v1/masking-policies`: the workspace's masking rules (list, create, update, delete, all
//! with `manage_masking`; changes audited by the store in the same transaction), and
//! `/api/v1/masking-policies/preview`, which masks a sample event with the edge's own engine.
//! A rule is named by its table and path, given as query parameters
//! (`?source_table=*&field_path=email`), since a path may hold any character.

use axum::Json;
use axum::extract::State;
use axum::http::{Method, StatusCode};
use domain::Permission;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Value, json};
use store::masking::MaskingRule;

use super::caller::Caller;
use super::conformance::Violation;
use super::error::ApiError;
use super::extract::{Body, Query, RequestBody};
use super::registry::Routes;
use crate::AppState;
use crate::masking::{
    CheckedRule, PREVIEW_HASH_NOTE, RuleFields, RuleProblem, Sample, SampleError, engine_rules,
    policy_with, preview,
};

pub(super) fn register(routes: Routes) -> Routes {
    routes
        .at(Method::GET, "/api/v1/masking-policies", list_rules)
        .at(Method::POST, "/api/v1/masking-policies", create_rule)
        .at(Method::PUT, "/api/v1/masking-policies", update_rule)
        .at(Method::DELETE, "/api/v1/masking-policies", delete_rule)
        .at(
            Method::POST,
            "/api/v1/masking-policies/preview",
            preview_sample,
        )
}

impl RequestBody for RuleFields {
    const SCHEMA: &'static str = "MaskingRule";
    const SHAPE: &'static str = r#"{"source_table": "*" | "schema.table" | "table", "field_path": "...", "action": "hash" | "redact" | "drop"}"#;

    /// The same codes as the rule's own checks: `invalid_table`, `invalid_action` or
    /// `invalid_path`, with the problem by field.
    fn refusal(violation: Violation) -> ApiError {
        let field = match violation.field() {
            "source_table" => "source_table",
            "action" => "action",
            _ => "field_path",
        };
        invalid_rule(vec![RuleProblem {
            field,
            message: format!("{} {}.", violation.pointer, violation.problem),
        }])
    }
}

/// The rule a request names, by table and path.
#[derive(Debug, Deserialize)]
struct RuleName {
    #[serde(default)]
    source_table: Option<String>,
    field_path: String,
}

impl RuleName {
    fn table(&self) -> &str {
        self.source_table.as_deref().unwrap_or("*")
    }
}

fn invalid_rule(problems: Vec<RuleProblem>) -> ApiError {
    let message = problems
        .iter()
        .map(|problem| format!("{}: {}", problem.field, problem.message))
        .collect::<Vec<_>>()
        .join(" ");
    let code = match problems.first().map(|problem| problem.field) {
        Some("source_table") => "invalid_table",
        Some("action") => "invalid_action",
        _ => "invalid_path",
    };
    let details: Vec<Value> = problems
        .iter()
        .map(|problem| json!({ "field": problem.field, "message": problem.message }))
        .collect();
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, code, message)
        .with_details(json!({ "problems": details }))
}

fn checked(fields: RuleFields) -> Result<CheckedRule, ApiError> {
    fields.check().map_err(invalid_rule)
}

async fn list_rules(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Value>, ApiError> {
    let mut tx = caller.tx(&state, Permission::ManageMasking).await?;
    let rules = store::masking::list(&mut tx).await?;
    tx.commit().await?;
    Ok(Json(json!({ "rules": rules })))
}

async fn create_rule(
    State(state): State<AppState>,
    caller: Caller,
    Body(fields): Body<RuleFields>,
) -> Result<(StatusCode, Json<MaskingRule>), ApiError> {
    let rule = checked(fields)?;
    let mut tx = caller.tx(&state, Permission::ManageMasking).await?;
    store::masking::create(&mut tx, &rule.stored).await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, Json(rule.stored)))
}

async fn update_rule(
    State(state): State<AppState>,
    caller: Caller,
    Query(name): Query<RuleName>,
    Body(fields): Body<RuleFields>,
) -> Result<Json<MaskingRule>, ApiError> {
    let rule = checked(fields)?;
    let mut tx = caller.tx(&state, Permission::ManageMasking).await?;
    store::masking::update(&mut tx, name.table(), &name.field_path, &rule.stored).await?;
    tx.commit().await?;
    Ok(Json(rule.stored))
}

async fn delete_rule(
    State(state): State<AppState>,
    caller: Caller,
    Query(name): Query<RuleName>,
) -> Result<StatusCode, ApiError> {
    let mut tx = caller.tx(&state, Permission::ManageMasking).await?;
    store::masking::remove(&mut tx, name.table(), &name.field_path).await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PreviewRequest {
    /// `schema.table` of the sample.
    table: String,
    /// `{"key": .., "after": .., "before": ..}`, as sent: parsing it into a `Value` here would
    /// keep the last of repeated keys, which the edge refuses and so must the preview.
    sample: Box<RawValue>,
    /// The policy to preview; the saved rules when left out.
    #[serde(default)]
    rules: Option<Vec<RuleFields>>,
}

impl RequestBody for PreviewRequest {
    const SCHEMA: &'static str = "MaskingPreviewRequest";
    const SHAPE: &'static str = r#"{"table": "schema.table", "sample": {"key": {..}, "after": {..}, "before": {..}}, "rules": [rule, ...] (optional)}"#;

    /// A rule's field answers as the rule's own checks do; the sample as `invalid_sample`.
    fn refusal(violation: Violation) -> ApiError {
        match violation.field() {
            "rules" => {
                let rule_field = violation.pointer.split('/').nth(3).unwrap_or_default();
                let nested = Violation {
                    pointer: format!("/{rule_field}"),
                    problem: format!("(in {}) {}", violation.pointer, violation.problem),
                };
                RuleFields::refusal(nested)
            }
            "sample" => {
                super::extract::refused(StatusCode::BAD_REQUEST, "invalid_sample", &violation)
            }
            _ => super::extract::refused(StatusCode::UNPROCESSABLE_ENTITY, "invalid", &violation),
        }
    }
}

/// 400 `invalid_sample`, with where the sample went wrong when that is known.
fn invalid_sample(error: SampleError) -> ApiError {
    let details = match &error {
        SampleError::DuplicateKey { path } => Some(json!({ "repeated_key": path })),
        SampleError::Json { line, column } => Some(json!({ "line": line, "column": column })),
        _ => None,
    };
    let refused = ApiError::new(StatusCode::BAD_REQUEST, "invalid_sample", error.to_string());
    match details {
        Some(details) => refused.with_details(details),
        None => refused,
    }
}

async fn preview_sample(
    State(state): State<AppState>,
    caller: Caller,
    Body(request): Body<PreviewRequest>,
) -> Result<Json<Value>, ApiError> {
    let sample = Sample::parse(&request.table, request.sample.get()).map_err(invalid_sample)?;
    let mut tx = caller.tx(&state, Permission::ManageMasking).await?;
    let policy = match request.rules {
        Some(rules) => {
            let mut checked_rules = Vec::with_capacity(rules.len());
            for fields in rules {
                checked_rules.push(fields.check().map_err(invalid_rule)?.stored);
            }
            protocol::masking::MaskingPolicy::new(engine_rules(&checked_rules))
        }
        None => policy_with(&store::masking::list(&mut tx).await?, None, None),
    };
    tx.commit().await?;
    let shown = preview(&policy, &sample);
    let applied: Vec<Value> = shown
        .applied
        .iter()
        .map(|rule| {
            json!({
                "source_table": rule.table.as_str(),
                "field_path": rule.path.as_str(),
                "action": rule.action.as_str(),
            })
        })
        .collect();
    let (masked, refused) = match shown.outcome {
        Ok(masked) => (masked.to_json(), Value::Null),
        Err(error) => (Value::Null, Value::String(error.to_string())),
    };
    Ok(Json(json!({
        "table": sample.qualified_table(),
        "applied": applied,
        "before": sample.to_json(),
        "after": masked,
        "refused": refused,
        "hash_key": "preview",
        "note": PREVIEW_HASH_NOTE,
    })))
}
