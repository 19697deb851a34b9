//! The alert state machine, one series at a time: what an alert rule's evaluator does with each
//! observation, over a clock the caller gives (milliseconds since the Unix epoch), so that it is
//! tested without waiting and replayed exactly.
//!
//! A series is `ok`, `pending` (breaching, for less than the rule's "for" duration) or `firing`.
//! Notices follow from the phase and from whether the series' firing was announced, not from
//! the transition alone, so a notice held back (by a silence, or while the series flaps) is sent
//! once the hold ends if it still applies, and never twice:
//!
//! - a firing series that was not announced is announced (`Firing`);
//! - an announced series that is no longer firing gets a `Resolved`;
//! - an announced, firing, unacknowledged series gets a `Reminder` every `remind_every`.
//!
//! A silence suppresses every notice of the series while it lasts; an alert that resolves while
//! silenced is forgotten (nobody is told it resolved, as nobody was told it fired again).
//! Flap damping: a series that starts or stops firing more than `flap_limit` times within
//! `flap_window` is marked flapping and its notices are held until it has not flipped for a
//! whole window.

use serde::{Deserialize, Serialize};

/// The timing of a rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// How long a series must breach before it fires; 0 fires at the first breach.
    pub for_ms: i64,
    /// How often a firing, unacknowledged series is announced again; 0 never.
    pub remind_every_ms: i64,
    /// The window flips are counted in.
    pub flap_window_ms: i64,
    /// More flips than this within the window mark the series flapping.
    pub flap_limit: u32,
}

/// Where a series stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    #[default]
    Ok,
    Pending,
    Firing,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Ok => "ok",
            Phase::Pending => "pending",
            Phase::Firing => "firing",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "ok" => Some(Phase::Ok),
            "pending" => Some(Phase::Pending),
            "firing" => Some(Phase::Firing),
            _ => None,
        }
    }
}

/// What one evaluation saw of a series.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Observation {
    /// The condition holds.
    Breaching,
    /// The condition does not hold.
    Clear,
    /// Nothing to compare (no data in the window): the series keeps its phase.
    NoData,
}

/// A message due to the rule's channels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Notice {
    Firing,
    Reminder,
    Resolved,
}

impl Notice {
    pub fn as_str(self) -> &'static str {
        match self {
            Notice::Firing => "firing",
            Notice::Reminder => "reminder",
            Notice::Resolved => "resolved",
        }
    }
}

/// A series' state between evaluations.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct SeriesState {
    pub phase: Phase,
    /// When the phase began.
    pub since_ms: i64,
    /// When the series started or stopped firing, within the flap window.
    #[serde(default)]
    pub flips_ms: Vec<i64>,
    #[serde(default)]
    pub flapping: bool,
    /// Someone acknowledged this firing: no reminders until it resolves.
    #[serde(default)]
    pub acked: bool,
    /// A firing notice of this episode went out (so a resolution is owed).
    #[serde(default)]
    pub announced: bool,
    /// When the last firing notice or reminder went out.
    #[serde(default)]
    pub notified_ms: Option<i64>,
}

/// The outcome of one evaluation of a series.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub state: SeriesState,
    /// The phase change, if any: (from, to).
    pub transition: Option<(Phase, Phase)>,
    /// Whether the series started (`Some(true)`) or stopped (`Some(false)`) flapping.
    pub flapping_changed: Option<bool>,
    pub notice: Option<Notice>,
}

/// Evaluates one observation of a series at `now_ms`. `silenced`: a silence covers the series
/// now.
pub fn step(
    state: &SeriesState,
    observed: Observation,
    now_ms: i64,
    timing: &Timing,
    silenced: bool,
) -> Step {
    let mut next = state.clone();
    let from = state.phase;
    let to = match (from, observed) {
        (phase, Observation::NoData) => phase,
        (Phase::Ok, Observation::Breaching) if timing.for_ms <= 0 => Phase::Firing,
        (Phase::Ok, Observation::Breaching) => Phase::Pending,
        (Phase::Pending, Observation::Breaching) if now_ms - state.since_ms >= timing.for_ms => {
            Phase::Firing
        }
        (Phase::Pending, Observation::Breaching) => Phase::Pending,
        (Phase::Firing, Observation::Breaching) => Phase::Firing,
        (_, Observation::Clear) => Phase::Ok,
    };
    let transition = (to != from).then_some((from, to));
    if transition.is_some() {
        next.phase = to;
        next.since_ms = now_ms;
    }
    // Flips: entering or leaving firing.
    if (from == Phase::Firing) != (to == Phase::Firing) {
        next.flips_ms.push(now_ms);
    }
    next.flips_ms
        .retain(|flip| now_ms - flip < timing.flap_window_ms.max(1));
    let flapping = if next.flips_ms.len() > timing.flap_limit as usize {
        true
    } else if next.flips_ms.is_empty() {
        false
    } else {
        state.flapping
    };
    let flapping_changed = (flapping != state.flapping).then_some(flapping);
    next.flapping = flapping;
    if to != Phase::Firing {
        next.acked = false;
    }

    let notice = if silenced || flapping {
        if silenced && to != Phase::Firing {
            // Resolved under a silence: forgotten, not announced.
            next.announced = false;
        }
        None
    } else if to == Phase::Firing && !next.announced {
        next.announced = true;
        next.notified_ms = Some(now_ms);
        Some(Notice::Firing)
    } else if to == Phase::Firing {
        let due = timing.remind_every_ms > 0
            && !next.acked
            && next
                .notified_ms
                .is_none_or(|at| now_ms - at >= timing.remind_every_ms);
        if due {
            next.notified_ms = Some(now_ms);
            Some(Notice::Reminder)
        } else {
            None
        }
    } else if next.announced {
        next.announced = false;
        next.notified_ms = None;
        Some(Notice::Resolved)
    } else {
        None
    };
    Step {
        state: next,
        transition,
        flapping_changed,
        notice,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE: i64 = 60_000;

    fn timing() -> Timing {
        Timing {
            for_ms: 5 * MINUTE,
            remind_every_ms: 60 * MINUTE,
            flap_window_ms: 30 * MINUTE,
            flap_limit: 4,
        }
    }

    /// Feeds `observations` one a minute from minute 0; returns the notices with their minute.
    fn run(
        observations: &[Observation],
        silenced: impl Fn(i64) -> bool,
        timing: &Timing,
    ) -> (SeriesState, Vec<(i64, Notice)>) {
        let mut state = SeriesState::default();
        let mut notices = Vec::new();
        for (minute, observed) in observations.iter().enumerate() {
            let minute = minute as i64;
            let step = step(&state, *observed, minute * MINUTE, timing, silenced(minute));
            if let Some(notice) = step.notice {
                notices.push((minute, notice));
            }
            state = step.state;
        }
        (state, notices)
    }

    use Observation::{Breaching as B, Clear as C, NoData as N};

    #[test]
    fn a_breach_is_pending_until_the_for_duration_then_fires_once_and_resolves() {
        let mut state = SeriesState::default();
        let t = timing();
        let first = step(&state, B, 0, &t, false);
        assert_eq!(first.transition, Some((Phase::Ok, Phase::Pending)));
        assert_eq!(first.notice, None);
        state = first.state;
        let early = step(&state, B, 4 * MINUTE, &t, false);
        assert_eq!((early.transition, early.notice), (None, None));
        state = early.state;
        let fires = step(&state, B, 5 * MINUTE, &t, false);
        assert_eq!(fires.transition, Some((Phase::Pending, Phase::Firing)));
        assert_eq!(fires.notice, Some(Notice::Firing));
        state = fires.state;
        let still = step(&state, B, 6 * MINUTE, &t, false);
        assert_eq!((still.transition, still.notice), (None, None));
        state = still.state;
        let resolves = step(&state, C, 7 * MINUTE, &t, false);
        assert_eq!(resolves.transition, Some((Phase::Firing, Phase::Ok)));
        assert_eq!(resolves.notice, Some(Notice::Resolved));
        assert!(!resolves.state.announced);
    }

    #[test]
    fn a_breach_shorter_than_the_for_duration_never_notifies() {
        let (state, notices) = run(&[B, B, B, C, B, B, C], |_| false, &timing());
        assert_eq!(notices, []);
        assert_eq!(state.phase, Phase::Ok);
    }

    #[test]
    fn no_data_keeps_the_phase() {
        let (state, notices) = run(&[B, N, N, N, N, B, N, N], |_| false, &timing());
        assert_eq!(notices, [(5, Notice::Firing)]);
        assert_eq!(state.phase, Phase::Firing);
    }

    #[test]
    fn zero_for_fires_at_the_first_breach() {
        let t = Timing {
            for_ms: 0,
            ..timing()
        };
        let (_, notices) = run(&[C, B, C], |_| false, &t);
        assert_eq!(notices, [(1, Notice::Firing), (2, Notice::Resolved)]);
    }

    #[test]
    fn reminders_repeat_while_firing_until_acknowledged() {
        let t = Timing {
            for_ms: 0,
            remind_every_ms: 10 * MINUTE,
            ..timing()
        };
        let mut state = SeriesState::default();
        let mut notices = Vec::new();
        for minute in 0..35 {
            if minute == 25 {
                state.acked = true;
            }
            let step = step(&state, B, minute * MINUTE, &t, false);
            if let Some(notice) = step.notice {
                notices.push((minute, notice));
            }
            state = step.state;
        }
        assert_eq!(
            notices,
            [
                (0, Notice::Firing),
                (10, Notice::Reminder),
                (20, Notice::Reminder)
            ],
            "no reminder after the acknowledgement at minute 25"
        );
        // Resolving clears the acknowledgement: the next episode reminds again.
        let resolved = step(&state, C, 40 * MINUTE, &t, false);
        assert_eq!(resolved.notice, Some(Notice::Resolved));
        assert!(!resolved.state.acked);
    }

    #[test]
    fn a_silence_suppresses_notices_and_one_still_firing_is_announced_when_it_ends() {
        let t = Timing {
            for_ms: 0,
            ..timing()
        };
        // Fires under the silence (minutes 0..10), still firing when it ends.
        let (state, notices) = run(&[B; 15], |minute| minute < 10, &t);
        assert_eq!(notices, [(10, Notice::Firing)]);
        assert!(state.announced);
        // Announced, then silenced, then resolved under the silence: no resolution notice, and
        // none owed after it.
        let (state, notices) = run(&[B, B, C, C, C], |minute| (1..4).contains(&minute), &t);
        assert_eq!(notices, [(0, Notice::Firing)]);
        assert!(!state.announced);
    }

    #[test]
    fn a_flapping_series_is_held_and_announced_once_it_settles() {
        let t = Timing {
            for_ms: 0,
            remind_every_ms: 0,
            flap_window_ms: 10 * MINUTE,
            flap_limit: 3,
        };
        let mut observations = vec![B, C, B, C, B, C, B, C];
        // Then it settles clear for longer than the window.
        observations.extend([C; 12]);
        let mut state = SeriesState::default();
        let mut notices = Vec::new();
        let mut flapping_changes = Vec::new();
        for (minute, observed) in observations.iter().enumerate() {
            let minute = minute as i64;
            let step = step(&state, *observed, minute * MINUTE, &t, false);
            if let Some(notice) = step.notice {
                notices.push((minute, notice));
            }
            if let Some(flapping) = step.flapping_changed {
                flapping_changes.push((minute, flapping));
            }
            state = step.state;
        }
        // Flips at minutes 0..=7; the fourth (minute 3) is one too many; the last flip (minute
        // 7) leaves the window at minute 17.
        assert_eq!(flapping_changes, [(3, true), (17, false)]);
        assert_eq!(
            notices,
            [
                (0, Notice::Firing),
                (1, Notice::Resolved),
                (2, Notice::Firing),
                (17, Notice::Resolved)
            ],
            "held while flapping; the resolution owed since minute 3 is sent once it settled"
        );
        assert_eq!(state.phase, Phase::Ok);
    }

    #[test]
    fn phases_round_trip_their_names() {
        for phase in [Phase::Ok, Phase::Pending, Phase::Firing] {
            assert_eq!(Phase::parse(phase.as_str()), Some(phase));
        }
        assert_eq!(Phase::parse("resolved"), None);
    }
}
