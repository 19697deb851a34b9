//! The edge end to end over real TLS: pairing, client certificates, revocation, ingest with
//! its bad-input refusals, duplicates, masking and rate limits, the spans one batch can be
//! followed by, and the limits that keep idle and slow clients from exhausting the edge.

mod backpressure;
mod client;
mod ingest;
mod limits;
mod masking_end_to_end;
mod operations;
mod pairing;
mod support;
mod tracing_spans;
