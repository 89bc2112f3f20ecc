//! Request extractors whose failures are problem+json: the caller, JSON bodies, versions.

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use serde::de::DeserializeOwned;

use o365_domain::service::access::Principal;

use crate::ApiState;
use crate::problem::ApiError;

/// The authenticated caller, with role and Primary from our records.
pub struct Caller(pub Principal);

impl FromRequestParts<ApiState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &ApiState) -> Result<Self, ApiError> {
        let authorization = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        let identity = state.auth.verify(authorization).await?;
        let principal = Principal::load(
            state.services.store.as_ref(),
            &identity.org,
            &identity.email,
        )
        .await?;
        Ok(Caller(principal))
    }
}

/// Query parameters; values of the wrong shape (e.g. `limit=-1`) are a problem+json 400.
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Query(v)| ApiQuery(v))
            .map_err(|e| ApiError::malformed(e.body_text()))
    }
}

/// A JSON body; malformed JSON is a 400, a body of the wrong shape a 422, too large a 413.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(ApiJson(v)),
            Err(JsonRejection::JsonDataError(e)) => Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "validation-failed",
                "Some fields are invalid",
                e.body_text(),
            )),
            Err(JsonRejection::MissingJsonContentType(_)) => Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported-media-type",
                "Unsupported media type",
                "send the body as application/json",
            )),
            Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too-large",
                "Request too large",
                "the request body is larger than this API accepts",
            )),
            Err(e) => Err(ApiError::malformed(e.body_text())),
        }
    }
}

/// The version a change is based on, and how the caller sent it.
#[derive(Debug, Clone, Copy)]
pub struct Expected {
    pub version: u64,
    via_if_match: bool,
}

impl Expected {
    /// A change refused because the version is stale is 412 when the caller made it
    /// conditional with `If-Match` (RFC 9110 §13.1.1), 409 when the version came in the body.
    pub fn refusal(&self, e: o365_domain::DomainError) -> ApiError {
        match e {
            o365_domain::DomainError::Conflict(entity) if self.via_if_match => ApiError::new(
                StatusCode::PRECONDITION_FAILED,
                "version-conflict",
                "Changed by someone else",
                format!(
                    "the {entity} was changed since you read it (If-Match no longer matches its ETag); reload it and apply your change again"
                ),
            ),
            e => ApiError::from(e),
        }
    }
}

/// The version a change is based on: the body's `version`, or `If-Match: "<version>"`.
pub fn expected_version(
    headers: &axum::http::HeaderMap,
    body_version: Option<u64>,
) -> Result<Expected, ApiError> {
    if let Some(v) = body_version {
        return Ok(Expected {
            version: v,
            via_if_match: false,
        });
    }
    let Some(value) = headers.get(header::IF_MATCH) else {
        return Err(ApiError::new(
            StatusCode::PRECONDITION_REQUIRED,
            "version-required",
            "Version required",
            "send the version you read, as \"version\" in the body or as an If-Match header",
        ));
    };
    value
        .to_str()
        .ok()
        .map(|s| s.trim().trim_start_matches("W/").trim_matches('"'))
        .and_then(|s| s.parse().ok())
        .map(|version| Expected {
            version,
            via_if_match: true,
        })
        .ok_or_else(|| ApiError::malformed("If-Match must be the quoted version, e.g. \"3\""))
}

pub fn etag(version: u64) -> [(header::HeaderName, String); 1] {
    [(header::ETAG, format!("\"{version}\""))]
}
