//! OpenID Connect metadata: `/{tenant}/v2.0/.well-known/openid-configuration` and the JWKS
//! (`/{tenant}/discovery/v2.0/keys`, `/discovery/v2.0/keys`).

use std::sync::Arc;

use axum::extract::Request;
use axum::http::HeaderValue;
use serde_json::json;

use crate::errors::{Resp, aad_error, json_response};
use crate::throttle::Endpoint;
use crate::{Shared, SimHandle};

/// The tenant id of personal Microsoft accounts (what `/consumers` documents name).
pub const MSA_TENANT_ID: &str = "9188040d-6c67-4c5b-b112-36a304b66dad";

/// Which tenant a metadata path names: its id, or Microsoft's `{tenantid}` placeholder for
/// the multi-tenant segments. None: unknown tenant.
fn issuer_tenant(shared: &Shared, seg: &str) -> Option<String> {
    match seg.to_ascii_lowercase().as_str() {
        "organizations" | "common" => Some("{tenantid}".to_string()),
        "consumers" => Some(MSA_TENANT_ID.to_string()),
        _ => shared.lock().find_tenant(seg).map(|t| t.to_string()),
    }
}

fn unknown_tenant(shared: &Shared, seg: &str, req: &Request) -> Resp {
    aad_error(
        &shared.base_url,
        400,
        "invalid_tenant",
        90002,
        &(crate::errors::tenant_not_found(seg) + crate::errors::TENANT_NOT_FOUND_HINT),
        req.headers(),
    )
}

/// Count the request; while `set_oidc_down(true)` the answer is a 503.
fn gate(shared: &Shared, ep: Endpoint, req: &Request) -> Option<Resp> {
    let mut st = shared.lock();
    st.throttle.count(ep, None);
    st.oidc_down.then(|| {
        aad_error(
            &shared.base_url,
            503,
            "temporarily_unavailable",
            90033,
            "A transient error has occurred. Please try again.",
            req.headers(),
        )
    })
}

fn metadata_response(body: String) -> Resp {
    let mut r = json_response(200, body, "application/json; charset=utf-8");
    let h = r.headers_mut();
    h.insert(
        "cache-control",
        HeaderValue::from_static("max-age=86400, private"),
    );
    h.insert("access-control-allow-origin", HeaderValue::from_static("*"));
    r
}

pub(crate) async fn configuration(shared: Arc<Shared>, seg: String, req: Request) -> Resp {
    if let Some(r) = gate(&shared, Endpoint::OpenIdConfig, &req) {
        return r;
    }
    let Some(tid) = issuer_tenant(&shared, &seg) else {
        return unknown_tenant(&shared, &seg, &req);
    };
    let base = &shared.base_url;
    // Tenant-specific documents name the tenant id in every URL, as Microsoft's do.
    let t = if tid.starts_with('{') {
        seg.as_str()
    } else {
        &tid
    };
    let doc = json!({
        "token_endpoint": format!("{base}/{t}/oauth2/v2.0/token"),
        "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt"],
        "jwks_uri": format!("{base}/{t}/discovery/v2.0/keys"),
        "response_modes_supported": ["query"],
        "subject_types_supported": ["pairwise"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "response_types_supported": ["code"],
        "scopes_supported": ["openid", "profile", "email", "offline_access"],
        "issuer": format!("{base}/{tid}/v2.0"),
        "request_uri_parameter_supported": false,
        "authorization_endpoint": format!("{base}/{t}/oauth2/v2.0/authorize"),
        "claims_supported": [
            "sub", "iss", "aud", "exp", "iat", "nbf", "nonce", "preferred_username", "name",
            "tid", "oid", "ver", "email", "wids", "uti"
        ],
        "tenant_region_scope": null,
        "cloud_instance_name": "microsoftonline.com",
        "msgraph_host": "graph.microsoft.com",
    });
    metadata_response(doc.to_string())
}

pub(crate) async fn keys(shared: Arc<Shared>, seg: Option<String>, req: Request) -> Resp {
    if let Some(r) = gate(&shared, Endpoint::Jwks, &req) {
        return r;
    }
    let seg = seg.unwrap_or_else(|| "common".to_string());
    let Some(tid) = issuer_tenant(&shared, &seg) else {
        return unknown_tenant(&shared, &seg, &req);
    };
    let issuer = format!("{}/{tid}/v2.0", shared.base_url);
    let published = shared.lock().ring.published.clone();
    let keys: Vec<serde_json::Value> = published
        .iter()
        .map(|k| shared.keys.ring[*k].jwk(&issuer))
        .collect();
    metadata_response(json!({ "keys": keys }).to_string())
}

impl SimHandle {
    /// `{base}/{tenant}/v2.0/.well-known/openid-configuration`.
    pub fn openid_configuration_url(&self, tenant: &str) -> String {
        format!(
            "{}/{tenant}/v2.0/.well-known/openid-configuration",
            self.base_url()
        )
    }

    /// `{base}/{tenant}/discovery/v2.0/keys`.
    pub fn jwks_url(&self, tenant: &str) -> String {
        format!("{}/{tenant}/discovery/v2.0/keys", self.base_url())
    }

    /// Make discovery and the JWKS answer 503 (an outage of the metadata endpoints).
    pub fn set_oidc_down(&self, down: bool) {
        self.shared.lock().oidc_down = down;
    }
}
