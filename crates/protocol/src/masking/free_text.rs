//! Masking of free text an agent reports about itself (`last_error`, `warnings`): an error from
//! the customer's database can quote the very row it failed on, so the edge masks what looks
//! like a customer value before the text is stored, shown or logged. Unlike the rule-driven
//! masking of events, this needs no policy: it keeps the words that explain the error
//! (identifiers, codes, small numbers) and replaces values.
//!
//! Masked, in this order: the values of a PostgreSQL `Key (..)=(..)` detail and of `Failing row
//! contains (..)`; single-quoted literals; double-quoted text except a quoted identifier (after
//! `relation`, `column`, `table`, ..., or qualified as `"schema"."table"`); the value after `name=`; e-mail addresses; IP addresses;
//! card-like runs of 13 to 19 digits; phone-like numbers (a leading `+`, three separated digit
//! groups ending in four digits, or 10 or more digits in a row).

use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::LazyLock;

use regex::{Captures, Regex};

/// What a masked value becomes.
pub const MASKED: &str = "[masked]";

/// The words after which a double-quoted name is an identifier, not a value.
const IDENTIFIER_WORDS: [&str; 16] = [
    "relation",
    "column",
    "table",
    "schema",
    "constraint",
    "index",
    "type",
    "function",
    "publication",
    "slot",
    "database",
    "role",
    "sequence",
    "view",
    "extension",
    "operator",
];

/// How PostgreSQL's key details go on after the values, e.g. `Key (email)=(...) already exists.`
const KEY_DETAIL_ENDINGS: [&str; 4] = [
    ") already exists",
    ") is not present in table",
    ") conflicts with existing key",
    ") is still referenced",
];

fn regex(pattern: &str) -> Regex {
    Regex::new(pattern).expect("a valid built-in pattern")
}

static KEY_DETAIL: LazyLock<Regex> = LazyLock::new(|| regex(r"\)=\(([^\n]*)"));
static FAILING_ROW: LazyLock<Regex> =
    LazyLock::new(|| regex(r"(?i)(failing row contains) \([^\n]*"));
static SINGLE_QUOTED: LazyLock<Regex> =
    LazyLock::new(|| regex(r"(^|[^0-9A-Za-z_])'(?:[^']|'')*'?"));
static DOUBLE_QUOTED: LazyLock<Regex> = LazyLock::new(|| {
    regex(r#"(?i)(\b[a-z_]+\s+)?"(?:[^"\\]|\\.|"")*"?((?:\."(?:[^"\\]|\\.|"")*"?)*)"#)
});
static ASSIGNED: LazyLock<Regex> = LazyLock::new(|| regex(r#"([A-Za-z0-9_\]])=([^\s,;()'"\[]+)"#));
static EMAIL: LazyLock<Regex> =
    LazyLock::new(|| regex(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}"));
static ADDRESS_LIKE: LazyLock<Regex> = LazyLock::new(|| {
    regex(r"(^|[^0-9A-Za-z_])(\[?[0-9A-Fa-f:.]*[:.][0-9A-Fa-f:.]*(?:%[0-9A-Za-z]+)?\]?)")
});
static CARD_LIKE: LazyLock<Regex> = LazyLock::new(|| regex(r"\b(?:\d[ -]?){12,18}\d\b"));
static PHONE_LIKE: LazyLock<Regex> = LazyLock::new(|| {
    regex(r"\+\d[\d ().-]{5,}\d|\(?\b\d{2,4}\)?[ .-]\d{3,4}[ .-]\d{4}\b|\b\d{10,}\b")
});

/// `text` with every customer-value-looking part replaced by [`MASKED`] (quotes and brackets
/// kept, so the sentence still reads).
pub fn mask_free_text(text: &str) -> String {
    let text = KEY_DETAIL.replace_all(text, |caps: &Captures| {
        // The values run to the first known ending of the message, or to the end of the line.
        let rest = &caps[1];
        let end = KEY_DETAIL_ENDINGS
            .iter()
            .filter_map(|ending| rest.find(ending))
            .min();
        match end {
            Some(end) => format!(")=({MASKED}{}", &rest[end..]),
            None => format!(")=({MASKED})"),
        }
    });
    let text = FAILING_ROW.replace_all(&text, |caps: &Captures| format!("{} ({MASKED})", &caps[1]));
    let text =
        SINGLE_QUOTED.replace_all(&text, |caps: &Captures| format!("{}'{MASKED}'", &caps[1]));
    let text = DOUBLE_QUOTED.replace_all(&text, |caps: &Captures| {
        let word = caps.get(1).map_or("", |word| word.as_str());
        // `"schema"."table"`: a qualified name is an identifier, whatever precedes it.
        let qualified = caps.get(2).is_some_and(|rest| !rest.as_str().is_empty());
        if qualified || IDENTIFIER_WORDS.contains(&word.trim().to_lowercase().as_str()) {
            caps[0].to_owned()
        } else {
            format!("{word}\"{MASKED}\"")
        }
    });
    let text = ASSIGNED.replace_all(&text, |caps: &Captures| format!("{}={MASKED}", &caps[1]));
    let text = EMAIL.replace_all(&text, MASKED);
    let text = ADDRESS_LIKE.replace_all(&text, |caps: &Captures| {
        let candidate = &caps[2];
        if is_ip_address(candidate) {
            format!("{}{MASKED}", &caps[1])
        } else {
            caps[0].to_owned()
        }
    });
    let text = CARD_LIKE.replace_all(&text, MASKED);
    PHONE_LIKE.replace_all(&text, MASKED).into_owned()
}

/// An IPv4 or IPv6 address, possibly in brackets, with a port or a zone.
fn is_ip_address(candidate: &str) -> bool {
    // `::` alone, or a path such as `de::de`, is no one's address.
    if !candidate.bytes().any(|byte| byte.is_ascii_digit()) {
        return false;
    }
    let bare = candidate.trim_matches(['[', ']']);
    let bare = bare.split('%').next().unwrap_or(bare);
    let bare = bare.trim_end_matches('.');
    if bare.parse::<Ipv6Addr>().is_ok() {
        return true;
    }
    // `192.0.2.1:5432`: the host part.
    let host = bare.rsplit_once(':').map_or(bare, |(host, _)| host);
    host.parse::<Ipv4Addr>().is_ok() || bare.parse::<Ipv4Addr>().is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_postgres_key_detail_keeps_its_columns_and_loses_its_values() {
        assert_eq!(
            mask_free_text(
                "duplicate key value violates unique constraint \"users_email_key\"\n\
                 DETAIL: Key (email, tenant)=(ada@example.com, 42) already exists."
            ),
            "duplicate key value violates unique constraint \"users_email_key\"\n\
             DETAIL: Key (email, tenant)=([masked]) already exists."
        );
        assert_eq!(
            mask_free_text(
                "DETAIL: Key (customer_id)=(Ada (London)) is not present in table \"customers\"."
            ),
            "DETAIL: Key (customer_id)=([masked]) is not present in table \"customers\"."
        );
        assert_eq!(
            mask_free_text("DETAIL: Key (name)=(secret value"),
            "DETAIL: Key (name)=([masked])"
        );
        assert_eq!(
            mask_free_text(
                "new row violates check constraint \"c\"\nDETAIL: Failing row contains (1, Ada, ada@x.io)."
            ),
            "new row violates check constraint \"c\"\nDETAIL: Failing row contains ([masked])"
        );
    }

    #[test]
    fn quoted_literals_are_masked_and_quoted_identifiers_kept() {
        assert_eq!(
            mask_free_text(r#"invalid input syntax for type integer: "12a-secret""#),
            r#"invalid input syntax for type integer: "[masked]""#
        );
        assert_eq!(
            mask_free_text(
                r#"relation "public.orders" does not exist; column "email" of relation "users""#
            ),
            r#"relation "public.orders" does not exist; column "email" of relation "users""#
        );
        assert_eq!(
            mask_free_text("syntax error at or near 'Ada''s card' in query"),
            "syntax error at or near '[masked]' in query"
        );
        assert_eq!(
            mask_free_text(r#"replication slot "tributary_slot" is active"#),
            r#"replication slot "tributary_slot" is active"#
        );
        // A qualified name, as the agent's check names tables, is kept wherever it stands.
        assert_eq!(
            mask_free_text(r#""public"."devices" can be captured; GRANT SELECT ON "s"."t""#),
            r#""public"."devices" can be captured; GRANT SELECT ON "s"."t""#
        );
        assert_eq!(
            mask_free_text(r#"value "ada@example.com"."x" rejected: "secret""#),
            r#"value "[masked]"."x" rejected: "[masked]""#
        );
    }

    #[test]
    fn values_after_an_equals_sign_are_masked() {
        assert_eq!(
            mask_free_text("connect failed: host=db.internal user=ada password=hunter2 port=5432"),
            "connect failed: host=[masked] user=[masked] password=[masked] port=[masked]"
        );
        assert_eq!(mask_free_text("a == b"), "a == b");
    }

    #[test]
    fn emails_addresses_cards_and_phones_are_masked() {
        assert_eq!(
            mask_free_text("mail to Ada.Lovelace+cdc@example.co.uk bounced"),
            "mail to [masked] bounced"
        );
        assert_eq!(
            mask_free_text(
                "connection to 192.0.2.17:5432 refused, also [2001:db8::1]:5432 and fe80::1%eth0"
            ),
            "connection to [masked] refused, also [masked]:5432 and [masked]"
        );
        assert_eq!(
            mask_free_text("card 4111 1111 1111 1111 and 5500-0000-0000-0004 and 4012888888881881"),
            "card [masked] and [masked] and [masked]"
        );
        assert_eq!(
            mask_free_text("call +44 20 7946 0958 or (555) 123-4567 or 5551234567"),
            "call [masked] or [masked] or [masked]"
        );
    }

    #[test]
    fn the_words_that_explain_an_error_stay() {
        for kept in [
            "replication slot lag 1048576 bytes at LSN 0/16B3748, retrying in 30 s",
            "spool full: 64 batches, backpressure on",
            "the edge answered 503 temporarily_unavailable (attempt 3 of 5)",
            "TLS handshake failed: certificate expired at 2026-11-01T10:00:00Z",
            "tokio::net::TcpStream::connect timed out after 10s",
        ] {
            assert_eq!(mask_free_text(kept), kept);
        }
    }
}
