//! The live dashboard served at `GET /`: one page (HTML, CSS, JavaScript) embedded in the
//! binary, with no external assets, that reads `GET /v1/status` and the server-sent events
//! of `GET /v1/stream` and publishes test messages with `POST /v1/publish`.
//!
//! [`router`] serves the page and its two assets; it carries no state and no auth (the
//! page holds no data: everything it shows comes from the `/v1` endpoints, which keep
//! their token check), so it merges into any router:
//!
//! ```ignore
//! Router::new().merge(api).merge(dashboard::router()) /* ... */ .with_state(app)
//! ```

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;

/// The page, served at `/`.
pub(crate) const INDEX_HTML: &str = include_str!("index.html");
/// Its script, served at [`APP_JS_PATH`].
pub(crate) const APP_JS: &str = include_str!("app.js");
/// Its style sheet, served at [`STYLE_CSS_PATH`].
pub(crate) const STYLE_CSS: &str = include_str!("style.css");
/// Where the page loads its script from.
pub(crate) const APP_JS_PATH: &str = "/dashboard/app.js";
/// Where the page loads its style sheet from.
pub(crate) const STYLE_CSS_PATH: &str = "/dashboard/style.css";

/// Only mqlink itself: no CDN, no fonts, no third-party requests. Inline styles are
/// allowed for the few positions the script sets.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
                   img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; \
                   frame-ancestors 'none'";

/// `GET /`, `GET /dashboard/app.js` and `GET /dashboard/style.css`, each with its content
/// type and `Cache-Control: no-cache` (a new binary serves a new page without a stale
/// cache). Stateless, so it merges into a router of any state `S`.
pub(crate) fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route(
            "/",
            get(|| async { asset("text/html; charset=utf-8", INDEX_HTML) }),
        )
        .route(
            APP_JS_PATH,
            get(|| async { asset("text/javascript; charset=utf-8", APP_JS) }),
        )
        .route(
            STYLE_CSS_PATH,
            get(|| async { asset("text/css; charset=utf-8", STYLE_CSS) }),
        )
}

fn asset(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::CONTENT_SECURITY_POLICY, CSP),
        ],
        body,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn get(port: u16, path: &str) -> String {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn serves_the_page_and_assets_with_types_and_no_cache() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let app: Router = router::<()>();
        let server = tokio::spawn(async move { axum::serve(listener, app).await });
        for (path, ct, body) in [
            ("/", "text/html; charset=utf-8", INDEX_HTML),
            (APP_JS_PATH, "text/javascript; charset=utf-8", APP_JS),
            (STYLE_CSS_PATH, "text/css; charset=utf-8", STYLE_CSS),
        ] {
            let r = get(port, path).await;
            let (head, got) = r.split_once("\r\n\r\n").unwrap();
            let head = head.to_ascii_lowercase();
            assert!(head.starts_with("http/1.1 200"), "{path}: {head}");
            assert!(
                head.contains(&format!("content-type: {ct}")),
                "{path}: {head}"
            );
            assert!(head.contains("cache-control: no-cache"), "{path}: {head}");
            assert_eq!(got, body, "{path}");
        }
        server.abort();
    }

    #[test]
    fn the_page_loads_nothing_from_elsewhere() {
        assert!(INDEX_HTML.contains(&format!("src=\"{APP_JS_PATH}\"")));
        assert!(INDEX_HTML.contains(&format!("href=\"{STYLE_CSS_PATH}\"")));
        for (name, text) in [
            ("index.html", INDEX_HTML),
            ("app.js", APP_JS),
            ("style.css", STYLE_CSS),
        ] {
            for needle in [
                "src=\"http",
                "href=\"http",
                "src=\"//",
                "href=\"//",
                "@import",
                "url(http",
                "fetch('http",
                "fetch(\"http",
            ] {
                assert!(
                    !text.contains(needle),
                    "{name} refers to an external resource ({needle})"
                );
            }
        }
        // The contract the page codes against.
        for endpoint in ["'/v1/status'", "'/v1/stream'", "'/v1/publish'", "'?token='"] {
            assert!(APP_JS.contains(endpoint), "app.js does not use {endpoint}");
        }
    }
}
