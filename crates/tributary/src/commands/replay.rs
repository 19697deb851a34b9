//! `tributary replay`: recording a tenant's replay request, and running it here unless the
//! running platform takes it first.

use std::process::ExitCode;

use anyhow::Context;

use crate::cli::ReplayArgs;
use crate::commands::shared::{EXIT_CHECK_FAILED, control_tx, parse_tenant, with_database};
use crate::settings::Settings;

pub async fn run(args: ReplayArgs, settings: Settings) -> anyhow::Result<ExitCode> {
    use time::format_description::well_known::Rfc3339;
    let tenant = parse_tenant(&args.tenant)?;
    let kind = match (&args.from, &args.to) {
        (Some(from), Some(to)) => {
            let from = time::OffsetDateTime::parse(from, &Rfc3339)
                .context("--from must be an RFC 3339 time such as 2026-11-01T00:00:00Z")?;
            let to = time::OffsetDateTime::parse(to, &Rfc3339)
                .context("--to must be an RFC 3339 time such as 2026-11-02T00:00:00Z")?;
            // Refused before connecting, the same bounds the request itself checks again.
            store::replay::check_range(from, to, time::OffsetDateTime::now_utc())
                .map_err(range_refused)?;
            store::replay::ReplayKind::Range { from, to }
        }
        _ if args.rebuild => store::replay::ReplayKind::Rebuild,
        _ => store::replay::ReplayKind::DeadLetters,
    };
    let bus_config: bus::BusConfig = settings
        .bus
        .parse()
        .context("invalid bus setting (TRIBUTARY_BUS / --bus)")?;
    let request = with_database(&settings, async |connected| {
        let mut tx = control_tx(connected, tenant).await?;
        let request_id =
            store::replay::request(&mut tx, &kind)
                .await
                .map_err(|error| match error {
                    store::replay::ReplayError::Range(refusal) => range_refused(refusal),
                    store::replay::ReplayError::UnderWay => anyhow::anyhow!(
                        "a range replay or rebuild of this tenant is already under way; retry when \
                     it is done (replay_under_way)"
                    ),
                    store::replay::ReplayError::Store(error) => error.into(),
                })?;
        tx.commit().await?;
        println!("replay request {request_id} recorded");
        let bus = bus::AnyBus::connect(&bus_config, &connected.database.service).await?;
        let done =
            pipeline::replay::run_request(&connected.database.service, &bus, tenant, request_id)
                .await?;
        Ok(done)
    })
    .await?;
    let Some(request) = request else {
        println!("the running platform took the request; follow it in the audit log");
        return Ok(ExitCode::SUCCESS);
    };
    println!(
        "replay {}: {} event(s) replayed, {} failed{}",
        request.status,
        request.events_replayed,
        request.events_failed,
        request
            .detail
            .as_deref()
            .map(|detail| format!(" ({detail})"))
            .unwrap_or_default()
    );
    Ok(if request.status == "done" && request.events_failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_CHECK_FAILED)
    })
}

/// A range out of bounds, naming the flag at fault and the refusal's code.
fn range_refused(refusal: store::replay::RangeRefusal) -> anyhow::Error {
    anyhow::anyhow!(
        "--{}: {} ({})",
        refusal.bound.name(),
        refusal.message,
        refusal.code
    )
}
