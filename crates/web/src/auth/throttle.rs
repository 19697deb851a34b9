//! Sign-in throttling that cannot be turned into a lock-out, and counting the attempts of
//! sign-up and password reset.
//!
//! Attempts are counted in fixed 15-minute windows, before the password is checked, in buckets:
//!
//! - a browser that has signed in as the account before (it holds a device cookie the account
//!   trusts) is limited on its own, [`TRUSTED_DEVICE_LIMIT`] attempts per window, and is not
//!   affected by anyone else's failures;
//! - every other attempt counts against the account ([`ACCOUNT_LIMIT`]) and the client address
//!   ([`ADDRESS_LIMIT`]); past either, attempts are refused unchecked until the window ends.
//!
//! So a password-guessing attacker gets at most `ACCOUNT_LIMIT` guesses per account per window
//! (16 windows an hour), while the real user, on a browser they signed in with before, still gets
//! in during the attack (OWASP's "device cookies"). A successful sign-in from a trusted browser
//! clears that browser's count; the account's count only runs out with its window, so the real
//! user signing in never hands an attacker a fresh set of guesses.

use store::StoreError;
use time::Duration;

use super::session::Visitor;
use crate::AppState;

pub const WINDOW: Duration = Duration::minutes(15);
pub const ACCOUNT_LIMIT: i32 = 10;
pub const ADDRESS_LIMIT: i32 = 100;
pub const TRUSTED_DEVICE_LIMIT: i32 = 10;
/// How long a browser stays trusted after a successful sign-in.
pub const DEVICE_LIFETIME: Duration = Duration::days(90);

/// Sign-ups per client address per window.
pub const SIGN_UP_LIMIT: i32 = 10;
/// Sign-ups per email address per window, from anywhere: each one mails the address, so this
/// bounds how much mail anyone can make a stranger receive.
pub const SIGN_UP_ACCOUNT_LIMIT: i32 = 3;
/// Book-a-demo requests per client address per window.
pub const CONTACT_LIMIT: i32 = 5;

pub fn account_bucket(email: &str) -> String {
    format!("sign-in account {email}")
}

pub fn sign_up_account_bucket(email: &str) -> String {
    format!("sign-up account {email}")
}

pub fn address_bucket(kind: &str, address: &str) -> String {
    format!("{kind} address {address}")
}

pub fn device_bucket(device_token: &str) -> String {
    format!("sign-in device {device_token}")
}

/// What a throttled sign-in, sign-up or reset request is told.
pub(crate) const THROTTLED: &str =
    "Too many attempts from here. Wait 15 minutes, or sign in from a browser you have used before.";

/// Counts an attempt in `bucket`; true when past `limit`.
pub(super) async fn over_limit(
    state: &AppState,
    bucket: &str,
    limit: i32,
) -> Result<bool, StoreError> {
    let attempts = store::accounts::count_attempt(&state.database, bucket, WINDOW).await?;
    Ok(attempts > limit)
}

/// The client's address as its throttling bucket names it.
pub(super) fn address(visitor: &Visitor) -> String {
    visitor
        .client_addr
        .map_or_else(|| "unknown".to_owned(), |addr| addr.to_string())
}
