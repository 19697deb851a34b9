//! Secrets at rest: the platform's AES-256-GCM box lives in the store (`store::secret_box`), so
//! the web app seals SSO client secrets with the same scheme; the edge uses it from there.

pub use store::secret_box::{SecretBox, SecretBoxError};
