//! Erasure of one person by address (a data subject's request): `POST /v1/erasures`.

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::ToSchema;

use crate::ApiState;
use crate::extract::{ApiJson, Caller};
use crate::problem::{ApiResult, Problem};

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ErasureRequest {
    /// The person's email address (someone outside the org's own domains).
    pub address: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErasureDto {
    pub address: String,
    /// Archived messages deleted by this call, across the org's mailboxes.
    pub deleted: u64,
    /// The mailboxes they were in.
    pub mailboxes: Vec<String>,
    /// Nothing of the person is left; if false, call again to go on.
    pub complete: bool,
    /// This call added the address to the capture policy's excluded addresses (so the sync
    /// keeps their mail out from now on).
    pub excluded_now: bool,
}

#[utoipa::path(post, path = "/v1/erasures", tag = "mail", request_body = ErasureRequest,
    responses((status = 200, description = "Deleted every archived message the person sent, received or was copied on, in every mailbox of the org, and excluded the address from capture; audited. Call again while `complete` is false; repeat after a sync interval to confirm nothing came back", body = ErasureDto),
        (status = 401, description = "Missing or invalid bearer token (problem+json)", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Admins only (problem+json)", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The capture policy changed meanwhile, or its exclusion list is full (problem+json)", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Not an email address (problem+json)", body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn erase_person(
    State(state): State<ApiState>,
    caller: Caller,
    ApiJson(body): ApiJson<ErasureRequest>,
) -> ApiResult<Json<ErasureDto>> {
    let report = state
        .services
        .erase_person(&caller.0, &body.address, OffsetDateTime::now_utc())
        .await?;
    Ok(Json(ErasureDto {
        address: report.address.key().to_owned(),
        deleted: report.deleted,
        mailboxes: report
            .mailboxes
            .iter()
            .map(|m| m.key().to_owned())
            .collect(),
        complete: report.complete,
        excluded_now: report.excluded_now,
    }))
}
