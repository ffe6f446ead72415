// The store tests embed their migration files with `sqlx::migrate!`; a new
// file must rebuild them.
fn main() {
    println!("cargo:rerun-if-changed=src/store/test_migrations");
}
