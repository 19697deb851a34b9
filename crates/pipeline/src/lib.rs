//! The pipeline: consumers of the stream bus, one folder each. Every consumer is idempotent
//! (delivery is at-least-once) and acknowledges a batch only after its effects are durable.

pub mod aggregator;
pub mod bronze;
pub mod materializer;
pub mod replay;
