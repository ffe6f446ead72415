// `sqlx::migrate!` embeds the migration files; a new file must rebuild.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
