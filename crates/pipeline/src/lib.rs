//! The pipeline: consumers of the stream bus, one folder each, all run by one loop ([`runner`]).
//! Every consumer is idempotent (delivery is at-least-once) and acknowledges a batch only after
//! its effects are durable.

pub mod aggregator;
pub mod alerts;
pub mod bronze;
pub mod materializer;
pub mod replay;
pub mod runner;
