//! The web client, embedded so the binary serves it with no build step:
//! every file of `web/` (listed by `build.rs`), at `/<name>`, with
//! `index.html` also at `/` (see `root` in the parent module). Served
//! `no-cache`: a browser revalidates, so an upgraded binary's client is
//! picked up on the next load without stale modules mixing with new ones.

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

/// `(url path, contents)` of every file of `web/`.
const FILES: &[(&str, &[u8])] = include!(concat!(env!("OUT_DIR"), "/web_files.rs"));

/// The page itself, served at `/` to a request that is not a WebSocket upgrade.
pub(crate) fn index() -> Response {
    serve("/index.html")
}

/// A route per embedded file, merged into the gateway's router.
pub(crate) fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    FILES.iter().fold(Router::new(), |router, &(path, _)| {
        router.route(path, get(move || async move { serve(path) }))
    })
}

fn serve(path: &str) -> Response {
    match FILES.iter().find(|(p, _)| *p == path) {
        Some(&(_, body)) => (
            StatusCode::OK,
            [
                (header::CONTENT_TYPE, content_type(path)),
                (header::CACHE_CONTROL, "no-cache"),
            ],
            body,
        )
            .into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

/// The type a browser needs: an ES module is only run when served as JavaScript.
fn content_type(path: &str) -> &'static str {
    match path.rsplit_once('.').map(|(_, ext)| ext) {
        Some("html") => "text/html; charset=utf-8",
        Some("js" | "mjs") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("ico") => "image/x-icon",
        Some("json" | "webmanifest") => "application/json",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every module a client file imports is embedded, so a missing file
    /// fails here rather than as a blank page.
    #[test]
    fn every_import_is_embedded() {
        for &(path, body) in FILES {
            if !path.ends_with(".js") {
                continue;
            }
            let text = std::str::from_utf8(body).expect("web/*.js is UTF-8");
            for line in text.lines() {
                let Some(rest) = line.split_once(" from \"./").map(|(_, r)| r) else {
                    continue;
                };
                let Some((name, _)) = rest.split_once('"') else {
                    continue;
                };
                let wanted = format!("/{name}");
                assert!(
                    FILES.iter().any(|(p, _)| *p == wanted),
                    "{path} imports {name}, which is not in web/"
                );
            }
        }
    }

    #[test]
    fn every_file_has_a_known_type() {
        assert!(FILES.iter().any(|(p, _)| *p == "/index.html"));
        for &(path, _) in FILES {
            assert_ne!(content_type(path), "application/octet-stream", "{path}");
        }
    }
}
