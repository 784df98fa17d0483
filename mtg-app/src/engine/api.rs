//! The stats HTTP API on `api-bind-to` (hyper, on whichever runtime the binary uses):
//! `GET /stats` returns the mtg-multi JSON; other paths 404, other methods 405. Every error
//! is a JSON body `{"error": "..."}`.

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
pub(crate) struct HyperIo<T>(pub(crate) T);

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

/// Largest request body read.
const MAX_BODY: usize = 64 * 1024;

fn reply(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_static(content_type));
    response
}

fn error(status: u16, message: &str) -> Response<Full<Bytes>> {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    reply(status, "application/json", json_line(&serde_json::json!({ "error": message })))
}

fn not_allowed(allow: &'static str) -> Response<Full<Bytes>> {
    let mut response = error(405, &format!("method not allowed; allowed: {allow}"));
    response.headers_mut().insert(hyper::header::ALLOW, hyper::header::HeaderValue::from_static(allow));
    response
}

/// The answer to one API request (`body` is read only for routes that take one).
pub(crate) async fn respond(shared: &Shared, request: Request<Incoming>) -> Response<Full<Bytes>> {
    use http_body_util::BodyExt;
    if !authorized(shared, request.headers().get(hyper::header::AUTHORIZATION)) {
        let mut response = error(401, "missing or wrong bearer token");
        response
            .headers_mut()
            .insert(hyper::header::WWW_AUTHENTICATE, hyper::header::HeaderValue::from_static("Bearer"));
        return response;
    }
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    match (segments.as_slice(), &method) {
        (["stats"], &Method::GET) => reply(StatusCode::OK, "application/json", shared.stats_json()),
        (["stats"], _) => not_allowed("GET"),
        (["reload"], &Method::POST) => match shared.reload().await {
            Ok(summary) => reply(StatusCode::OK, "application/json", json_line(&summary)),
            Err(e) => error(400, &e),
        },
        (["reload"], _) => not_allowed("POST"),
        (["secrets"], &Method::GET) => {
            reply(StatusCode::OK, "application/json", json_line(&super::management::list(shared)))
        }
        (["secrets"], &Method::POST) => {
            let limited = http_body_util::Limited::new(request.into_body(), MAX_BODY);
            let body = match limited.collect().await {
                Ok(collected) => collected.to_bytes(),
                Err(_) => return error(413, "body larger than 64 KiB or unreadable"),
            };
            match super::management::add(shared, &body).await {
                Ok(added) => reply(
                    if added.created { StatusCode::CREATED } else { StatusCode::OK },
                    "application/json",
                    json_line(&serde_json::json!({ added.name: added.view })),
                ),
                Err(e) => error(e.status, &e.message),
            }
        }
        (["secrets"], &Method::PUT) => {
            let limited = http_body_util::Limited::new(request.into_body(), MAX_BODY);
            let body = match limited.collect().await {
                Ok(collected) => collected.to_bytes(),
                Err(_) => return error(413, "body larger than 64 KiB or unreadable"),
            };
            match super::management::replace(shared, &body).await {
                Ok(listing) => reply(StatusCode::OK, "application/json", json_line(&listing)),
                Err(e) => error(e.status, &e.message),
            }
        }
        (["secrets"], _) => not_allowed("GET, POST, PUT"),
        (["secrets", name], &Method::DELETE) => match super::management::remove(shared, name).await {
            Ok(()) => {
                reply(StatusCode::OK, "application/json", json_line(&serde_json::json!({ "removed": name })))
            }
            Err(e) => error(e.status, &e.message),
        },
        (["secrets", _], _) => not_allowed("DELETE"),
        (["secrets", name, "reset-quota"], &Method::POST) => {
            match super::management::reset_quota(shared, name).await {
                Ok(()) => reply(
                    StatusCode::OK,
                    "application/json",
                    json_line(&serde_json::json!({ "reset": name })),
                ),
                Err(e) => error(e.status, &e.message),
            }
        }
        (["secrets", _, "reset-quota"], _) => not_allowed("POST"),
        _ => error(404, "no such endpoint"),
    }
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
        let shared = shared.clone();
        async move { Ok::<_, Infallible>(respond(&shared, request).await) }
    });
    if let Err(e) =
        hyper::server::conn::http1::Builder::new().serve_connection(HyperIo(stream), service).await
    {
        debug!(error = %e, "stats API connection ended with an error");
    }
}
