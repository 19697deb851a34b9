//! The browser cookies the web app sets: names, attributes and parsing. Every cookie is
//! `__Host-` prefixed (so `Secure`, `Path=/`, no `Domain`: no subdomain or plain-HTTP page can
//! set or overwrite it), `HttpOnly` and `SameSite=Lax`.

use axum::http::{HeaderMap, HeaderValue, header};

/// The server-side session's random reference.
pub const SESSION: &str = "__Host-tributary-session";
/// The random value anti-forgery tokens are derived from.
pub const CSRF: &str = "__Host-tributary-csrf";
/// Marks a browser that signed in successfully (see `auth::throttle`).
pub const DEVICE: &str = "__Host-tributary-device";
/// Binds a single sign-on flow to the browser that started it (see `sso`).
pub const SSO_FLOW: &str = "__Host-tributary-sso";

/// The value of cookie `name`, if the request carries it once with a well-formed value (64
/// lower-case hex digits: every cookie value this app sets has that shape).
pub fn get(headers: &HeaderMap, name: &str) -> Option<String> {
    let mut found = None;
    for value in headers.get_all(header::COOKIE) {
        let Ok(text) = value.to_str() else { continue };
        for pair in text.split(';') {
            let Some((key, value)) = pair.trim().split_once('=') else {
                continue;
            };
            if key == name {
                if found.is_some() {
                    // Two cookies of one name: refuse to guess which one is ours.
                    return None;
                }
                found = Some(value.to_owned());
            }
        }
    }
    found.filter(|value| {
        value.len() == 64
            && value
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// A `Set-Cookie` value for `name`. `max_age` in seconds; `None` lasts until the browser closes.
pub fn set(name: &str, value: &str, max_age: Option<i64>) -> HeaderValue {
    let max_age = max_age
        .map(|seconds| format!("; Max-Age={seconds}"))
        .unwrap_or_default();
    HeaderValue::from_str(&format!(
        "{name}={value}; Path=/; Secure; HttpOnly; SameSite=Lax{max_age}"
    ))
    .expect("cookie names and hex values are valid header text")
}

/// A `Set-Cookie` value that deletes cookie `name`.
pub fn clear(name: &str) -> HeaderValue {
    HeaderValue::from_str(&format!(
        "{name}=; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age=0"
    ))
    .expect("cookie names are valid header text")
}

/// A new random cookie value: 256 bits from the operating system, hex-encoded.
pub fn random_value() -> String {
    store::random_token(32)
}
