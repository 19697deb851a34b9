//! Anti-forgery for every state-changing request of the HTML app.
//!
//! Each browser holds a random value in the `__Host-` CSRF cookie; pages embed a token derived
//! from it (SHA-256 with a domain-separation prefix), and a POST must send that token back, as
//! the form field `csrf` or the `X-CSRF-Token` header, or it is refused. On top, a request that
//! the browser marks as cross-site (`Sec-Fetch-Site`) or whose `Origin` is another host is
//! refused whatever it carries. The cookie is renewed on sign-in and sign-out. The JSON API is
//! exempt: it authenticates with bearer tokens, which browsers never attach on their own.

use axum::body::{Body, to_bytes};
use axum::extract::Request;
use axum::http::{HeaderMap, Method, header};
use axum::middleware::Next;
use axum::response::Response;
use sha2::{Digest, Sha256};

use crate::cookies;
use crate::pages::{Chrome, PageError};

/// The largest form body the guard reads to find the token.
const MAX_FORM_BYTES: usize = 64 * 1024;

/// The anti-forgery token of this request's browser, for pages to embed.
#[derive(Debug, Clone)]
pub struct CsrfToken(pub String);

/// The token pages embed for a browser whose CSRF cookie holds `binding`.
pub fn token_for(binding: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(b"tributary csrf v1\0");
    hasher.update(binding.as_bytes());
    hex::encode(hasher.finalize())
}

fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |diff, (x, y)| diff | (x ^ y))
            == 0
}

/// True when the request comes from another origin, by the browser's own account.
///
/// `Sec-Fetch-Site` decides when the browser sends it: only `same-origin` (and `none`, a request
/// the user typed) pass; `same-site` (another subdomain) and `cross-site` do not. Otherwise
/// `Origin`, when present, must be this host. Our `Referrer-Policy: no-referrer` makes browsers
/// send `Origin: null` on same-origin form posts, so `null` passes only next to a same-origin
/// `Sec-Fetch-Site`.
fn cross_site(headers: &HeaderMap) -> bool {
    let fetch_site = headers.get("sec-fetch-site").map(|site| site.as_bytes());
    match fetch_site {
        None | Some(b"same-origin") | Some(b"none") => {}
        Some(_) => return true,
    }
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    if origin == "null" {
        return fetch_site.is_none();
    }
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let origin_host = origin
        .strip_prefix("https://")
        .or_else(|| origin.strip_prefix("http://"));
    origin_host != Some(host)
}

fn form_field(body: &[u8], name: &str) -> Option<String> {
    form_urlencoded_pairs(body)
        .find(|(key, _)| key == name)
        .map(|(_, value)| value)
}

/// `application/x-www-form-urlencoded` pairs, decoded.
fn form_urlencoded_pairs(body: &[u8]) -> impl Iterator<Item = (String, String)> + '_ {
    body.split(|b| *b == b'&').filter_map(|pair| {
        let mut parts = pair.splitn(2, |b| *b == b'=');
        let key = percent_decode(parts.next()?)?;
        let value = percent_decode(parts.next().unwrap_or_default())?;
        Some((key, value))
    })
}

fn percent_decode(bytes: &[u8]) -> Option<String> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
                if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return None;
                }
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            byte => out.push(byte),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

/// Whether a state-changing JSON API request authenticated by the session cookie is the app's
/// own: same origin by the browser's account, and the `X-CSRF-Token` header the pages embed
/// (only a header: a cross-site form cannot set one).
pub fn api_request_is_genuine(headers: &HeaderMap) -> bool {
    let Some(binding) = cookies::get(headers, cookies::CSRF) else {
        return false;
    };
    let presented = headers.get("x-csrf-token").and_then(|v| v.to_str().ok());
    !cross_site(headers) && presented.is_some_and(|presented| same(presented, &token_for(&binding)))
}

/// The middleware: checks non-safe requests, hands the token to handlers, and gives a browser
/// without a CSRF cookie one.
pub async fn guard(mut request: Request, next: Next) -> Response {
    // The API authenticates with bearer tokens; static assets change nothing and are cacheable,
    // so they must not carry a cookie.
    let path = request.uri().path();
    if path.starts_with("/api/") || path.starts_with("/assets/") {
        return next.run(request).await;
    }
    let existing = cookies::get(request.headers(), cookies::CSRF);
    let fresh = existing.is_none();
    let binding = existing.unwrap_or_else(cookies::random_value);
    let token = token_for(&binding);
    let safe = matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::OPTIONS
    );
    if !safe {
        let chrome = Chrome {
            csrf: token.clone(),
            ..Chrome::default()
        };
        let refuse = |chrome: &Chrome| {
            let mut response = PageError::Forgery.into_page(chrome);
            if fresh {
                response.headers_mut().append(
                    header::SET_COOKIE,
                    cookies::set(cookies::CSRF, &binding, None),
                );
            }
            response
        };
        if fresh || cross_site(request.headers()) {
            tracing::info!(path = %request.uri().path(), "refused a request without a valid anti-forgery token");
            return refuse(&chrome);
        }
        let presented = match request
            .headers()
            .get("x-csrf-token")
            .and_then(|v| v.to_str().ok())
        {
            Some(header) => Some(header.to_owned()),
            None => {
                let (parts, body) = request.into_parts();
                let Ok(bytes) = to_bytes(body, MAX_FORM_BYTES).await else {
                    return PageError::BadRequest("The form is too large.".into())
                        .into_page(&chrome);
                };
                let presented = form_field(&bytes, "csrf");
                request = Request::from_parts(parts, Body::from(bytes));
                presented
            }
        };
        if !presented.is_some_and(|presented| same(&presented, &token)) {
            tracing::info!(path = %request.uri().path(), "refused a request without a valid anti-forgery token");
            return refuse(&chrome);
        }
    }
    request.extensions_mut().insert(CsrfToken(token));
    let mut response = next.run(request).await;
    let handler_set_it = response
        .headers()
        .get_all(header::SET_COOKIE)
        .iter()
        .any(|value| {
            value
                .as_bytes()
                .starts_with(format!("{}=", cookies::CSRF).as_bytes())
        });
    if fresh && !handler_set_it {
        response.headers_mut().append(
            header::SET_COOKIE,
            cookies::set(cookies::CSRF, &binding, None),
        );
    }
    response
}
