//! The stats HTTP API on `api-bind-to` (hyper, on whichever runtime the binary uses):
//! `GET /stats` returns the mtg-multi JSON; other paths 404, other methods 405.

use std::convert::Infallible;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_io::{AsyncRead, AsyncWrite};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use tracing::debug;

use crate::runtime::Runtime;

use super::Shared;

/// A `futures-io` stream seen through hyper's I/O traits.
struct HyperIo<T>(T);

impl<T: AsyncRead + Unpin> hyper::rt::Read for HyperIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        mut buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        // Read into initialised scratch space and copy: the API is not a hot path.
        let mut scratch = [0u8; 4096];
        let want = buf.remaining().min(scratch.len());
        match Pin::new(&mut self.0).poll_read(cx, &mut scratch[..want]) {
            Poll::Ready(Ok(n)) => {
                buf.put_slice(&scratch[..n]);
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<T: AsyncWrite + Unpin> hyper::rt::Write for HyperIo<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_close(cx)
    }
}

/// Whether the request carries the configured bearer token (constant-time comparison).
fn authorized(shared: &Shared, header: Option<&hyper::header::HeaderValue>) -> bool {
    let Some(token) = &shared.settings.api_token else { return true };
    let Some(given) = header.and_then(|h| h.to_str().ok()).and_then(|h| h.strip_prefix("Bearer ")) else {
        return false;
    };
    let (a, b) = (given.as_bytes(), token.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The answer to one API request.
pub(crate) fn respond(
    shared: &Shared,
    method: &Method,
    path: &str,
    authorization: Option<&hyper::header::HeaderValue>,
) -> Response<Full<Bytes>> {
    if !authorized(shared, authorization) {
        let mut response = Response::new(Full::new(Bytes::from_static(b"unauthorized\n")));
        *response.status_mut() = StatusCode::UNAUTHORIZED;
        response
            .headers_mut()
            .insert(hyper::header::WWW_AUTHENTICATE, hyper::header::HeaderValue::from_static("Bearer"));
        return response;
    }
    let (status, content_type, body) = match (path, method) {
        ("/stats", &Method::GET) => (StatusCode::OK, "application/json", shared.stats_json()),
        ("/reload", &Method::POST) => match shared.reload() {
            Ok(summary) => (StatusCode::OK, "application/json", json_line(&summary)),
            Err(e) => {
                (StatusCode::BAD_REQUEST, "application/json", json_line(&serde_json::json!({ "error": e })))
            }
        },
        ("/stats", _) | ("/reload", _) => {
            (StatusCode::METHOD_NOT_ALLOWED, "text/plain", "method not allowed\n".to_owned())
        }
        _ => (StatusCode::NOT_FOUND, "text/plain", "not found\n".to_owned()),
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_static(content_type));
    if status == StatusCode::METHOD_NOT_ALLOWED {
        let allow = if path == "/reload" { "POST" } else { "GET" };
        response.headers_mut().insert(hyper::header::ALLOW, hyper::header::HeaderValue::from_static(allow));
    }
    response
}

fn json_line(value: &impl serde::Serialize) -> String {
    // Serialising plain structs and strings cannot fail.
    let mut text = serde_json::to_string(value).unwrap_or_default();
    text.push('\n');
    text
}

/// Serves one API connection.
pub(crate) async fn serve_api_connection<R: Runtime>(shared: Arc<Shared>, stream: R::Stream) {
    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
        let response = respond(
            &shared,
            request.method(),
            request.uri().path(),
            request.headers().get(hyper::header::AUTHORIZATION),
        );
        async move { Ok::<_, Infallible>(response) }
    });
    if let Err(e) =
        hyper::server::conn::http1::Builder::new().serve_connection(HyperIo(stream), service).await
    {
        debug!(error = %e, "stats API connection ended with an error");
    }
}
