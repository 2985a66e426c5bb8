//! The web UI: four static files from `web/`, embedded in the binary (no CDN, no build step).

use axum::Router;
use axum::http::header;
use axum::response::{Html, IntoResponse};
use axum::routing::get;

const INDEX: &str = include_str!("../../../web/index.html");
const SCRIPT: &str = include_str!("../../../web/app.js");
const CONSOLE: &str = include_str!("../../../web/console.js");
const STYLE: &str = include_str!("../../../web/style.css");

/// The UI's routes; `currency` is the one its amounts are in.
pub fn router_for(currency: kopek_core::Currency) -> Router {
    let index = INDEX
        .replace("{{DEFAULT_CURRENCY}}", currency.code())
        .replace("{{CURRENCY_DIGITS}}", &currency.minor_digits().to_string());
    Router::new()
        .route("/", get(move || async move { Html(index) }))
        .route(
            "/ui/app.js",
            get(|| async {
                ([(header::CONTENT_TYPE, "text/javascript; charset=utf-8")], SCRIPT).into_response()
            }),
        )
        .route(
            "/ui/console.js",
            get(|| async {
                ([(header::CONTENT_TYPE, "text/javascript; charset=utf-8")], CONSOLE)
                    .into_response()
            }),
        )
        .route(
            "/ui/style.css",
            get(|| async {
                ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], STYLE).into_response()
            }),
        )
}
