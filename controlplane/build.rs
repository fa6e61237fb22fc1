//! sqlx's `migrate!` embeds the migration files at compile time; on stable
//! Rust it notices edits to existing files but not new ones, so ask Cargo to
//! rebuild whenever the migrations folder changes.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
