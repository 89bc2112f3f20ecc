//! The public route Microsoft redirects the admin to, after signing in and after the consent
//! page. No bearer token: the signed, single-use `state` is what authenticates each leg. The
//! browser is only ever sent on to Microsoft's consent page (a URL we built for the proven
//! tenant) or back to the configured front end. A browser that cannot go on gets a page a
//! person can act on (`page`); API clients get problem+json.

mod page;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use time::OffsetDateTime;

use o365_domain::service::callback::{ConsentOutcome, ConsentRedirect};

use crate::ApiState;
use crate::problem::ApiError;

/// Query parameters are bounded: nothing legitimate is longer.
const MAX_PARAM_LEN: usize = 4096;

#[derive(Debug, Deserialize)]
pub struct CallbackQuery {
    state: Option<String>,
    code: Option<String>,
    admin_consent: Option<String>,
    tenant: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

pub async fn consent_callback(
    State(state): State<ApiState>,
    headers: HeaderMap,
    query: Result<Query<CallbackQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let browser = page::prefers_html(&headers);
    let invalid = || {
        if browser {
            return page::link_used_or_expired(&state.frontend);
        }
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
        &q.code,
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
        code: q.code,
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
        Ok(ConsentOutcome::Refused { reason, org }) => {
            let org = org.as_ref().map(|o| o.to_string());
            tracing::warn!(
                org = org.as_deref(),
                reason = reason.as_str(),
                "consent callback refused"
            );
            metrics::callback_refused(reason.as_str());
            invalid()
        }
        Ok(ConsentOutcome::ContinueToConsent(url)) => {
            tracing::info!("admin signed in; on to admin consent");
            see_other(&url)
        }
        Ok(outcome) => {
            let code = outcome.code();
            if let ConsentOutcome::Failed(_) = outcome {
                metrics::callback_refused(&code);
            }
            tracing::info!(outcome = code, "consent round trip ended");
            see_other(&state.frontend.connection_page(&code))
        }
        Err(e) => {
            let error = ApiError::from(e);
            if browser {
                page::could_not_finish(error.status(), &state.frontend)
            } else {
                error.into_response()
            }
        }
    }
}

/// One CloudWatch embedded-metric line per refused callback, by reason (no org: a flood of
/// forged requests must not mint a metric dimension per value an attacker chooses), in the
/// stage's namespace like the sync functions' metrics.
mod metrics {
    pub fn callback_refused(reason: &str) {
        let namespace = std::env::var("O365_METRICS_NAMESPACE")
            .ok()
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| "o365-sync".to_owned());
        let line = serde_json::json!({
            "_aws": {
                "Timestamp": time::OffsetDateTime::now_utc().unix_timestamp() * 1000,
                "CloudWatchMetrics": [{
                    "Namespace": namespace,
                    "Dimensions": [["Reason"]],
                    "Metrics": [{"Name": "ConsentCallbackRefused", "Unit": "Count"}]
                }]
            },
            "Reason": reason,
            "ConsentCallbackRefused": 1
        });
        println!("{line}");
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
