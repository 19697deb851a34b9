//! The console's disclosure rule: which rollup cells may be published together, so that no cell
//! of fewer than k distinct tenants is shown (primary suppression) and none can be recovered by
//! subtracting published cells from one another (complementary suppression).
//!
//! What the console publishes, for one metric key: minute cells and hour cells, each for one
//! (plan, industry, region) and nothing coarser — no totals over breakdowns, no totals over
//! keys. A cell carries a sum of values, a number of readings and a number of distinct tenants
//! (the mean shown is the cell's own sum over its own count). The only linear relations among
//! those cells are therefore the **families**: an hour cell is the sum of the minute cells of
//! the same breakdown in that hour (sum and count both). Families are disjoint (a minute belongs
//! to one hour of one breakdown, an hour to no larger cell), so the rule is decided family by
//! family and one pass is its fixed point.
//!
//! In a family whose hour is published, the hour minus its published minutes is the hidden
//! remainder: the sum and count of every withheld minute together. The remainder is safe when
//! it holds no reading, or when the withheld minutes provably hold at least k distinct tenants:
//! the hour's tenants not accounted for by the published minutes (hour tenants − Σ published
//! minutes' tenants) are at least k, or a withheld minute alone has k. Otherwise the family's
//! published minute with the fewest tenants (then readings, then the earliest) is withheld too,
//! which makes the remainder an aggregate of at least k tenants. Hours are never withheld by
//! this rule, so the hourly view does not depend on the minutes at all.
//!
//! The distinct-tenant count is not additive: subtracting it gives at most a lower bound on the
//! tenants of the withheld minutes, which the rule keeps at k or more whenever it is not
//! trivially so. Minimum and maximum are neither stored nor published (a published maximum of a
//! parent would reveal a withheld child's maximum when it exceeds every published child's:
//! publishing them needs this rule extended).

use std::collections::BTreeMap;

use time::Duration;

use crate::rollups::RollupCell;

/// The smallest cohort ever shown, whatever k is configured: a single tenant is never a cell.
pub const COHORT_FLOOR: i64 = 2;

/// The cells that may be published together.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Publishable {
    pub hours: Vec<RollupCell>,
    pub minutes: Vec<RollupCell>,
}

/// Applies the rule (module documentation) to `hours` and `minutes` of one key with cohort
/// `min_cohort` (never below [`COHORT_FLOOR`]), keeping the order they came in.
///
/// Every minute cell of an hour must be given with any of them (cells below k may be left out,
/// they are withheld anyway): a family given in part would be decided on part of its evidence.
/// A caller that wants minutes of a window therefore passes every minute within an hour of it,
/// and keeps the window's cells of the result; the decision for a cell then never depends on
/// the window asked, so no two windows together show more than one.
pub fn publishable(
    hours: Vec<RollupCell>,
    minutes: Vec<RollupCell>,
    min_cohort: i64,
) -> Publishable {
    let cohort = min_cohort.max(COHORT_FLOOR);
    let large_enough = |cell: &RollupCell| i64::from(cell.tenant_count) >= cohort;
    let hours: Vec<RollupCell> = hours.into_iter().filter(large_enough).collect();
    let minutes: Vec<RollupCell> = minutes.into_iter().filter(large_enough).collect();

    // Each published hour by its breakdown and start; a minute belongs to the hour of its
    // breakdown that starts at most an hour before it.
    let mut starts = BTreeMap::<(&str, &str, &str, &str), BTreeMap<_, usize>>::new();
    for (index, hour) in hours.iter().enumerate() {
        starts
            .entry((&hour.key, &hour.plan, &hour.industry, &hour.region))
            .or_default()
            .insert(hour.bucket, index);
    }
    let mut families = vec![Vec::new(); hours.len()];
    for (index, minute) in minutes.iter().enumerate() {
        let breakdown = (
            minute.key.as_str(),
            minute.plan.as_str(),
            minute.industry.as_str(),
            minute.region.as_str(),
        );
        let parent = starts
            .get(&breakdown)
            .and_then(|starts| starts.range(..=minute.bucket).next_back())
            .filter(|(start, _)| minute.bucket < **start + Duration::HOUR);
        if let Some((_, &parent)) = parent {
            families[parent].push(index);
        }
    }

    let mut withheld = vec![false; minutes.len()];
    for (hour, children) in hours.iter().zip(&families) {
        let shown_readings: i64 = children.iter().map(|&i| minutes[i].value_count).sum();
        let shown_tenants: i64 = children
            .iter()
            .map(|&i| i64::from(minutes[i].tenant_count))
            .sum();
        let remainder_holds_readings = hour.value_count != shown_readings;
        let remainder_tenants_at_least = i64::from(hour.tenant_count) - shown_tenants;
        if remainder_holds_readings && remainder_tenants_at_least < cohort {
            // A published minute has at least k tenants, so withholding one makes the
            // remainder an aggregate of at least k.
            let complement = children.iter().copied().min_by_key(|&i| {
                let minute = &minutes[i];
                (minute.tenant_count, minute.value_count, minute.bucket)
            });
            if let Some(complement) = complement {
                withheld[complement] = true;
            }
        }
    }
    let minutes = minutes
        .into_iter()
        .zip(withheld)
        .filter_map(|(minute, withheld)| (!withheld).then_some(minute))
        .collect();
    Publishable { hours, minutes }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use proptest::prelude::*;
    use time::OffsetDateTime;

    use super::*;

    const TENANTS: u32 = 12;

    fn base() -> OffsetDateTime {
        time::macros::datetime!(2026-11-20 10:00:00 UTC)
    }

    /// A generated cohort: for (breakdown, hour, minute of the hour), the tenants active in it.
    type Cohorts = BTreeMap<(usize, i64, i64), BTreeSet<u32>>;

    /// A cell with the tenants in it.
    type Known = (RollupCell, BTreeSet<u32>);

    /// The cells the aggregator would write for `cohorts`, with each cell's tenants: tenant `t`
    /// sends `1 + (t + minute) % 3` readings of value `t * 10 + minute` in each of its minutes.
    fn cells(cohorts: &Cohorts) -> (Vec<Known>, Vec<Known>) {
        let cell = |bucket, breakdown: usize, tenants: &BTreeSet<u32>, minutes: &[i64]| {
            let mut value_sum = 0.0;
            let mut value_count = 0;
            for tenant in tenants {
                for minute in minutes {
                    let readings = 1 + (i64::from(*tenant) + minute) % 3;
                    value_count += readings;
                    value_sum += readings as f64 * (f64::from(*tenant) * 10.0 + *minute as f64);
                }
            }
            RollupCell {
                bucket,
                key: "power_kw".into(),
                plan: ["team", "business"][breakdown].into(),
                industry: "energy".into(),
                region: "eu".into(),
                value_sum,
                value_count,
                tenant_count: tenants.len() as i32,
            }
        };
        let mut minutes = Vec::new();
        let mut hours = BTreeMap::<(usize, i64), (BTreeSet<u32>, Vec<(u32, i64)>)>::new();
        for (&(breakdown, hour, minute), tenants) in cohorts {
            let bucket = base() + Duration::hours(hour) + Duration::minutes(minute);
            minutes.push((cell(bucket, breakdown, tenants, &[minute]), tenants.clone()));
            let entry = hours.entry((breakdown, hour)).or_default();
            entry.0.extend(tenants);
            entry
                .1
                .extend(tenants.iter().map(|tenant| (*tenant, minute)));
        }
        let hours = hours
            .into_iter()
            .map(|((breakdown, hour), (tenants, activity))| {
                let mut hour_cell = cell(base() + Duration::hours(hour), breakdown, &tenants, &[]);
                for (tenant, minute) in activity {
                    let one = cell(
                        hour_cell.bucket,
                        breakdown,
                        &BTreeSet::from([tenant]),
                        &[minute],
                    );
                    hour_cell.value_sum += one.value_sum;
                    hour_cell.value_count += one.value_count;
                }
                (hour_cell, tenants)
            })
            .collect();
        (hours, minutes)
    }

    fn identity(cell: &RollupCell) -> (OffsetDateTime, String) {
        (cell.bucket, cell.plan.clone())
    }

    /// Tenant sets of 0 to 12 tenants: half of them sparse, so small cohorts are common.
    fn cohorts() -> impl Strategy<Value = Cohorts> {
        let tenants = (any::<u16>(), any::<u16>(), any::<bool>()).prop_map(|(a, b, sparse)| {
            let mask = if sparse { a & b & (b >> 3) } else { a };
            (0..TENANTS)
                .filter(|t| mask & (1 << t) != 0)
                .collect::<BTreeSet<u32>>()
        });
        prop::collection::btree_map((0usize..2, 0i64..2, 0i64..60), tenants, 0..24).prop_map(
            |cohorts| {
                cohorts
                    .into_iter()
                    .filter(|(_, tenants)| !tenants.is_empty())
                    .collect()
            },
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Over random cohorts (tenants per minute, breakdown and hour; readings and values
        /// derived from them), with the tenants of every cell known, which the rule is not told:
        ///
        /// - every published cell has at least k (and 2) distinct tenants and is the cell as
        ///   stored;
        /// - **no subtraction isolates fewer than k tenants**: the published cells' only linear
        ///   relations are the families (an hour = the sum of its breakdown's minutes in it;
        ///   there are no totals over breakdowns), so the withheld readings an attacker can
        ///   derive are, per published hour, the hour minus its published minutes — the sum of
        ///   its withheld minutes. Whenever that set of minutes is non-empty, their tenants
        ///   together number at least k;
        /// - the rule withholds no more than that needs: a minute of k tenants or more is
        ///   withheld only in a published hour, at most one per hour;
        /// - the decision does not depend on what is asked: the same without the cells below k
        ///   (the query leaves them out), with the cells in reverse order, hours without the
        ///   minutes (the hourly view), and for any window of minutes read as the query reads
        ///   it (an hour each way), so two windows together show no more than one.
        #[test]
        fn no_subtraction_of_published_cells_isolates_a_cohort_below_k(
            cohorts in cohorts(),
            min_cohort in 0i64..7,
            window in (0i64..120, 1i64..120),
        ) {
            let k = min_cohort.max(COHORT_FLOOR);
            let (hours, minutes) = cells(&cohorts);
            let all_hours: Vec<RollupCell> = hours.iter().map(|(cell, _)| cell.clone()).collect();
            let all_minutes: Vec<RollupCell> =
                minutes.iter().map(|(cell, _)| cell.clone()).collect();
            let published = publishable(all_hours.clone(), all_minutes.clone(), min_cohort);

            for cell in published.hours.iter().chain(&published.minutes) {
                prop_assert!(i64::from(cell.tenant_count) >= k, "{cell:?}");
                prop_assert!(all_hours.contains(cell) || all_minutes.contains(cell));
            }
            let shown: BTreeSet<_> = published.minutes.iter().map(identity).collect();
            for (hour, _) in &hours {
                let family: Vec<&Known> = minutes
                    .iter()
                    .filter(|(minute, _)| {
                        minute.plan == hour.plan
                            && minute.bucket >= hour.bucket
                            && minute.bucket < hour.bucket + Duration::HOUR
                    })
                    .collect();
                let withheld: Vec<_> = family
                    .iter()
                    .filter(|(minute, _)| !shown.contains(&identity(minute)))
                    .collect();
                let withheld_large = withheld
                    .iter()
                    .filter(|(minute, _)| i64::from(minute.tenant_count) >= k)
                    .count();
                if published.hours.contains(hour) {
                    if !withheld.is_empty() {
                        let tenants: BTreeSet<u32> =
                            withheld.iter().flat_map(|(_, tenants)| tenants).copied().collect();
                        prop_assert!(
                            tenants.len() as i64 >= k,
                            "{hour:?} minus its published minutes isolates {tenants:?}"
                        );
                    }
                    prop_assert!(withheld_large <= 1, "{hour:?}: {withheld_large} complements");
                } else {
                    prop_assert_eq!(withheld_large, 0, "{:?} is not published", hour);
                }
            }

            let large: Vec<RollupCell> = all_minutes
                .iter()
                .filter(|cell| i64::from(cell.tenant_count) >= k)
                .cloned()
                .collect();
            prop_assert_eq!(&publishable(all_hours.clone(), large, min_cohort), &published);
            let mut reversed = publishable(
                all_hours.iter().rev().cloned().collect(),
                all_minutes.iter().rev().cloned().collect(),
                min_cohort,
            );
            reversed.hours.reverse();
            reversed.minutes.reverse();
            prop_assert_eq!(&reversed, &published);
            prop_assert_eq!(
                &publishable(all_hours.clone(), Vec::new(), min_cohort).hours,
                &published.hours
            );

            let from = base() + Duration::minutes(window.0);
            let to = from + Duration::minutes(window.1);
            let near = |cell: &&RollupCell| {
                cell.bucket > from - Duration::HOUR && cell.bucket < to + Duration::HOUR
            };
            let in_window = |cell: &&RollupCell| cell.bucket >= from && cell.bucket < to;
            let read = publishable(
                all_hours.iter().filter(near).cloned().collect(),
                all_minutes.iter().filter(near).cloned().collect(),
                min_cohort,
            );
            prop_assert_eq!(
                read.minutes.iter().filter(in_window).collect::<Vec<_>>(),
                published.minutes.iter().filter(in_window).collect::<Vec<_>>()
            );
        }
    }

    #[test]
    fn a_lone_minute_in_a_published_hour_takes_its_smallest_sibling_with_it() {
        let cell = |minute: i64, tenants: i32, readings: i64| RollupCell {
            bucket: base() + Duration::minutes(minute),
            key: "power_kw".into(),
            plan: "team".into(),
            industry: "energy".into(),
            region: "eu".into(),
            value_sum: readings as f64,
            value_count: readings,
            tenant_count: tenants,
        };
        let mut hour = cell(0, 7, 23);
        let minutes = vec![cell(0, 6, 10), cell(1, 5, 9), cell(2, 6, 1), cell(3, 1, 3)];
        // 23 - 10 - 9 - 1 = 3 readings of one tenant (minute 3): minute 1, the smallest
        // sibling, is withheld too.
        let published = publishable(vec![hour.clone()], minutes.clone(), 5);
        assert_eq!(published.hours, [hour.clone()]);
        assert_eq!(published.minutes, [minutes[0].clone(), minutes[2].clone()]);
        // The hour's tenants not accounted for by its published minutes may be k already.
        hour.tenant_count = 23;
        let published = publishable(vec![hour.clone()], minutes.clone(), 5);
        assert_eq!(published.minutes, minutes[..3]);
        // No withheld minute: nothing to protect.
        hour.tenant_count = 7;
        hour.value_count = 20;
        let published = publishable(vec![hour], minutes[..3].to_vec(), 5);
        assert_eq!(published.minutes, minutes[..3]);
        // An hour below k publishes nothing to subtract from.
        let small_hour = cell(0, 4, 23);
        let published = publishable(vec![small_hour], minutes.clone(), 5);
        assert!(published.hours.is_empty());
        assert_eq!(
            published.minutes,
            [minutes[0].clone(), minutes[1].clone(), minutes[2].clone()]
        );
    }
}
