//! The Prometheus endpoint on `[stats.prometheus] bind-to` (served by
//! [`http_server`](super::http_server)): the configured `http-path` (any path when it is `/`)
//! answers every method with the metrics, OpenMetrics when the `Accept` header asks for it,
//! else the classic text; other paths 404.

use std::sync::Arc;

use crate::metrics::prometheus::Format;

use super::http_server::{Handler, Request, Response, StatusCode};
use crate::engine::Shared;

/// The Prometheus endpoint's [`Handler`].
#[derive(Clone)]
pub(crate) struct MetricsPage(pub(crate) Arc<Shared>);

impl Handler for MetricsPage {
    fn handle(&self, request: Request) -> impl Future<Output = Response> + Send {
        std::future::ready(respond(&self.0, &request))
    }
}

/// The answer to one scrape.
fn respond(shared: &Shared, request: &Request) -> Response {
    let wanted = shared.metrics().prometheus().map_or("/", |p| p.path.as_str());
    if wanted == "/" || request.path().trim_end_matches('/') == wanted {
        let format = Format::negotiate(request.header("accept"));
        Response::new(StatusCode::OK, format.content_type(), shared.metrics().prometheus_text(format))
    } else {
        Response::new(StatusCode::NOT_FOUND, "text/plain", "not found\n")
    }
}
