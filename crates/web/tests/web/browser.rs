//! A minimal browser for the tests: one HTTP/1.1 request per connection, a cookie jar that
//! honours `Max-Age=0`, and helpers to find a page's anti-forgery token.

use std::collections::BTreeMap;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[derive(Debug, Clone)]
pub struct Page {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Page {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(header, _)| header == name)
            .map(|(_, value)| value.as_str())
    }

    pub fn set_cookies(&self) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(header, _)| header == "set-cookie")
            .map(|(_, value)| value.as_str())
            .collect()
    }

    /// The `Set-Cookie` line for cookie `name`, if the response sets it.
    pub fn set_cookie(&self, name: &str) -> Option<&str> {
        self.set_cookies()
            .into_iter()
            .find(|line| line.starts_with(&format!("{name}=")))
    }

    /// The anti-forgery token of the page's first form.
    pub fn csrf(&self) -> String {
        let marker = r#"name="csrf" value=""#;
        let start = self
            .body
            .find(marker)
            .unwrap_or_else(|| panic!("no csrf field in page:\n{}", self.body))
            + marker.len();
        let end = self.body[start..].find('"').unwrap() + start;
        self.body[start..end].to_owned()
    }
}

#[derive(Debug, Clone)]
pub struct Browser {
    pub addr: String,
    pub cookies: BTreeMap<String, String>,
    /// Extra request headers (e.g. `Origin`), sent with every request.
    pub extra_headers: Vec<(String, String)>,
    /// The loopback address connections come from (`127.0.0.2`, ...), to be another client;
    /// `None`: the system's choice.
    pub local_ip: Option<std::net::IpAddr>,
}

pub fn form(fields: &[(&str, &str)]) -> String {
    fields
        .iter()
        .map(|(key, value)| format!("{}={}", encode(key), encode(value)))
        .collect::<Vec<_>>()
        .join("&")
}

fn encode(text: &str) -> String {
    let mut out = String::new();
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-_.~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

impl Browser {
    pub fn new(addr: &str) -> Self {
        Self {
            addr: addr.to_owned(),
            cookies: BTreeMap::new(),
            extra_headers: Vec::new(),
            local_ip: None,
        }
    }

    pub async fn get(&mut self, path: &str) -> Page {
        self.send("GET", path, None).await
    }

    pub async fn post(&mut self, path: &str, fields: &[(&str, &str)]) -> Page {
        self.send("POST", path, Some(form(fields))).await
    }

    /// GETs `page_path`, then POSTs `fields` plus that page's anti-forgery token to `action`.
    pub async fn submit(&mut self, page_path: &str, action: &str, fields: &[(&str, &str)]) -> Page {
        let page = self.get(page_path).await;
        let csrf = page.csrf();
        let mut fields = fields.to_vec();
        fields.push(("csrf", &csrf));
        self.post(action, &fields).await
    }

    pub async fn send(&mut self, method: &str, path: &str, body: Option<String>) -> Page {
        let mut stream = match self.local_ip {
            Some(local) => {
                let socket = tokio::net::TcpSocket::new_v4().unwrap();
                socket.bind(std::net::SocketAddr::new(local, 0)).unwrap();
                socket.connect(self.addr.parse().unwrap()).await.unwrap()
            }
            None => TcpStream::connect(&self.addr).await.unwrap(),
        };
        let cookie = if self.cookies.is_empty() {
            String::new()
        } else {
            let pairs: Vec<String> = self
                .cookies
                .iter()
                .map(|(name, value)| format!("{name}={value}"))
                .collect();
            format!("Cookie: {}\r\n", pairs.join("; "))
        };
        let extra: String = self
            .extra_headers
            .iter()
            .map(|(name, value)| format!("{name}: {value}\r\n"))
            .collect();
        let body = body.unwrap_or_default();
        // A form, unless the caller says otherwise (the JSON API's calls).
        let content_type = if self
            .extra_headers
            .iter()
            .any(|(name, _)| name.eq_ignore_ascii_case("content-type"))
        {
            ""
        } else {
            "Content-Type: application/x-www-form-urlencoded\r\n"
        };
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n{cookie}{extra}\
             {content_type}Content-Length: {}\r\n\r\n{body}",
            self.addr,
            body.len()
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await.unwrap();
        let end = response
            .windows(4)
            .position(|window| window == b"\r\n\r\n")
            .unwrap();
        let head = String::from_utf8(response[..end].to_vec()).unwrap();
        let raw = &response[end + 4..];
        // A streamed response (a CSV export) comes in chunks; a file may not be text.
        let body = if head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked")
        {
            String::from_utf8_lossy(&dechunk(raw)).into_owned()
        } else {
            String::from_utf8_lossy(raw).into_owned()
        };
        let mut lines = head.lines();
        let status = lines
            .next()
            .unwrap()
            .split_whitespace()
            .nth(1)
            .unwrap()
            .parse()
            .unwrap();
        let headers: Vec<(String, String)> = lines
            .filter_map(|line| line.split_once(": "))
            .map(|(name, value)| (name.to_ascii_lowercase(), value.to_owned()))
            .collect();
        let page = Page {
            status,
            headers,
            body,
        };
        for line in page.set_cookies() {
            let (pair, attributes) = line.split_once(';').unwrap_or((line, ""));
            let (name, value) = pair.split_once('=').unwrap();
            if attributes.contains("Max-Age=0") {
                self.cookies.remove(name);
            } else {
                self.cookies.insert(name.to_owned(), value.to_owned());
            }
        }
        page
    }
}

/// An HTTP/1.1 chunked body, its chunks joined (RFC 9112 section 7.1).
fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    loop {
        let Some(line_end) = raw.windows(2).position(|window| window == b"\r\n") else {
            panic!("a chunk without its size line");
        };
        let size_text = std::str::from_utf8(&raw[..line_end]).unwrap();
        let size = usize::from_str_radix(size_text.split(';').next().unwrap().trim(), 16).unwrap();
        raw = &raw[line_end + 2..];
        if size == 0 {
            return body;
        }
        body.extend_from_slice(&raw[..size]);
        raw = &raw[size + 2..];
    }
}
