//! The client side of the edge's API, for the customer-site agent (and the platform's own
//! benchmarks and fault tests): pairing with a one-time token, certificate renewal, `whoami`,
//! and sending event batches over mutual TLS with HTTP/1.1 keep-alive.
//!
//! ```text
//! let credentials = edge_client::pair(url, ServerTrust::Ca(&ca_pem), &token).await?;
//! credentials.save(dir)?;
//! let client = EdgeClient::new(url, &credentials)?;
//! match client.send(&batch, Encoding::Zstd).await {
//!     Ok(response) => { /* every result is accepted, duplicate or rejected */ }
//!     Err(error) if error.is_retryable() => { /* back off (error.retry_after()), send again */ }
//!     Err(error) => { /* keep the batch spooled and report: a bug or a configuration problem */ }
//! }
//! ```
//!
//! Architecture invariant: this crate depends on the wire contract (`protocol`, `domain`) and
//! nothing else of the platform (no `store`, `bus`, `edge`, `pipeline` or `web`), so the agent
//! links no server code. TLS is rustls with the ring provider, named explicitly everywhere;
//! nothing relies on a process-wide default provider.
//!
//! Sending is safe to repeat: event ids are derived from the source's log, so a batch sent
//! twice is stored once (the second answer says `duplicate`). The client relies on that when it
//! resends a request whose pooled keep-alive connection turned out to be dead.

mod client;
mod credentials;
mod endpoint;
mod error;
mod tls;

pub use client::{
    ClientOptions, EdgeClient, EncodedBatch, ServerTrust, Whoami, pair, pair_with, renew, whoami,
};
pub use credentials::{CREDENTIALS_FILE, Credentials};
pub use endpoint::EdgeUrl;
pub use error::{ClientError, CredentialsError, PairError, SendError, Stage, StatusError};
pub use protocol::{BatchResponse, Encoding, EventBatch};
