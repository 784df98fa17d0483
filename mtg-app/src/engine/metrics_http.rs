//! The Prometheus endpoint on `[stats.prometheus] bind-to` (hyper, on whichever runtime the
//! binary uses): the configured `http-path` (any path when it is `/`) answers every method
//! with the metrics, OpenMetrics when the `Accept` header asks for it, else the classic text;
//! other paths 404.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{ACCEPT, CONTENT_TYPE, HeaderValue};
use hyper::{Request, Response, StatusCode};
use tracing::debug;

use crate::metrics::prometheus::Format;
use crate::runtime::Runtime;

use super::Shared;
use super::api::HyperIo;

/// The answer to one scrape.
fn respond(shared: &Shared, request: &Request<Incoming>) -> Response<Full<Bytes>> {
    let wanted = shared.metrics().prometheus().map_or("/", |p| p.path.as_str());
    let (status, content_type, body) =
        if wanted == "/" || request.uri().path().trim_end_matches('/') == wanted {
            let format = Format::negotiate(request.headers().get(ACCEPT).and_then(|v| v.to_str().ok()));
            (StatusCode::OK, format.content_type(), shared.metrics().prometheus_text(format))
        } else {
            (StatusCode::NOT_FOUND, "text/plain", "not found\n".to_owned())
        };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// Serves one connection to the Prometheus endpoint.
pub(crate) async fn serve_metrics_connection<R: Runtime>(shared: Arc<Shared>, stream: R::Stream) {
    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
        let response = respond(&shared, &request);
        async move { Ok::<_, Infallible>(response) }
    });
    if let Err(e) =
        hyper::server::conn::http1::Builder::new().serve_connection(HyperIo(stream), service).await
    {
        debug!(error = %e, "metrics connection ended with an error");
    }
}
