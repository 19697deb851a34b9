//! The bounds the edge holds every batch to, so no request can exhaust memory, stack or time.

/// Limits on one `POST /v1/events`. The defaults are the contract's; an edge may lower them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// The body as sent, before decompression.
    pub max_body_bytes: usize,
    /// The body after decompression (the JSON text).
    pub max_decompressed_bytes: usize,
    pub max_events: usize,
    /// How deep objects and arrays may nest, counting the top-level object as 1 (an event's
    /// `after` is at depth 4, so row values may nest 28 levels further by default).
    pub max_depth: usize,
    /// Any one string or object key, in bytes of UTF-8 after unescaping.
    pub max_string_bytes: usize,
    /// Schema, table and column names, in bytes (PostgreSQL's identifier limit).
    pub max_name_bytes: usize,
    pub max_key_columns: usize,
    /// How far an event's commit time may lie from the receiver's clock; `None` accepts any
    /// time. Bounds the daily storage partitions one agent can make the platform create, and
    /// keeps times within what storage can hold.
    pub event_time_window: Option<EventTimeWindow>,
}

/// Commit times accepted: from `max_age` before now to `max_ahead` after now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventTimeWindow {
    pub max_age: time::Duration,
    pub max_ahead: time::Duration,
}

impl Default for EventTimeWindow {
    fn default() -> Self {
        Self {
            // A source's log is never kept that long; a snapshot is stamped with its own time.
            max_age: time::Duration::days(400),
            // Clocks that run ahead, within reason.
            max_ahead: time::Duration::days(1),
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            // A row may hold one value of many megabytes (PostgreSQL stores up to 1 GB out of
            // line); an agent sends such a row alone in its batch.
            max_body_bytes: 32 * 1024 * 1024,
            max_decompressed_bytes: 64 * 1024 * 1024,
            max_events: 5000,
            max_depth: 32,
            max_string_bytes: 16 * 1024 * 1024,
            max_name_bytes: 63,
            max_key_columns: 32,
            event_time_window: Some(EventTimeWindow::default()),
        }
    }
}
