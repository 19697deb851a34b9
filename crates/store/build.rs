//! `sqlx::migrate!` embeds `migrations/` when the crate compiles, but Cargo only knows to
//! compile it again when a Rust source changes: a new migration alone would not be embedded.
//! This tells Cargo to watch the directory (sqlx's documented remedy).

fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
