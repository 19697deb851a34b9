//! The agent end to end, against a real platform and real source databases.

mod postgres;
mod simulator;
mod support;
