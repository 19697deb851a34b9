//! The report runner (docs/reports.md): takes queued runs of reports, reads each run's dataset
//! in a transaction of the member who asked for it, in their role, under the tenant's row-level
//! security ([`store::reports::export`]), encodes the rows as CSV, Parquet or JSON lines
//! ([`encode`]) and streams the file into the export store ([`ExportStore`]): a run of any size
//! holds one buffer and one row group in memory, never the file.
//!
//! Two runners never run one run at once ([`store::service::reports::claim`]); a runner that
//! dies mid-run leaves the run to be taken again when its lease ends, and the file it was
//! writing is never published (the store's upload completes only at the end).

pub mod encode;
mod export_store;
mod stream;

use std::time::Duration as StdDuration;

use domain::{Role, TenantId, UserId};
use store::reports::{Cell, RowSink, Run};
use store::service::reports::{Claimed, Outcome, Scheduled};
use store::{Database, Scope, StoreError, TenantTx};
use time::{Duration, OffsetDateTime};

pub use export_store::{ExportStore, S3Location, StoreFailure};
pub use stream::stream;

use crate::encode::{EncodeError, Encoder};

/// How long a file can be downloaded after its run.
pub const DOWNLOAD_DAYS: i64 = 7;
/// How long a runner holds a run without reporting progress before another may take it.
const LEASE: Duration = Duration::minutes(2);
/// How often a run reports its progress (and renews its lease).
const PROGRESS_EVERY: StdDuration = StdDuration::from_secs(1);
/// Schedules one scheduler transaction takes.
const SCHEDULE_BATCH: i64 = 100;
/// How often the runner looks for schedules that came due.
const SCHEDULE_EVERY: StdDuration = StdDuration::from_secs(5);
/// Bytes gathered before they are handed to the store.
const CHUNK: usize = 4 << 20;

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Encode(#[from] EncodeError),
    #[error(transparent)]
    Storage(#[from] StoreFailure),
}

/// The runner: the database (its request handle for the requester's transaction, its service
/// handle for the run's bookkeeping) and the export store.
#[derive(Debug, Clone)]
pub struct Runner {
    database: Database,
    exports: ExportStore,
}

/// What one run did.
#[derive(Debug, Clone, PartialEq)]
pub struct Finished {
    pub tenant: TenantId,
    pub run: uuid::Uuid,
    pub rows: u64,
    pub bytes: u64,
    /// Why it failed, if it did.
    pub failure: Option<String>,
}

impl Runner {
    pub fn new(database: Database, exports: ExportStore) -> Self {
        Runner { database, exports }
    }

    pub fn exports(&self) -> &ExportStore {
        &self.exports
    }

    /// Takes the oldest waiting run and runs it to its end; `None` when none is waiting.
    pub async fn run_next(&self) -> Result<Option<Finished>, StoreError> {
        let now = OffsetDateTime::now_utc();
        let Some(claimed) =
            store::service::reports::claim(&self.database.service, now, LEASE).await?
        else {
            return Ok(None);
        };
        let Claimed { tenant, run, .. } = claimed;
        let outcome = match self.run(tenant, &run).await {
            Ok(outcome) => outcome,
            Err(error) => {
                // The reason shown to the workspace names the stage, never a value or a path.
                let shown = match &error {
                    RunError::Store(StoreError::InvalidParameter { parameter, message }) => {
                        format!("{parameter}: {message}")
                    }
                    RunError::Store(StoreError::Forbidden(why)) => (*why).to_owned(),
                    RunError::Store(_) => "the database failed while reading the data".into(),
                    RunError::Encode(_) => "the file could not be encoded".into(),
                    RunError::Storage(_) => "the export store failed while writing the file".into(),
                };
                tracing::warn!(%tenant, run = %run.id, %error, "a report run failed");
                Outcome::Failed(shown)
            }
        };
        let finished_at = OffsetDateTime::now_utc();
        store::service::reports::finish(
            &self.database.service,
            tenant,
            &run,
            finished_at,
            &outcome,
        )
        .await?;
        store::service::reports::record_export(&self.database.service, tenant, &run, &outcome)
            .await?;
        let finished = match outcome {
            Outcome::Succeeded { rows, bytes, .. } => Finished {
                tenant,
                run: run.id,
                rows,
                bytes,
                failure: None,
            },
            Outcome::Failed(reason) => Finished {
                tenant,
                run: run.id,
                rows: 0,
                bytes: 0,
                failure: Some(reason),
            },
        };
        metrics::counter!(
            "tributary_report_runs_total",
            "outcome" => if finished.failure.is_none() { "succeeded" } else { "failed" }
        )
        .increment(1);
        metrics::counter!("tributary_report_rows_total").increment(finished.rows);
        Ok(Some(finished))
    }

    /// The role the run reads in: the requester's role now, if lower than when they asked; a
    /// run whose requester has left the workspace is refused.
    async fn scope(&self, tenant: TenantId, run: &Run) -> Result<Scope, RunError> {
        match run.requested_by {
            Some(user) => {
                let user = UserId::from(user);
                let Some(now) =
                    store::service::reports::current_role(&self.database.service, tenant, user)
                        .await?
                else {
                    return Err(StoreError::Forbidden(
                        "the member who asked for it is no longer in the workspace",
                    )
                    .into());
                };
                Ok(Scope::Member {
                    tenant,
                    user,
                    role: lower(now, run.run_as),
                })
            }
            None => Ok(Scope::ApiToken {
                tenant,
                token: run.id,
                role: run.run_as,
                holder: None,
            }),
        }
    }

    async fn run(&self, tenant: TenantId, run: &Run) -> Result<Outcome, RunError> {
        let scope = self.scope(tenant, run).await?;
        let role = match &scope {
            Scope::Member { role, .. } | Scope::ApiToken { role, .. } => *role,
            _ => Role::Viewer,
        };
        if !role.allows(run.definition.dataset.permission()) {
            return Err(
                StoreError::Forbidden("this role may not read the report's dataset").into(),
            );
        }
        let definition = &run.definition;
        let key = export_store::key(tenant, run.id, definition.format);
        let mut sink = FileSink {
            encoder: Encoder::new(definition.format, &definition.selected_columns())?,
            upload: self.exports.create(&key).await?,
            rows: 0,
            bytes: 0,
            last_progress: std::time::Instant::now(),
            database: &self.database,
            tenant,
            run: run.id,
        };
        let mut tx = TenantTx::begin(&self.database.app, scope).await?;
        // A relative range ends at the schedule's occurrence, or when the run was asked for:
        // never when a runner happened to take it.
        let end = run.occurrence.unwrap_or(run.requested_at);
        let exported = store::reports::export(&mut tx, definition, end, &mut sink).await;
        tx.rollback().await?;
        let (rows, bytes) = match exported {
            Ok(rows) => sink.finish().await.map(|bytes| (rows, bytes))?,
            Err(error) => {
                sink.upload.abort().await;
                return Err(error);
            }
        };
        Ok(Outcome::Succeeded {
            rows,
            bytes,
            object_key: key,
            expires_at: OffsetDateTime::now_utc() + Duration::days(DOWNLOAD_DAYS),
        })
    }

    /// Asks for the runs of the schedules due at `now` (the latest occurrence of each, once,
    /// however many passed while no scheduler ran); returns what it did.
    pub async fn schedule(&self, now: OffsetDateTime) -> Result<Vec<Scheduled>, StoreError> {
        let mut all = Vec::new();
        loop {
            let round = store::service::reports::schedule_round(
                &self.database.service,
                now,
                SCHEDULE_BATCH,
            )
            .await?;
            let more = round.len() as i64 >= SCHEDULE_BATCH;
            for scheduled in &round {
                if let Some(reason) = &scheduled.refused {
                    tracing::info!(tenant = %scheduled.tenant, schedule = %scheduled.schedule,
                        reason, "a scheduled report could not run");
                }
            }
            metrics::counter!("tributary_report_schedule_runs_total")
                .increment(round.iter().filter(|done| done.run.is_some()).count() as u64);
            all.extend(round);
            if !more {
                return Ok(all);
            }
        }
    }

    /// Deletes the files whose download expired.
    pub async fn forget_expired(&self) -> Result<usize, RunError> {
        let expired = store::service::reports::expired_files(
            &self.database.service,
            OffsetDateTime::now_utc(),
            100,
        )
        .await?;
        for (tenant, run, key) in &expired {
            self.exports.delete(key).await?;
            store::service::reports::forget_file(&self.database.service, *tenant, *run).await?;
        }
        Ok(expired.len())
    }
}

/// The less privileged of two tenant roles.
fn lower(a: Role, b: Role) -> Role {
    let rank = |role: Role| Role::TENANT_ROLES.iter().position(|known| *known == role);
    if rank(a) >= rank(b) { a } else { b }
}

/// Rows into the encoder, the encoder's bytes into the store in chunks, progress into the run.
struct FileSink<'a> {
    encoder: Encoder,
    upload: export_store::Upload,
    rows: u64,
    bytes: u64,
    last_progress: std::time::Instant,
    database: &'a Database,
    tenant: TenantId,
    run: uuid::Uuid,
}

impl FileSink<'_> {
    async fn hand_over(&mut self) -> Result<(), RunError> {
        let chunk = self.encoder.take()?;
        self.bytes += chunk.len() as u64;
        self.upload.write(chunk).await?;
        Ok(())
    }

    async fn finish(mut self) -> Result<u64, RunError> {
        self.hand_over().await?;
        let last = self.encoder.finish()?;
        self.bytes += last.len() as u64;
        self.upload.write(last).await?;
        self.upload.finish().await?;
        Ok(self.bytes)
    }
}

impl RowSink for FileSink<'_> {
    type Error = RunError;

    async fn row(&mut self, cells: &[Cell]) -> Result<(), RunError> {
        self.encoder.row(cells)?;
        self.rows += 1;
        if self.encoder.pending() >= CHUNK {
            self.hand_over().await?;
        }
        if self.rows.is_multiple_of(4_096) && self.last_progress.elapsed() >= PROGRESS_EVERY {
            self.last_progress = std::time::Instant::now();
            store::service::reports::progress(
                &self.database.service,
                self.tenant,
                self.run,
                self.rows,
                self.bytes,
                OffsetDateTime::now_utc() + LEASE,
            )
            .await?;
        }
        Ok(())
    }
}

/// Runs reports until `shutdown`: asks for the runs of due schedules every few seconds, runs
/// the next waiting run at once, else looks again every `tick`; expired files are deleted every
/// minute. Every server runs this loop: schedules and runs are taken so that each occurrence
/// runs once whichever servers are up.
pub async fn run(runner: Runner, tick: StdDuration, shutdown: impl Future<Output = ()>) {
    let mut shutdown = std::pin::pin!(shutdown);
    let mut last_cleanup = std::time::Instant::now();
    let mut last_schedule: Option<std::time::Instant> = None;
    loop {
        if last_schedule.is_none_or(|at| at.elapsed() >= SCHEDULE_EVERY) {
            last_schedule = Some(std::time::Instant::now());
            if let Err(error) = runner.schedule(OffsetDateTime::now_utc()).await {
                tracing::warn!(%error, "the report scheduler could not take schedules; retrying");
            }
        }
        let ran = match runner.run_next().await {
            Ok(finished) => finished.is_some(),
            Err(error) => {
                tracing::warn!(%error, "the report runner could not take a run; retrying");
                false
            }
        };
        if last_cleanup.elapsed() >= StdDuration::from_secs(60) {
            last_cleanup = std::time::Instant::now();
            if let Err(error) = runner.forget_expired().await {
                tracing::warn!(%error, "expired report files could not be deleted; retrying");
            }
        }
        if ran {
            continue;
        }
        tokio::select! {
            _ = tokio::time::sleep(tick) => {}
            _ = &mut shutdown => return,
        }
    }
}
