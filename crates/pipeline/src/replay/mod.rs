//! Replay: carrying out the replay requests people record. Dead letters go back to the consumer
//! that failed them; a bronze time range is re-published to the bus, under replay message ids,
//! for the downstream consumers (which apply events idempotently by event id).

use std::future::Future;
use std::time::Duration;

use bus::{Bus, Delivery, Message};
use domain::TenantId;
use store::ServiceDb;
use store::replay::ReplayRequest;

use crate::bronze;

/// Events read from bronze or the DLQ per round trip.
const PAGE: i64 = 1000;

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error(transparent)]
    Store(#[from] store::StoreError),
    #[error(transparent)]
    Bus(#[from] bus::BusError),
    #[error("a stored event cannot be read back: {0}")]
    Corrupt(String),
}

/// What a replay did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReplayOutcome {
    pub replayed: i64,
    pub failed: i64,
}

/// Takes pending requests one at a time until `shutdown`, idling `idle` between polls.
pub async fn run<B: Bus>(
    database: ServiceDb,
    bus: B,
    idle: Duration,
    shutdown: impl Future<Output = ()>,
) {
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        match run_next(&database, &bus).await {
            Ok(Some(_)) => continue,
            Ok(None) => {}
            Err(error) => tracing::warn!(%error, "taking a replay request failed"),
        }
        tokio::select! {
            _ = tokio::time::sleep(idle) => {}
            _ = &mut shutdown => return,
        }
    }
}

/// Carries out the oldest pending request, if any; returns it with its final state.
pub async fn run_next<B: Bus>(
    database: &ServiceDb,
    bus: &B,
) -> Result<Option<ReplayRequest>, store::StoreError> {
    let Some(request) = store::service::replay::claim_next(database).await? else {
        return Ok(None);
    };
    carry_out(database, bus, request).await.map(Some)
}

/// Carries out one request, if it is still pending (nobody else took it).
pub async fn run_request<B: Bus>(
    database: &ServiceDb,
    bus: &B,
    tenant: TenantId,
    request_id: uuid::Uuid,
) -> Result<Option<ReplayRequest>, store::StoreError> {
    let Some(request) = store::service::replay::claim(database, tenant, request_id).await? else {
        return Ok(None);
    };
    carry_out(database, bus, request).await.map(Some)
}

async fn carry_out<B: Bus>(
    database: &ServiceDb,
    bus: &B,
    request: ReplayRequest,
) -> Result<ReplayRequest, store::StoreError> {
    tracing::info!(tenant = %request.tenant_id, request = %request.request_id, kind = %request.kind,
        "replay started");
    let result = execute(database, bus, &request).await;
    let (status, outcome, detail) = match result {
        Ok(outcome) => ("done", outcome, None),
        Err(error) => {
            tracing::warn!(request = %request.request_id, %error, "replay failed");
            ("failed", ReplayOutcome::default(), Some(error.to_string()))
        }
    };
    store::service::replay::update(
        database,
        &request,
        status,
        outcome.replayed,
        outcome.failed,
        detail.as_deref(),
    )
    .await?;
    tracing::info!(request = %request.request_id, status, replayed = outcome.replayed,
        failed = outcome.failed, "replay finished");
    metrics::counter!("tributary_replay_events_total", "outcome" => "replayed")
        .increment(outcome.replayed.unsigned_abs());
    metrics::counter!("tributary_replay_events_total", "outcome" => "failed")
        .increment(outcome.failed.unsigned_abs());
    let mut request = request;
    request.status = status.to_owned();
    request.events_replayed = outcome.replayed;
    request.events_failed = outcome.failed;
    request.detail = detail;
    Ok(request)
}

pub async fn execute<B: Bus>(
    database: &ServiceDb,
    bus: &B,
    request: &ReplayRequest,
) -> Result<ReplayOutcome, ReplayError> {
    match (request.kind.as_str(), request.range_from, request.range_to) {
        ("dlq", _, _) => replay_dead_letters(database, request).await,
        ("range", Some(from), Some(to)) => {
            replay_range(
                database,
                bus,
                request.tenant_id,
                request.request_id,
                from,
                to,
            )
            .await
        }
        ("rebuild", _, _) => {
            let outcome = crate::materializer::rebuild(database, request.tenant_id)
                .await
                .map_err(|error| ReplayError::Corrupt(error.to_string()))?;
            Ok(ReplayOutcome {
                replayed: outcome.events - outcome.dead_lettered,
                failed: outcome.dead_lettered,
            })
        }
        _ => Err(ReplayError::Corrupt(format!(
            "replay request of kind {:?} cannot be carried out here",
            request.kind
        ))),
    }
}

/// How many letters a dead-letter replay re-drives between two records of its progress.
const PROGRESS_EVERY: i64 = 25;

/// Re-drives the dead letters the request chooses (all of its tenant's, or one source's
/// selection) through the consumers that failed them. A letter that fails again stays in the
/// DLQ with one more attempt counted. Each letter is held while it is re-driven and taken only
/// if it is not replayed yet, so two replays choosing the same letter apply it once. The
/// request's total is recorded first and its progress as it goes, readable while it runs.
async fn replay_dead_letters(
    database: &ServiceDb,
    request: &ReplayRequest,
) -> Result<ReplayOutcome, ReplayError> {
    let tenant = request.tenant_id;
    let selection = store::replay::LetterSelection::of_request(request);
    let total = store::service::dlq::count_pending(database, tenant, selection.as_ref()).await?;
    store::service::replay::set_total(database, request, total).await?;
    let mut outcome = ReplayOutcome::default();
    let (mut recorded, mut taken_by_another) = (0, 0);
    let mut after = None;
    loop {
        let letters =
            store::service::dlq::pending(database, tenant, selection.as_ref(), after, PAGE).await?;
        let Some(last) = letters.last() else {
            let done = outcome.replayed + outcome.failed;
            if done != total {
                // Letters counted at the start that another replay applied first (or that
                // failed meanwhile and were recorded again) were not this one's to do.
                tracing::debug!(request = %request.request_id, total, done, taken_by_another,
                    "dead-letter replay did other than it counted");
                store::service::replay::set_total(database, request, done).await?;
            }
            return Ok(outcome);
        };
        after = Some((last.created_at, last.dlq_id));
        for letter in letters {
            let Some(claim) = store::service::dlq::claim(database, tenant, letter.dlq_id).await?
            else {
                // Another replay applied it meanwhile.
                taken_by_another += 1;
                continue;
            };
            if redrive(database, tenant, &letter).await? {
                claim.replayed().await?;
                outcome.replayed += 1;
            } else {
                drop(claim);
                outcome.failed += 1;
            }
            let done = outcome.replayed + outcome.failed;
            if done - recorded >= PROGRESS_EVERY {
                recorded = done;
                store::service::replay::update(
                    database,
                    request,
                    "running",
                    outcome.replayed,
                    outcome.failed,
                    None,
                )
                .await?;
            }
        }
    }
}

/// Re-drives one letter through the consumer that failed it: whether it applied.
async fn redrive(
    database: &ServiceDb,
    tenant: TenantId,
    letter: &store::service::dlq::PendingLetter,
) -> Result<bool, ReplayError> {
    Ok(match (letter.consumer.as_str(), &letter.message) {
        (bronze::GROUP, Some(message)) => {
            let envelope: protocol::Envelope = serde_json::from_slice(message)
                .map_err(|error| ReplayError::Corrupt(error.to_string()))?;
            let delivery = Delivery {
                message: Message {
                    tenant,
                    id: envelope.event.event_id,
                    payload: message.clone().into(),
                },
                partition: 0,
                position: 0,
            };
            bronze::write(database, std::slice::from_ref(&delivery))
                .await?
                .dead_lettered
                .is_empty()
        }
        (crate::materializer::GROUP, Some(message)) => {
            let delivery = Delivery {
                message: Message {
                    tenant,
                    id: letter_event_id(message)?,
                    payload: message.clone().into(),
                },
                partition: 0,
                position: 0,
            };
            crate::materializer::apply(database, std::slice::from_ref(&delivery))
                .await?
                .dead_lettered
                .is_empty()
        }
        (consumer, _) => {
            tracing::warn!(consumer, "no replay handler for this dead letter");
            false
        }
    })
}

/// The event id of a dead letter's message.
fn letter_event_id(message: &[u8]) -> Result<domain::EventId, ReplayError> {
    let envelope: protocol::Envelope =
        serde_json::from_slice(message).map_err(|error| ReplayError::Corrupt(error.to_string()))?;
    Ok(envelope.event.event_id)
}

/// Re-publishes the tenant's bronze events of `[from, to)`.
async fn replay_range<B: Bus>(
    database: &ServiceDb,
    bus: &B,
    tenant: TenantId,
    request: uuid::Uuid,
    from: time::OffsetDateTime,
    to: time::OffsetDateTime,
) -> Result<ReplayOutcome, ReplayError> {
    let mut outcome = ReplayOutcome::default();
    let mut after = None;
    loop {
        let rows = store::service::bronze::events_in_range(database, tenant, from, to, after, PAGE)
            .await?;
        let Some(last) = rows.last() else {
            return Ok(outcome);
        };
        after = Some((last.event_time, last.event_id));
        let mut messages = Vec::with_capacity(rows.len());
        for row in &rows {
            let envelope = bronze::envelope_of(row, Some(request)).map_err(ReplayError::Corrupt)?;
            let payload = serde_json::to_vec(&envelope)
                .map_err(|error| ReplayError::Corrupt(error.to_string()))?;
            messages.push(Message {
                tenant,
                id: row.event_id.for_replay(&request),
                payload: payload.into(),
            });
        }
        bus.publish(&messages).await?;
        outcome.replayed += messages.len() as i64;
    }
}
