//! The pipeline's consumers against a real database and the embedded bus.

mod aggregator;
mod alerts;
mod bronze_writer;
mod convergence;
mod drift;
mod embedded_log;
mod materializer;
mod read_layer;
mod replay;
mod retention;
mod support;
mod truncate;
mod unmapped;
