//! RFC 9457 problem details: every 4xx and 5xx of the API, with a stable `type`.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use o365_domain::{DomainError, Entity, FieldError, RuleViolation};

pub const PROBLEM_TYPE_BASE: &str = "https://o365-sync.dev/problems/";

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct FieldProblem {
    pub field: String,
    pub code: String,
    pub message: String,
}

impl From<&FieldError> for FieldProblem {
    fn from(e: &FieldError) -> Self {
        Self {
            field: e.field.clone(),
            code: e.code.to_owned(),
            message: e.message.clone(),
        }
    }
}

/// `application/problem+json` body.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Problem {
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errors: Option<Vec<FieldProblem>>,
}

/// The API's one error type; mapped to HTTP here and nowhere else.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    problem: Problem,
    bearer_challenge: bool,
}

impl ApiError {
    pub fn new(status: StatusCode, slug: &str, title: &str, detail: impl Into<String>) -> Self {
        Self {
            status,
            problem: Problem {
                kind: format!("{PROBLEM_TYPE_BASE}{slug}"),
                title: title.into(),
                status: status.as_u16(),
                detail: detail.into(),
                errors: None,
            },
            bearer_challenge: false,
        }
    }

    pub fn unauthenticated(detail: impl Into<String>) -> Self {
        let mut e = Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "Authentication required",
            detail,
        );
        e.bearer_challenge = true;
        e
    }

    pub fn malformed(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "malformed-request",
            "Malformed request",
            detail,
        )
    }

    pub fn invalid(errors: &[FieldError]) -> Self {
        let mut e = Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation-failed",
            "Some fields are invalid",
            errors
                .iter()
                .map(|e| e.message.as_str())
                .collect::<Vec<_>>()
                .join("; "),
        );
        e.problem.errors = Some(errors.iter().map(FieldProblem::from).collect());
        e
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }
}

impl From<DomainError> for ApiError {
    fn from(e: DomainError) -> Self {
        match e {
            DomainError::Invalid(errors) => Self::invalid(&errors),
            DomainError::NotFound(entity) => Self::new(
                StatusCode::NOT_FOUND,
                "not-found",
                "Not found",
                format!("the {entity} does not exist"),
            ),
            DomainError::AlreadyExists(Entity::User) => Self::new(
                StatusCode::CONFLICT,
                "already-exists",
                "Already exists",
                "a user with this email already exists in the organisation (emails are compared case-insensitively)",
            ),
            DomainError::AlreadyExists(entity) => Self::new(
                StatusCode::CONFLICT,
                "already-exists",
                "Already exists",
                format!("the {entity} already exists"),
            ),
            DomainError::Conflict(entity) => Self::new(
                StatusCode::CONFLICT,
                "version-conflict",
                "Changed by someone else",
                format!(
                    "the {entity} was changed since you read it; reload it and apply your change again"
                ),
            ),
            DomainError::Rule(rule) => {
                let slug = match rule {
                    RuleViolation::LastAdmin => "last-admin",
                    RuleViolation::PrimaryMustBeAdmin => "primary-must-be-admin",
                    RuleViolation::PrimaryLocked => "primary-locked",
                    RuleViolation::TenantInUse => "tenant-in-use",
                };
                Self::new(
                    StatusCode::CONFLICT,
                    slug,
                    "Not allowed by the organisation's rules",
                    rule.to_string(),
                )
            }
            DomainError::Forbidden(why) => {
                Self::new(StatusCode::FORBIDDEN, "forbidden", "Forbidden", why)
            }
            DomainError::Precondition(why) => Self::new(
                StatusCode::CONFLICT,
                "precondition-failed",
                "Not possible right now",
                why,
            ),
            DomainError::Unavailable(why) => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "Temporarily unavailable",
                why,
            ),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::to_vec(&self.problem).unwrap_or_default();
        let mut response = (self.status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if self.bearer_challenge {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(r#"Bearer error="invalid_token""#),
            );
        }
        response
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
