//! Microsoft-shaped error responses: identity platform (AADSTS) and Graph.

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, Response, StatusCode};
use uuid::Uuid;

use crate::util::{aad_time, now};

pub(crate) type Resp = Response<Body>;

pub(crate) fn json_response(status: u16, body: String, content_type: &'static str) -> Resp {
    let mut r = Response::new(Body::from(body));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    r.headers_mut()
        .insert("content-type", HeaderValue::from_static(content_type));
    r
}

/// Token-endpoint error: `{"error","error_description","error_codes","timestamp","trace_id","correlation_id","error_uri"}`.
pub(crate) fn aad_error(
    base: &str,
    status: u16,
    error: &str,
    code: u32,
    message: &str,
    headers: &HeaderMap,
) -> Resp {
    let trace = Uuid::new_v4();
    let correlation = headers
        .get("client-request-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|s| Uuid::parse_str(s).ok())
        .unwrap_or_else(Uuid::new_v4);
    let ts = aad_time(now());
    let body = serde_json::json!({
        "error": error,
        "error_description": format!("AADSTS{code}: {message}\r\nTrace ID: {trace}\r\nCorrelation ID: {correlation}\r\nTimestamp: {ts}"),
        "error_codes": [code],
        "timestamp": ts,
        "trace_id": trace.to_string(),
        "correlation_id": correlation.to_string(),
        "error_uri": format!("{base}/error?code={code}"),
    });
    let mut r = json_response(status, body.to_string(), "application/json; charset=utf-8");
    let h = r.headers_mut();
    h.insert(
        "cache-control",
        HeaderValue::from_static("no-store, no-cache"),
    );
    if let Ok(v) = HeaderValue::from_str(&trace.to_string()) {
        h.insert("x-ms-request-id", v);
    }
    if status == 401 {
        h.insert(
            "www-authenticate",
            HeaderValue::from_static("Basic realm=\"\""),
        );
    }
    r
}

/// Per-request Graph identifiers: `request-id` (ours) and `client-request-id` (echoed).
#[derive(Clone)]
pub(crate) struct GraphIds {
    pub request_id: String,
    pub client_request_id: String,
}

impl GraphIds {
    pub fn new(headers: &HeaderMap) -> Self {
        let request_id = Uuid::new_v4().to_string();
        let client_request_id = headers
            .get("client-request-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
            .unwrap_or_else(|| request_id.clone());
        GraphIds {
            request_id,
            client_request_id,
        }
    }

    pub fn apply(&self, r: &mut Resp) {
        let h = r.headers_mut();
        if let Ok(v) = HeaderValue::from_str(&self.request_id) {
            h.insert("request-id", v);
        }
        if let Ok(v) = HeaderValue::from_str(&self.client_request_id) {
            h.insert("client-request-id", v);
        }
        h.insert(
            "x-ms-ags-diagnostic",
            HeaderValue::from_static(r#"{"ServerInfo":{"DataCenter":"Sim","Slice":"E","Ring":"5","ScaleUnit":"000","RoleInstance":"MS-SIM"}}"#),
        );
        h.insert("cache-control", HeaderValue::from_static("no-cache"));
        h.insert(
            "strict-transport-security",
            HeaderValue::from_static("max-age=31536000"),
        );
    }
}

/// Graph error: `{"error":{"code","message","innerError":{"date","request-id","client-request-id"}}}`.
pub(crate) fn graph_error(ids: &GraphIds, status: u16, code: &str, message: &str) -> Resp {
    let body = serde_json::json!({
        "error": {
            "code": code,
            "message": message,
            "innerError": {
                "date": crate::util::graph_time(now()),
                "request-id": ids.request_id,
                "client-request-id": ids.client_request_id,
            }
        }
    });
    let mut r = json_response(status, body.to_string(), "application/json");
    ids.apply(&mut r);
    if status == 401 {
        r.headers_mut().insert(
            "www-authenticate",
            HeaderValue::from_static(
                "Bearer realm=\"\", authorization_uri=\"https://login.microsoftonline.com/common/oauth2/authorize\", client_id=\"00000003-0000-0000-c000-000000000000\"",
            ),
        );
    }
    r
}

/// AADSTS90002's message (the interactive endpoints' and the authorization-code grant's
/// wording; the others append `TENANT_NOT_FOUND_HINT`).
pub(crate) fn tenant_not_found(tenant_seg: &str) -> String {
    format!(
        "Tenant '{tenant_seg}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud."
    )
}

/// What the client-credentials grant and the metadata endpoints add to `tenant_not_found`.
pub(crate) const TENANT_NOT_FOUND_HINT: &str = " Check with your subscription administrator, this may happen if there are no active subscriptions for the tenant.";

/// AADSTS700016's message: no app registration `client_id` (as the request spelled it).
pub(crate) fn app_not_found(client_id: &str, directory: &str) -> String {
    format!(
        "Application with identifier '{client_id}' was not found in the directory '{directory}'. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You may have sent your authentication request to the wrong tenant."
    )
}
