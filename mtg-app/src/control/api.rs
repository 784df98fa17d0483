//! The stats HTTP API on `api-bind-to` (served by [`http_server`](super::http_server)):
//! `GET /stats` returns the mtg-multi JSON (`?scope=cluster`: the fleet's, and `GET /cluster`
//! the live instances, with `[cluster]`); `/reload`, `/secrets` and `/adtag` manage the
//! users and ad tags ([`management`](super::management)); `/`, `/panel.js` and `/panel.css`
//! are the web panel and `GET /secrets/NAME/links` its share links and QR codes
//! ([`panel`](super::panel)); other paths 404, other methods 405. Every error
//! is a JSON body `{"error": "..."}`.

use std::sync::Arc;

use super::Control;
use super::http_server::{Handler, Method, Request, Response, StatusCode};

/// The API's [`Handler`].
#[derive(Clone)]
pub(crate) struct Api(pub(crate) Arc<Control>);

impl Handler for Api {
    fn handle(&self, request: Request) -> impl Future<Output = Response> + Send {
        let control = Arc::clone(&self.0);
        async move { super::panel::secure(respond(&control, request).await) }
    }
}

/// Whether the request carries the configured bearer token (compared in constant time,
/// whatever its length: see [`ApiToken::matches`](crate::config::ApiToken::matches)).
fn authorized(control: &Control, header: Option<&str>) -> bool {
    let Some(token) = &control.config().api_token else { return true };
    let Some(given) = header.and_then(|h| h.strip_prefix("Bearer ")) else {
        return false;
    };
    token.matches(given.as_bytes())
}

fn reply(status: StatusCode, content_type: &'static str, body: String) -> Response {
    Response::new(status, content_type, body)
}

fn error(status: u16, message: &str) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    super::http_server::json_error(status, message)
}

fn not_allowed(allow: &'static str) -> Response {
    let mut response = error(405, &format!("method not allowed; allowed: {allow}"));
    response.insert_header("allow", allow);
    response
}

/// The answer to one API request (the body is looked at only by routes that take one).
pub(crate) async fn respond(control: &Control, request: Request) -> Response {
    // The panel's page, script and style hold no data: they load without the token.
    if matches!(request.method(), Method::Get | Method::Head)
        && let Some(asset) = super::panel::asset(request.path())
    {
        return asset;
    }
    if !authorized(control, request.header("authorization")) {
        let mut response = error(401, "missing or wrong bearer token");
        response.insert_header("www-authenticate", "Bearer");
        return response;
    }
    let method = request.method();
    let path = request.path().to_owned();
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    match (segments.as_slice(), &method) {
        (["stats"], &Method::GET) if request.has_query("scope", "cluster") => {
            match control.cluster_stats_json() {
                Some(body) => reply(StatusCode::OK, "application/json", body),
                None => error(404, "no [cluster] configured: /stats?scope=cluster needs fleet mode"),
            }
        }
        (["stats"], &Method::GET) => reply(StatusCode::OK, "application/json", control.stats_json()),
        (["stats"], _) => not_allowed("GET"),
        (["cluster"], &Method::GET) => match control.cluster_json() {
            Some(body) => reply(StatusCode::OK, "application/json", body),
            None => error(404, "no [cluster] configured"),
        },
        (["cluster"], _) => not_allowed("GET"),
        (["reload"], &Method::POST) => match control.reload().await {
            Ok(summary) => reply(StatusCode::OK, "application/json", json_line(&summary)),
            Err(e) => error(400, &e),
        },
        (["reload"], _) => not_allowed("POST"),
        (["secrets"], &Method::GET) => {
            reply(StatusCode::OK, "application/json", json_line(&super::management::list(control)))
        }
        (["secrets"], &Method::POST) => {
            let Ok(body) = request.body() else {
                return error(413, "body larger than 64 KiB or unreadable");
            };
            match super::management::add(control, body).await {
                Ok(added) => reply(
                    if added.created { StatusCode::CREATED } else { StatusCode::OK },
                    "application/json",
                    json_line(&serde_json::json!({ added.name: added.view })),
                ),
                Err(e) => error(e.status, &e.message),
            }
        }
        (["secrets"], &Method::PUT) => {
            let Ok(body) = request.body() else {
                return error(413, "body larger than 64 KiB or unreadable");
            };
            match super::management::replace(control, body).await {
                Ok(listing) => reply(StatusCode::OK, "application/json", json_line(&listing)),
                Err(e) => error(e.status, &e.message),
            }
        }
        (["secrets"], _) => not_allowed("GET, POST, PUT"),
        (["secrets", name], &Method::DELETE) => match super::management::remove(control, name).await {
            Ok(()) => {
                reply(StatusCode::OK, "application/json", json_line(&serde_json::json!({ "removed": name })))
            }
            Err(e) => error(e.status, &e.message),
        },
        (["secrets", _], _) => not_allowed("DELETE"),
        (["secrets", name, "reset-quota"], &Method::POST) => {
            match super::management::reset_quota(control, name).await {
                Ok(()) => reply(
                    StatusCode::OK,
                    "application/json",
                    json_line(&serde_json::json!({ "reset": name })),
                ),
                Err(e) => error(e.status, &e.message),
            }
        }
        (["secrets", _, "reset-quota"], _) => not_allowed("POST"),
        (["secrets", name, "links"], &Method::GET) => {
            match super::panel::links(control, name, request.header("host")) {
                Ok(links) => reply(StatusCode::OK, "application/json", json_line(&links)),
                Err(e) => error(e.status, &e.message),
            }
        }
        (["secrets", _, "links"], _) => not_allowed("GET"),
        (["adtag"], &Method::GET) => {
            reply(StatusCode::OK, "application/json", json_line(&super::management::get_ad_tag(control)))
        }
        (["adtag"], &Method::PUT) => {
            let Ok(body) = request.body() else {
                return error(413, "body larger than 64 KiB or unreadable");
            };
            status_ok(super::management::set_ad_tag(control, body).await)
        }
        (["adtag"], &Method::DELETE) => status_ok(super::management::delete_ad_tag(control).await),
        (["adtag"], _) => not_allowed("GET, PUT, DELETE"),
        _ => error(404, "no such endpoint"),
    }
}

/// `{"status":"ok"}` (mtg-multi's answer to `PUT`/`DELETE /adtag`), or the error.
fn status_ok(result: Result<(), super::management::ApiError>) -> Response {
    match result {
        Ok(()) => {
            reply(StatusCode::OK, "application/json", json_line(&serde_json::json!({ "status": "ok" })))
        }
        Err(e) => error(e.status, &e.message),
    }
}

fn json_line(value: &impl serde::Serialize) -> String {
    // Serialising plain structs and strings cannot fail.
    let mut text = serde_json::to_string(value).unwrap_or_default();
    text.push('\n');
    text
}
