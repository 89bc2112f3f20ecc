//! Client authentication at the token endpoint (both grants): a client secret, or a
//! certificate-signed client assertion (`private_key_jwt`).

use jsonwebtoken::{Algorithm, Validation};
use serde::Deserialize;
use uuid::Uuid;

use crate::state::State;
use crate::util::{form_get, now};

const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// A token-endpoint error: (HTTP status, `error`, AADSTS number, message).
pub(crate) struct Fail(pub u16, pub &'static str, pub u32, pub String);

pub(crate) fn fail(status: u16, error: &'static str, code: u32, msg: impl Into<String>) -> Fail {
    Fail(status, error, code, msg.into())
}

/// A required form parameter (AADSTS900144 when missing or empty).
pub(crate) fn required(form: &[(String, String)], k: &str) -> Result<String, Fail> {
    form_get(form, k)
        .filter(|v| !v.is_empty())
        .map(str::to_string)
        .ok_or_else(|| {
            fail(
                400,
                "invalid_request",
                900144,
                format!("The request body must contain the following parameter: '{k}'."),
            )
        })
}

#[derive(Deserialize)]
struct AssertionClaims {
    #[serde(default)]
    aud: serde_json::Value,
    iss: Option<String>,
    sub: Option<String>,
    exp: Option<i64>,
    nbf: Option<i64>,
    jti: Option<String>,
}

/// Authenticate `client_id` (a registered app) with the credential in `form`. `auds` are the
/// token URLs an assertion's `aud` may name, the first being the one quoted in errors.
/// Returns `appidacr` ("1" secret, "2" certificate).
pub(crate) fn authenticate(
    st: &mut State,
    form: &[(String, String)],
    client_id: Uuid,
    auds: &[String],
) -> Result<&'static str, Fail> {
    let app = &st.apps[&client_id];
    let appidacr;
    if let Some(secret) = form_get(form, "client_secret") {
        appidacr = "1";
        match app.secrets.iter().find(|s| s.value == secret) {
            None => {
                return Err(fail(
                    401,
                    "invalid_client",
                    7000215,
                    format!(
                        "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '{client_id}'."
                    ),
                ));
            }
            Some(s) if s.expires_at <= now() => {
                return Err(fail(
                    401,
                    "invalid_client",
                    7000222,
                    format!(
                        "The provided client secret keys for app '{client_id}' are expired. Visit the Azure portal to create new keys for your app: https://aka.ms/NewClientSecret, or consider using certificate credentials for added security: https://aka.ms/certCreds."
                    ),
                ));
            }
            Some(_) => {}
        }
    } else if let Some(assertion) = form_get(form, "client_assertion") {
        appidacr = "2";
        let kind = form_get(form, "client_assertion_type").unwrap_or("");
        if kind != JWT_BEARER {
            return Err(fail(
                400,
                "invalid_request",
                700026,
                format!("Client assertion type '{kind}' is not supported; use '{JWT_BEARER}'."),
            ));
        }
        let header = jsonwebtoken::decode_header(assertion).map_err(|_| {
            fail(
                400,
                "invalid_request",
                50027,
                "JWT token is invalid or malformed.",
            )
        })?;
        let cert = app.certs.iter().find(|c| {
            header.x5t_s256.as_deref() == Some(c.x5t_s256.as_str())
                || header.x5t.as_deref() == Some(c.x5t.as_str())
        });
        let Some(cert) = cert else {
            let shown = header
                .x5t_s256
                .clone()
                .or(header.x5t.clone())
                .unwrap_or_default();
            return Err(fail(
                401,
                "invalid_client",
                700027,
                format!(
                    "Client assertion failed signature validation. Key was not found: the certificate with thumbprint '{shown}' is not registered on application '{client_id}'."
                ),
            ));
        };
        if !matches!(
            header.alg,
            Algorithm::RS256
                | Algorithm::RS384
                | Algorithm::RS512
                | Algorithm::PS256
                | Algorithm::PS384
                | Algorithm::PS512
        ) {
            return Err(fail(
                401,
                "invalid_client",
                700027,
                "Client assertion failed signature validation. Unsupported algorithm.",
            ));
        }
        let mut v = Validation::new(header.alg);
        v.validate_exp = false;
        v.validate_nbf = false;
        v.validate_aud = false;
        v.required_spec_claims.clear();
        let claims = jsonwebtoken::decode::<AssertionClaims>(assertion, &cert.key, &v)
            .map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::InvalidSignature => fail(
                    401,
                    "invalid_client",
                    700027,
                    "Client assertion failed signature validation.",
                ),
                _ => fail(
                    400,
                    "invalid_request",
                    50027,
                    "JWT token is invalid or malformed.",
                ),
            })?
            .claims;
        let aud_ok = match &claims.aud {
            serde_json::Value::String(s) => auds.contains(s),
            serde_json::Value::Array(a) => a
                .iter()
                .any(|x| x.as_str().is_some_and(|s| auds.contains(&s.to_string()))),
            _ => false,
        };
        if !aud_ok {
            return Err(fail(
                401,
                "invalid_client",
                50013,
                format!(
                    "Assertion audience claim does not match the required value. The audience in the assertion was '{}' and the expected audience is '{}'.",
                    claims.aud, auds[0]
                ),
            ));
        }
        let cid = client_id.to_string();
        if claims.iss.as_deref() != Some(cid.as_str())
            || claims.sub.as_deref() != Some(cid.as_str())
        {
            return Err(fail(
                401,
                "invalid_client",
                700021,
                "Client assertion application identifier doesn't match 'client_id' parameter (the 'iss' and 'sub' claims must both be the client id).",
            ));
        }
        let t = now().unix_timestamp();
        let exp = claims.exp.ok_or_else(|| {
            fail(
                400,
                "invalid_request",
                50027,
                "JWT token is invalid or malformed: missing 'exp'.",
            )
        })?;
        if exp <= t || claims.nbf.is_some_and(|n| n > t + 300) {
            return Err(fail(
                401,
                "invalid_client",
                700024,
                "Client assertion is not within its valid time range.",
            ));
        }
        let jti = claims.jti.ok_or_else(|| {
            fail(
                400,
                "invalid_request",
                50027,
                "JWT token is invalid or malformed: missing 'jti'.",
            )
        })?;
        if st.used_jti.get(&jti).is_some_and(|&e| e > t) {
            return Err(fail(
                401,
                "invalid_client",
                50013,
                "Assertion is invalid: the assertion's 'jti' has already been used (replay).",
            ));
        }
        if st.used_jti.len() > 10_000 {
            st.used_jti.retain(|_, e| *e > t);
        }
        st.used_jti.insert(jti, exp);
    } else {
        return Err(fail(
            401,
            "invalid_client",
            7000218,
            "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
        ));
    }
    Ok(appidacr)
}
