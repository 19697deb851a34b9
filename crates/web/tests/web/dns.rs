//! The tests' own DNS server on loopback (UDP), answering TXT queries from records a test
//! publishes: what the platform's resolver setting points at, so proving an SSO domain is
//! tested against real DNS messages without leaving the machine. One per test process, on its
//! own thread, so it outlives every test's runtime.

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::sync::{Mutex, OnceLock};

pub struct DnsServer {
    pub addr: SocketAddr,
    records: Mutex<HashMap<String, Vec<String>>>,
}

/// The process's server, started on first use.
pub fn server() -> &'static DnsServer {
    static SERVER: OnceLock<&'static DnsServer> = OnceLock::new();
    SERVER.get_or_init(|| {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("a loopback UDP port");
        let server: &'static DnsServer = Box::leak(Box::new(DnsServer {
            addr: socket.local_addr().unwrap(),
            records: Mutex::new(HashMap::new()),
        }));
        std::thread::spawn(move || {
            let mut buffer = [0u8; 1500];
            while let Ok((length, from)) = socket.recv_from(&mut buffer) {
                if let Some(answer) = server.answer(&buffer[..length]) {
                    let _ = socket.send_to(&answer, from);
                }
            }
        });
        server
    })
}

impl DnsServer {
    /// Publishes a TXT record `text` at `name` (beside any already there).
    pub fn publish(&self, name: &str, text: &str) {
        self.records
            .lock()
            .unwrap()
            .entry(name.trim_end_matches('.').to_ascii_lowercase())
            .or_default()
            .push(text.to_owned());
    }

    /// The answer to one query: its TXT records, or NXDOMAIN for a name without any.
    fn answer(&self, query: &[u8]) -> Option<Vec<u8>> {
        if query.len() < 12 {
            return None;
        }
        let mut at = 12;
        let mut labels = Vec::new();
        loop {
            let length = usize::from(*query.get(at)?);
            at += 1;
            if length == 0 {
                break;
            }
            labels.push(String::from_utf8_lossy(query.get(at..at + length)?).to_ascii_lowercase());
            at += length;
        }
        let record_type = u16::from_be_bytes([*query.get(at)?, *query.get(at + 1)?]);
        let question = query.get(12..at + 4)?;
        let name = labels.join(".");
        let texts = self
            .records
            .lock()
            .unwrap()
            .get(&name)
            .cloned()
            .unwrap_or_default();
        let answers: Vec<&String> = if record_type == 16 {
            texts.iter().collect()
        } else {
            Vec::new()
        };
        let mut answer = Vec::new();
        answer.extend_from_slice(&query[..2]);
        // A response, authoritative, recursion desired and available; NXDOMAIN without records.
        answer.extend_from_slice(&[0x85, if texts.is_empty() { 0x83 } else { 0x80 }]);
        answer.extend_from_slice(&1u16.to_be_bytes());
        answer.extend_from_slice(&(answers.len() as u16).to_be_bytes());
        answer.extend_from_slice(&[0, 0, 0, 0]);
        answer.extend_from_slice(question);
        for text in answers {
            answer.extend_from_slice(&[0xc0, 0x0c, 0, 16, 0, 1, 0, 0, 0, 0]);
            answer.extend_from_slice(&(text.len() as u16 + 1).to_be_bytes());
            answer.push(text.len() as u8);
            answer.extend_from_slice(text.as_bytes());
        }
        Some(answer)
    }
}
