//! The public route Microsoft redirects the admin to after the consent page. No bearer token:
//! the signed, single-use `state` is what authenticates the round trip.

use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use time::OffsetDateTime;

use o365_domain::service::connection::{ConsentOutcome, ConsentRedirect};

use crate::ApiState;
use crate::problem::ApiError;

/// Query parameters are bounded: nothing legitimate is longer.
const MAX_PARAM_LEN: usize = 4096;

#[derive(Debug, Deserialize)]
pub struct CallbackQuery {
    state: Option<String>,
    admin_consent: Option<String>,
    tenant: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

pub async fn consent_callback(
    State(state): State<ApiState>,
    query: Result<Query<CallbackQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let invalid = || {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid-consent-request",
            "Invalid or expired request",
            "This consent link is invalid, expired or was already used. Start again from Connection Settings → Activate.",
        )
        .into_response()
    };
    let Ok(Query(q)) = query else {
        return invalid();
    };
    let too_long = [
        &q.state,
        &q.admin_consent,
        &q.tenant,
        &q.error,
        &q.error_description,
    ]
    .iter()
    .any(|v| v.as_ref().is_some_and(|s| s.len() > MAX_PARAM_LEN));
    if too_long {
        return invalid();
    }
    let redirect = ConsentRedirect {
        state: q.state,
        admin_consent: q.admin_consent,
        tenant: q.tenant,
        error: q.error,
        error_description: q.error_description,
    };
    match state
        .services
        .complete_consent(redirect, OffsetDateTime::now_utc())
        .await
    {
        Ok(ConsentOutcome::InvalidRequest) => invalid(),
        Ok(outcome) => {
            tracing::info!(outcome = outcome.code(), "admin consent completed");
            see_other(&state.frontend.connection_page(outcome.code()))
        }
        Err(e) => ApiError::from(e).into_response(),
    }
}

fn see_other(location: &str) -> Response {
    (
        StatusCode::SEE_OTHER,
        [
            (header::LOCATION, location.to_owned()),
            (header::CACHE_CONTROL, "no-store".to_owned()),
        ],
    )
        .into_response()
}
