//! The pipeline's consumers against a real database and the embedded bus.

mod bronze_writer;
mod convergence;
mod materializer;
mod replay;
mod retention;
mod support;
