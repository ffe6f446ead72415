//! The web page (`web/`), embedded at build time from `web/dist/` and
//! served by every target on its gRPC port (see `build.rs`).

use equipoise_common::grpc::web::Page;

pub const PAGE: Page = Page {
    files: include!(concat!(env!("OUT_DIR"), "/page_files.rs")),
};
