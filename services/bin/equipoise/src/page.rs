//! The web page (`web/`), embedded at build time from `web/dist/` and
//! served by every target on its gRPC port (see `build.rs`).

use equipoise_common::grpc::web::Page;

pub const PAGE: Page = Page {
    files: include!(concat!(env!("OUT_DIR"), "/page_files.rs")),
};

#[cfg(test)]
mod tests {
    use super::*;

    /// The committed build of `web/` is in the binary: the page, its
    /// script and its style, and nothing from outside `web/dist/`.
    #[test]
    fn the_built_page_is_embedded() {
        for path in ["/index.html", "/app.js", "/app.css"] {
            let file = PAGE.files.iter().find(|f| f.path == path);
            assert!(file.is_some_and(|f| !f.bytes.is_empty()), "{path}");
        }
        assert!(PAGE.files.iter().all(|f| !f.path.contains("..")));
    }
}
