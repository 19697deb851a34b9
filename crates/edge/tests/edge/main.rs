//! The edge end to end over real TLS: pairing, client certificates, revocation, ingest with
//! its bad-input refusals, duplicates, masking and rate limits, and the spans one batch can be
//! followed by.

mod client;
mod ingest;
mod masking_end_to_end;
mod pairing;
mod support;
mod tracing_spans;
