//! Microsoft's error bodies, classified into our failure catalogue by code (never by text, with
//! the one documented exception of "Access to OData is disabled.").

use o365_domain::failure::FailureCode;
use o365_domain::microsoft::MicrosoftError;
use serde::Deserialize;

/// The identity platform's error body.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct TokenErrorBody {
    #[serde(default)]
    pub error: String,
    #[serde(default)]
    pub error_description: String,
    #[serde(default)]
    pub error_codes: Vec<u64>,
}

/// What a token error means for the caller.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum TokenRefusal {
    /// The credential was refused: read it again once, then report.
    BadCredential(MicrosoftError),
    /// Anything else: report at once.
    Final(MicrosoftError),
}

pub(crate) fn classify_token_error(status: u16, body: &str) -> Option<TokenRefusal> {
    let parsed: TokenErrorBody = serde_json::from_str(body).ok()?;
    if parsed.error.is_empty() && parsed.error_codes.is_empty() {
        return None;
    }
    let first = parsed.error_codes.first().copied();
    let microsoft_code = match first {
        Some(c) => format!("AADSTS{c}"),
        None => parsed.error.clone(),
    };
    let has = |codes: &[u64]| parsed.error_codes.iter().any(|c| codes.contains(c));
    let refused = |code| {
        MicrosoftError::refused(
            code,
            microsoft_code.clone(),
            parsed.error_description.clone(),
        )
    };
    Some(if has(&[7000215, 7000222]) {
        TokenRefusal::BadCredential(refused(FailureCode::InvalidCredential))
    } else if has(&[700016, 7000229, 65001]) {
        TokenRefusal::Final(refused(FailureCode::ConsentRequired))
    } else if has(&[90002]) {
        TokenRefusal::Final(refused(FailureCode::TenantNotFound))
    } else if has(&[53003]) {
        TokenRefusal::Final(refused(FailureCode::ConditionalAccessBlocked))
    } else if parsed.error == "invalid_client" {
        // Other credential problems (e.g. a certificate assertion the tenant rejects).
        TokenRefusal::BadCredential(refused(FailureCode::InvalidCredential))
    } else if status >= 500 {
        return None;
    } else {
        TokenRefusal::Final(refused(FailureCode::ConsentFailed))
    })
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct GraphErrorBody {
    #[serde(default)]
    pub error: GraphError,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct GraphError {
    #[serde(default)]
    pub code: String,
    #[serde(default)]
    pub message: String,
}

/// What one failed Graph answer means.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum GraphRefusal {
    /// The bearer token was not accepted (expired, revoked): drop it and try once more.
    TokenRejected(String),
    Final(MicrosoftError),
}

/// Which call got the error: a directory lookup or a mailbox (delta) call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CallKind {
    Directory,
    Mailbox,
}

/// Classifies a 4xx Graph answer (not 429/5xx, which the retry loop owns).
pub(crate) fn classify_graph_error(status: u16, body: &str, kind: CallKind) -> GraphRefusal {
    let parsed: GraphErrorBody = serde_json::from_str(body).unwrap_or_default();
    let GraphError { code, message } = parsed.error;
    let refused =
        |f| GraphRefusal::Final(MicrosoftError::refused(f, code.clone(), message.clone()));
    if status == 410 || code == "SyncStateNotFound" || code.eq_ignore_ascii_case("resyncRequired") {
        return GraphRefusal::Final(MicrosoftError::SyncStateExpired);
    }
    match (status, code.as_str()) {
        (401, "Authorization_IdentityNotFound") => {
            refused(FailureCode::AuthorizationIdentityNotFound)
        }
        (401, _) => GraphRefusal::TokenRejected(code.clone()),
        (403, "Authorization_RequestDenied") => refused(FailureCode::InsufficientPrivileges),
        // The one place Microsoft's text decides: the protocol gives no other signal for an
        // application access policy.
        (403, "ErrorAccessDenied") if message.trim() == "Access to OData is disabled." => {
            refused(FailureCode::MailboxAccessPolicy)
        }
        (403, "ErrorAccessDenied") => refused(FailureCode::InsufficientPrivileges),
        (404, "ErrorInvalidUser") => refused(FailureCode::UserNotFound),
        (404, "Request_ResourceNotFound") if kind == CallKind::Directory => {
            refused(FailureCode::UserNotFound)
        }
        (404, "MailboxNotEnabledForRESTAPI") => refused(FailureCode::MailboxNotEnabled),
        (404, "ResourceNotFound") if kind == CallKind::Mailbox => {
            refused(FailureCode::MailboxNotEnabled)
        }
        (403, _) => refused(FailureCode::InsufficientPrivileges),
        _ => GraphRefusal::Final(MicrosoftError::Unavailable {
            message: format!("Graph answered {status} {code}: {message}"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code_of(r: GraphRefusal) -> FailureCode {
        match r {
            GraphRefusal::Final(MicrosoftError::Refused { code, .. }) => code,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn token_codes_map_to_the_catalogue() {
        let body = |c: u64, e: &str| {
            format!(
                r#"{{"error":"{e}","error_description":"AADSTS{c}: words","error_codes":[{c}]}}"#
            )
        };
        let cases = [
            (7000215, "invalid_client", FailureCode::InvalidCredential),
            (7000222, "invalid_client", FailureCode::InvalidCredential),
            (700016, "unauthorized_client", FailureCode::ConsentRequired),
            (7000229, "invalid_client", FailureCode::ConsentRequired),
            (65001, "invalid_grant", FailureCode::ConsentRequired),
            (90002, "invalid_tenant", FailureCode::TenantNotFound),
            (
                53003,
                "access_denied",
                FailureCode::ConditionalAccessBlocked,
            ),
        ];
        for (n, e, want) in cases {
            let got = match classify_token_error(400, &body(n, e)).unwrap() {
                TokenRefusal::BadCredential(m) | TokenRefusal::Final(m) => m,
            };
            match got {
                MicrosoftError::Refused {
                    code,
                    microsoft_code,
                    message,
                } => {
                    assert_eq!(code, want, "{n}");
                    assert_eq!(microsoft_code, format!("AADSTS{n}"));
                    assert_eq!(message, format!("AADSTS{n}: words"));
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn graph_codes_map_to_the_catalogue() {
        let b = |c: &str, m: &str| format!(r#"{{"error":{{"code":"{c}","message":"{m}"}}}}"#);
        use CallKind::*;
        assert_eq!(
            code_of(classify_graph_error(
                401,
                &b("Authorization_IdentityNotFound", "x"),
                Mailbox
            )),
            FailureCode::AuthorizationIdentityNotFound
        );
        assert_eq!(
            code_of(classify_graph_error(
                403,
                &b("Authorization_RequestDenied", "x"),
                Directory
            )),
            FailureCode::InsufficientPrivileges
        );
        assert_eq!(
            code_of(classify_graph_error(
                403,
                &b("ErrorAccessDenied", "Access to OData is disabled."),
                Mailbox
            )),
            FailureCode::MailboxAccessPolicy
        );
        assert_eq!(
            code_of(classify_graph_error(
                403,
                &b(
                    "ErrorAccessDenied",
                    "Access is denied. Check credentials and try again."
                ),
                Mailbox
            )),
            FailureCode::InsufficientPrivileges
        );
        assert_eq!(
            code_of(classify_graph_error(
                404,
                &b("ErrorInvalidUser", "x"),
                Mailbox
            )),
            FailureCode::UserNotFound
        );
        assert_eq!(
            code_of(classify_graph_error(
                404,
                &b("MailboxNotEnabledForRESTAPI", "x"),
                Mailbox
            )),
            FailureCode::MailboxNotEnabled
        );
        assert_eq!(
            code_of(classify_graph_error(
                404,
                &b("ResourceNotFound", "x"),
                Mailbox
            )),
            FailureCode::MailboxNotEnabled
        );
        assert_eq!(
            classify_graph_error(410, &b("SyncStateNotFound", "x"), Mailbox),
            GraphRefusal::Final(MicrosoftError::SyncStateExpired)
        );
        assert_eq!(
            classify_graph_error(410, "", Mailbox),
            GraphRefusal::Final(MicrosoftError::SyncStateExpired)
        );
        assert!(matches!(
            classify_graph_error(401, &b("InvalidAuthenticationToken", "x"), Mailbox),
            GraphRefusal::TokenRejected(_)
        ));
    }
}
