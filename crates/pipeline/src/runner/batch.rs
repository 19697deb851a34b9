//! One batch through an [`Applier`]: prepared, split into groups of whole tenants applied at
//! once, each group whole and, if the database refuses it, event by event; then the dead
//! letters.

use std::collections::HashMap;

use bus::Delivery;
use domain::{EventId, SourceId, TenantId};
use store::ServiceDb;
use store::dlq::DeadLetter;

use super::{Applier, Origin, Prepared, Refusal};

/// What applying a batch did.
#[derive(Debug, Clone, Default)]
pub struct BatchOutcome {
    /// Works committed.
    pub applied: u64,
    /// Events with nothing to apply.
    pub skipped: u64,
    /// Events sent to their tenant's DLQ.
    pub dead_lettered: Vec<EventId>,
}

/// Applies one batch: its works in [`Applier::TRANSACTIONS`] groups at once, each in one
/// transaction or, when the database refuses it for a reason that is not transient, event by
/// event; the events refused (while preparing, or alone by the database) go to their tenant's
/// DLQ once the others committed. An error leaves the batch to be applied again whole.
pub async fn apply_batch<A: Applier>(
    applier: &A,
    deliveries: &[Delivery],
) -> Result<BatchOutcome, store::StoreError> {
    let Prepared {
        works,
        origins,
        mut refused,
        skipped,
    } = applier.prepare(deliveries).await?;
    log_sources(&origins, &refused);
    let mut outcome = BatchOutcome {
        skipped,
        ..BatchOutcome::default()
    };
    let groups = split_by_tenant(works, origins, A::TRANSACTIONS);
    let applied =
        futures_util::future::join_all(groups.into_iter().map(|group| apply_group(applier, group)))
            .await;
    for group in applied {
        let (applied, group_refused) = group?;
        outcome.applied += applied;
        refused.extend(group_refused);
    }
    applier.count(&outcome);
    for refusal in refused {
        outcome.dead_lettered.push(refusal.event_id);
        dead_letter(applier.database(), A::GROUP, refusal).await?;
    }
    tracing::debug!(
        applied = outcome.applied,
        skipped = outcome.skipped,
        dead_lettered = outcome.dead_lettered.len(),
        "batch applied"
    );
    Ok(outcome)
}

/// Logs, in the batch's span, each tenant and source the batch holds with how many events and
/// the first one's id: ids and counts, never a value.
fn log_sources(origins: &[Origin], refused: &[Refusal]) {
    if !tracing::enabled!(tracing::Level::DEBUG) {
        return;
    }
    let mut sources: Vec<(TenantId, Option<SourceId>, EventId, usize)> = Vec::new();
    let keys = origins
        .iter()
        .map(|origin| (origin.tenant, Some(origin.source), origin.event_id))
        .chain(
            refused
                .iter()
                .map(|refusal| (refusal.tenant, refusal.source, refusal.event_id)),
        );
    for (tenant, source, event_id) in keys {
        match sources
            .iter_mut()
            .find(|(t, s, _, _)| *t == tenant && *s == source)
        {
            Some((_, _, _, count)) => *count += 1,
            None => sources.push((tenant, source, event_id, 1)),
        }
    }
    for (tenant, source, first_event, events) in sources {
        tracing::debug!(%tenant, source = source.map(tracing::field::display),
            %first_event, events, "applying events of a source");
    }
}

/// Works of a batch applied in one transaction, with their origins.
struct Group<W> {
    works: Vec<W>,
    origins: Vec<Origin>,
}

/// Splits works into `count` groups of whole tenants, of about the same number of works, each
/// work keeping its place in its group.
///
/// Each group is applied in a transaction of its own, all at once: a batch's time is almost all
/// spent in the database, statement after statement, and tenants are independent (a transaction
/// holds its tenants' locks), so a second transaction puts a second database core to work. The
/// batch is acknowledged once every group committed.
fn split_by_tenant<W>(works: Vec<W>, origins: Vec<Origin>, count: usize) -> Vec<Group<W>> {
    let count = count.max(1);
    if count == 1 {
        return vec![Group { works, origins }];
    }
    let mut counts: HashMap<TenantId, usize> = HashMap::new();
    for origin in &origins {
        *counts.entry(origin.tenant).or_default() += 1;
    }
    let mut tenants: Vec<(TenantId, usize)> = counts.into_iter().collect();
    tenants.sort_unstable_by(|a, b| b.1.cmp(&a.1).then(a.0.as_uuid().cmp(b.0.as_uuid())));
    // Largest tenants first, each to the smallest group so far (the first of equals).
    let mut sizes = vec![0usize; count];
    let mut group_of: HashMap<TenantId, usize> = HashMap::new();
    for (tenant, tenant_count) in tenants {
        let smallest = (0..count)
            .min_by_key(|index| sizes[*index])
            .expect("at least one group");
        sizes[smallest] += tenant_count;
        group_of.insert(tenant, smallest);
    }
    let mut groups: Vec<Group<W>> = (0..count)
        .map(|_| Group {
            works: Vec::new(),
            origins: Vec::new(),
        })
        .collect();
    for (work, origin) in works.into_iter().zip(origins) {
        let group = &mut groups[group_of[&origin.tenant]];
        group.works.push(work);
        group.origins.push(origin);
    }
    groups
}

/// Applies a group in one transaction; if the database refuses it, one by one, and those refused
/// alone become refusals. Returns how many were applied and the refusals.
async fn apply_group<A: Applier>(
    applier: &A,
    group: Group<A::Work>,
) -> Result<(u64, Vec<Refusal>), store::StoreError> {
    let Group { works, origins } = group;
    if works.is_empty() {
        return Ok((0, Vec::new()));
    }
    let error = match applier.apply(&works).await {
        Ok(()) => return Ok((works.len() as u64, Vec::new())),
        Err(error) if error.is_retryable() => return Err(error),
        Err(error) => error,
    };
    tracing::warn!(consumer = A::GROUP, %error, events = works.len(),
        "the database refused a batch; applying its events one by one");
    let (mut applied, mut refused) = (0, Vec::new());
    for (work, origin) in works.iter().zip(origins) {
        match applier.apply(std::slice::from_ref(work)).await {
            Ok(()) => applied += 1,
            Err(error) if error.is_retryable() => return Err(error),
            Err(error) => refused.push(origin.refused(
                A::REJECTED,
                format!(
                    "the database refused the event (SQLSTATE {})",
                    error.sqlstate().unwrap_or_default()
                ),
            )),
        }
    }
    Ok((applied, refused))
}

/// Records `refusal` in its tenant's DLQ as a dead letter of `consumer`.
pub async fn dead_letter(
    database: &ServiceDb,
    consumer: &'static str,
    refusal: Refusal,
) -> Result<(), store::StoreError> {
    let message = refusal.message.to_vec();
    let event = serde_json::from_slice(&message).unwrap_or_else(|_| {
        serde_json::Value::String(String::from_utf8_lossy(&message).into_owned())
    });
    let letter = DeadLetter {
        tenant: refusal.tenant,
        consumer,
        event_id: refusal.event_id,
        source: refusal
            .source
            .unwrap_or_else(|| SourceId::from_uuid(uuid::Uuid::nil())),
        reason_code: refusal.reason_code,
        reason: refusal.reason,
        event,
        message,
    };
    store::service::dlq::record(database, &letter).await?;
    metrics::counter!("tributary_dlq_events_total", "consumer" => consumer,
        "reason" => refusal.reason_code)
    .increment(1);
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    fn origin(tenant: TenantId) -> Origin {
        Origin {
            tenant,
            source: SourceId::new_random(),
            event_id: EventId::from_uuid(uuid::Uuid::new_v4()),
            message: bytes::Bytes::new(),
        }
    }

    #[test]
    fn groups_hold_whole_tenants_of_about_the_same_size() {
        let tenants: Vec<TenantId> = (0..4).map(|_| TenantId::new_random()).collect();
        // Tenant 0 has 5 events, 1 has 3, 2 has 2, 3 has 1.
        let mut origins = Vec::new();
        for (tenant, count) in tenants.iter().zip([5, 3, 2, 1]) {
            origins.extend((0..count).map(|_| origin(*tenant)));
        }
        let works: Vec<usize> = (0..origins.len()).collect();
        let groups = split_by_tenant(works, origins, 2);
        assert_eq!(groups.len(), 2);
        let tenants_of = |group: &Group<usize>| -> HashSet<TenantId> {
            group.origins.iter().map(|origin| origin.tenant).collect()
        };
        // Largest first, each to the smaller group, the first of equals: 5 | 3, 2 | then 1 to
        // the first group, as 5 against 5.
        assert_eq!(
            tenants_of(&groups[0]),
            HashSet::from([tenants[0], tenants[3]])
        );
        assert_eq!(
            tenants_of(&groups[1]),
            HashSet::from([tenants[1], tenants[2]])
        );
        assert_eq!(groups[0].works, [0, 1, 2, 3, 4, 10]);
        assert_eq!(groups[1].works, [5, 6, 7, 8, 9]);
    }

    #[test]
    fn one_transaction_keeps_the_batch_as_it_is() {
        let tenant = TenantId::new_random();
        let origins: Vec<Origin> = (0..3).map(|_| origin(tenant)).collect();
        let groups = split_by_tenant(vec!['a', 'b', 'c'], origins, 1);
        assert_eq!(groups.len(), 1);
        assert_eq!(groups[0].works, ['a', 'b', 'c']);
    }
}
