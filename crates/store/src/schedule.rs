//! When a scheduled report runs: a five-field cron expression (minute, hour, day of month,
//! month, day of week, as in crontab) read in an IANA time zone, so "every day at 08:00 in
//! Europe/Berlin" stays at 08:00 local time on both sides of a daylight-saving change.
//!
//! Parsing and the search for occurrences are croner's (a maintained crate that follows the Open
//! Cron Pattern Specification); this module fixes the dialect (no seconds field, no year field),
//! bounds how often a schedule may fire, and converts between croner's `chrono` times and the
//! platform's `time` ones. Across a daylight-saving change (croner's rules, pinned by the tests
//! below): a fixed time that falls in the hour the clock skips runs right after the jump, a fixed
//! time in the hour the clock repeats runs once, at its first pass.

use std::str::FromStr;

use chrono::{DateTime, TimeZone, Utc};
use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};
use time::OffsetDateTime;

/// The shortest time a schedule may leave between two runs.
pub const MIN_INTERVAL: time::Duration = time::Duration::minutes(5);

/// Why a cron expression or a time zone was refused, naming which.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    #[error("{0}")]
    Cron(String),
    #[error("not a time zone of the IANA database (e.g. Europe/Berlin, America/New_York, UTC)")]
    TimeZone,
}

impl ScheduleError {
    /// The request field the error is about.
    pub fn parameter(&self) -> &'static str {
        match self {
            ScheduleError::Cron(_) => "cron",
            ScheduleError::TimeZone => "time_zone",
        }
    }
}

/// A parsed schedule.
#[derive(Debug, Clone)]
pub struct CronSchedule {
    cron: Cron,
    zone: Tz,
}

impl CronSchedule {
    /// Parses `expression` (five fields) in `time_zone`. Refuses one that would run more often
    /// than every [`MIN_INTERVAL`], or never.
    pub fn parse(expression: &str, time_zone: &str) -> Result<Self, ScheduleError> {
        let expression = expression.trim();
        if expression.chars().count() > 100 {
            return Err(ScheduleError::Cron("at most 100 characters".into()));
        }
        if expression.split_whitespace().count() != 5 {
            return Err(ScheduleError::Cron(
                "five fields: minute, hour, day of month, month, day of week (e.g. 0 8 * * 1-5)"
                    .into(),
            ));
        }
        let zone = Tz::from_str(time_zone.trim()).map_err(|_| ScheduleError::TimeZone)?;
        let cron = CronParser::builder()
            .seconds(Seconds::Disallowed)
            .year(Year::Disallowed)
            .build()
            .parse(expression)
            .map_err(|error| ScheduleError::Cron(describe(&error)))?;
        let schedule = CronSchedule { cron, zone };
        schedule.check_interval()?;
        Ok(schedule)
    }

    /// The first occurrence strictly after `after`.
    pub fn next_after(&self, after: OffsetDateTime) -> Option<OffsetDateTime> {
        let start = self.zone.from_utc_datetime(&to_chrono(after)?.naive_utc());
        self.cron
            .find_next_occurrence(&start, false)
            .ok()
            .and_then(|next| from_chrono(next.with_timezone(&Utc)))
    }

    /// The last occurrence at or before `at`.
    pub fn latest_at_or_before(&self, at: OffsetDateTime) -> Option<OffsetDateTime> {
        let start = self.zone.from_utc_datetime(&to_chrono(at)?.naive_utc());
        self.cron
            .find_previous_occurrence(&start, true)
            .ok()
            .and_then(|previous| from_chrono(previous.with_timezone(&Utc)))
    }

    /// The next `count` occurrences after `after`, for a person to check a schedule by.
    pub fn upcoming(&self, after: OffsetDateTime, count: usize) -> Vec<OffsetDateTime> {
        let mut occurrences = Vec::with_capacity(count);
        let mut cursor = after;
        while occurrences.len() < count {
            let Some(next) = self.next_after(cursor) else {
                break;
            };
            occurrences.push(next);
            cursor = next;
        }
        occurrences
    }

    /// `at` on the wall clock of the schedule's time zone, e.g. `2026-12-07 07:30 CET`.
    pub fn local_time(&self, at: OffsetDateTime) -> String {
        to_chrono(at)
            .map(|at| {
                at.with_timezone(&self.zone)
                    .format("%Y-%m-%d %H:%M %Z")
                    .to_string()
            })
            .unwrap_or_default()
    }

    /// The schedule's time zone's name.
    pub fn time_zone(&self) -> &'static str {
        self.zone.name()
    }

    /// Refuses a schedule whose next occurrences come closer than [`MIN_INTERVAL`], or that has
    /// none in the next few years (`0 0 30 2 *`).
    fn check_interval(&self) -> Result<(), ScheduleError> {
        let now = OffsetDateTime::now_utc();
        let upcoming = self.upcoming(now, 24);
        if upcoming.is_empty() {
            return Err(ScheduleError::Cron("it never runs".into()));
        }
        if upcoming
            .windows(2)
            .any(|pair| pair[1] - pair[0] < MIN_INTERVAL)
        {
            return Err(ScheduleError::Cron(format!(
                "runs more often than every {} minutes",
                MIN_INTERVAL.whole_minutes()
            )));
        }
        Ok(())
    }
}

/// croner's message, without the parts that only make sense to its authors.
fn describe(error: &croner::errors::CronError) -> String {
    use croner::errors::CronError;
    match error {
        CronError::EmptyPattern => "empty".into(),
        CronError::InvalidPattern(why)
        | CronError::IllegalCharacters(why)
        | CronError::ComponentError(why) => {
            let why: String = why.chars().take(200).collect();
            format!("not a cron expression: {why}")
        }
        _ => "not a cron expression".into(),
    }
}

fn to_chrono(at: OffsetDateTime) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(at.unix_timestamp(), at.nanosecond())
}

fn from_chrono(at: DateTime<Utc>) -> Option<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp(at.timestamp())
        .ok()
        .map(|at| at.replace_nanosecond(0).unwrap_or(at))
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use super::*;

    #[test]
    fn a_daily_time_stays_at_local_time_across_the_spring_change() {
        // Europe/Berlin moved from UTC+1 to UTC+2 at 2026-03-29 01:00 UTC.
        let schedule = CronSchedule::parse("0 8 * * *", "Europe/Berlin").unwrap();
        assert_eq!(
            schedule.upcoming(datetime!(2026-03-27 12:00 UTC), 3),
            vec![
                datetime!(2026-03-28 07:00 UTC),
                datetime!(2026-03-29 06:00 UTC),
                datetime!(2026-03-30 06:00 UTC),
            ]
        );
    }

    #[test]
    fn an_occurrence_reads_on_the_zones_wall_clock() {
        let schedule = CronSchedule::parse("30 7 * * 1-5", "Europe/Berlin").unwrap();
        assert_eq!(
            schedule.local_time(datetime!(2026-12-07 06:30 UTC)),
            "2026-12-07 07:30 CET"
        );
        assert_eq!(
            schedule.local_time(datetime!(2026-07-07 05:30 UTC)),
            "2026-07-07 07:30 CEST"
        );
    }

    #[test]
    fn a_time_in_the_skipped_hour_runs_once_right_after_the_jump() {
        // 02:30 does not exist in Berlin on 2026-03-29: it runs at 03:00 local (01:00 UTC).
        let schedule = CronSchedule::parse("30 2 * * *", "Europe/Berlin").unwrap();
        assert_eq!(
            schedule.upcoming(datetime!(2026-03-28 12:00 UTC), 2),
            vec![
                datetime!(2026-03-29 01:00 UTC),
                datetime!(2026-03-30 00:30 UTC)
            ]
        );
    }

    #[test]
    fn a_time_in_the_repeated_hour_runs_once() {
        // New York falls back at 2026-11-01 02:00 EDT to 01:00 EST: 01:30 happens twice,
        // at 05:30 UTC and 06:30 UTC; the report runs at the first only.
        let schedule = CronSchedule::parse("30 1 * * *", "America/New_York").unwrap();
        assert_eq!(
            schedule.upcoming(datetime!(2026-10-31 12:00 UTC), 3),
            vec![
                datetime!(2026-11-01 05:30 UTC),
                datetime!(2026-11-02 06:30 UTC),
                datetime!(2026-11-03 06:30 UTC),
            ]
        );
    }

    #[test]
    fn the_latest_occurrence_is_found_from_any_time_after_it() {
        let schedule = CronSchedule::parse("0 9 * * 1-5", "UTC").unwrap();
        // Monday 2026-12-07 09:00 is the latest weekday 09:00 before Tuesday 08:00.
        assert_eq!(
            schedule.latest_at_or_before(datetime!(2026-12-08 08:00 UTC)),
            Some(datetime!(2026-12-07 09:00 UTC))
        );
        assert_eq!(
            schedule.latest_at_or_before(datetime!(2026-12-07 09:00 UTC)),
            Some(datetime!(2026-12-07 09:00 UTC))
        );
        // Over a weekend: Friday's.
        assert_eq!(
            schedule.latest_at_or_before(datetime!(2026-12-13 23:00 UTC)),
            Some(datetime!(2026-12-11 09:00 UTC))
        );
        assert_eq!(
            schedule.next_after(datetime!(2026-12-11 09:00 UTC)),
            Some(datetime!(2026-12-14 09:00 UTC))
        );
    }

    #[test]
    fn bad_expressions_and_zones_name_their_field() {
        for (cron, zone, parameter) in [
            ("", "UTC", "cron"),
            ("0 8 * *", "UTC", "cron"),
            ("0 0 8 * * *", "UTC", "cron"),
            ("61 8 * * *", "UTC", "cron"),
            ("* * * * *", "UTC", "cron"),
            ("*/2 * * * *", "UTC", "cron"),
            ("0 0 30 2 *", "UTC", "cron"),
            ("0 8 * * *", "Mars/Olympus", "time_zone"),
            ("0 8 * * *", "", "time_zone"),
        ] {
            let error = CronSchedule::parse(cron, zone).unwrap_err();
            assert_eq!(error.parameter(), parameter, "{cron} in {zone}: {error}");
            assert!(!error.to_string().is_empty());
        }
        assert!(CronSchedule::parse("*/5 * * * *", "UTC").is_ok());
        assert!(
            CronSchedule::parse("@daily", "UTC").is_err(),
            "five fields only"
        );
        assert!(CronSchedule::parse("0 6 1 * *", "Asia/Kolkata").is_ok());
    }
}
