//! Rebuilds the crate when a migration is added: `sqlx::migrate!` embeds
//! the migrations folders, which cargo does not watch by itself.

fn main() {
    println!("cargo:rerun-if-changed=../migrations");
}
