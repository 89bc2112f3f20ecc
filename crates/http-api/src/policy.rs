//! The capture policy over HTTP: what the org keeps out of its archive.

use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::IntoResponse;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::ToSchema;

use o365_domain::capture_policy::{CapturePolicy, CapturePolicyChange};

use crate::ApiState;
use crate::extract::{ApiJson, Caller, etag, expected_version};
use crate::problem::{ApiResult, Problem};

#[derive(Debug, Serialize, ToSchema)]
pub struct CapturePolicyDto {
    /// Mail involving any address in these domains (or their subdomains) is never archived.
    pub excluded_domains: Vec<String>,
    /// Mail involving any of these addresses is never archived.
    pub excluded_addresses: Vec<String>,
    /// Skip mail whose participants are all in `internal_domains`.
    pub skip_internal: bool,
    pub internal_domains: Vec<String>,
    /// Captured mail is deleted this many days after it was received (null: kept).
    pub retention_days: Option<u32>,
    /// Send back as `version` (or `If-Match`) when changing the policy.
    pub version: u64,
}

impl From<&CapturePolicy> for CapturePolicyDto {
    fn from(p: &CapturePolicy) -> Self {
        Self {
            excluded_domains: p.excluded_domains.clone(),
            excluded_addresses: p.excluded_addresses.iter().map(|a| a.to_string()).collect(),
            skip_internal: p.skip_internal,
            internal_domains: p.internal_domains.clone(),
            retention_days: p.retention_days,
            version: p.version,
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CapturePolicyRequest {
    #[serde(default)]
    pub excluded_domains: Vec<String>,
    #[serde(default)]
    pub excluded_addresses: Vec<String>,
    #[serde(default)]
    pub skip_internal: bool,
    #[serde(default)]
    pub internal_domains: Vec<String>,
    /// 1 to 3650 days; null or absent keeps mail.
    pub retention_days: Option<u32>,
    /// The version you read (alternatively send `If-Match`).
    pub version: Option<u64>,
}

#[utoipa::path(get, path = "/v1/integration/capture-policy", tag = "integration",
    responses((status = 200, description = "What the org keeps out of its archive", body = CapturePolicyDto, headers(("ETag" = String, description = "the policy's version, quoted: send it back as If-Match"))),
        (status = 401, description = "Missing or invalid bearer token (problem+json)", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Admins only (problem+json)", body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn get_capture_policy(
    State(state): State<ApiState>,
    caller: Caller,
) -> ApiResult<impl IntoResponse> {
    let policy = state.services.capture_policy(&caller.0).await?;
    Ok((etag(policy.version), Json(CapturePolicyDto::from(&policy))))
}

#[utoipa::path(put, path = "/v1/integration/capture-policy", tag = "integration", request_body = CapturePolicyRequest,
    params(("If-Match" = Option<String>, Header, description = "the policy version you read, quoted")),
    responses((status = 200, description = "Saved; applies to captures from now on", body = CapturePolicyDto, headers(("ETag" = String, description = "the policy's version, quoted: send it back as If-Match"))),
        (status = 401, description = "Missing or invalid bearer token (problem+json)", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Admins only (problem+json)", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Changed by someone else (problem+json)", body = Problem, content_type = "application/problem+json"),
        (status = 412, description = "If-Match no longer matches the policy's ETag (problem+json)", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Some entries are invalid (problem+json)", body = Problem, content_type = "application/problem+json"),
        (status = 428, description = "Send the version you read (problem+json)", body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn put_capture_policy(
    State(state): State<ApiState>,
    caller: Caller,
    headers: HeaderMap,
    ApiJson(body): ApiJson<CapturePolicyRequest>,
) -> ApiResult<impl IntoResponse> {
    let expected = expected_version(&headers, body.version)?;
    let change = CapturePolicyChange {
        excluded_domains: body.excluded_domains,
        excluded_addresses: body.excluded_addresses,
        skip_internal: body.skip_internal,
        internal_domains: body.internal_domains,
        retention_days: body.retention_days,
    };
    let policy = state
        .services
        .set_capture_policy(
            &caller.0,
            change,
            expected.version,
            OffsetDateTime::now_utc(),
        )
        .await
        .map_err(|e| expected.refusal(e))?;
    Ok((etag(policy.version), Json(CapturePolicyDto::from(&policy))))
}
