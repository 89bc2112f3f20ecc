//! Identity platform: the client-credentials token endpoint (secret or certificate
//! assertion) and the simulator's own access tokens.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderValue, Response};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use sha1::Digest as _;
use uuid::Uuid;

use crate::config::{PropagationFailure, UnconsentedError};
use crate::errors::{Resp, aad_error, json_response};
use crate::throttle::Endpoint;
use crate::util::{form_get, now, parse_form};
use crate::{GRAPH_RESOURCE, Shared};

const SIGNING_KEY: &str = include_str!("keys/sim-signing.key.pem");
const SIGNING_PUB: &str = include_str!("keys/sim-signing.pub.pem");
const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

pub(crate) struct Keys {
    enc: EncodingKey,
    dec: DecodingKey,
    kid: String,
}

impl Keys {
    pub fn load() -> Keys {
        // The fixture key is part of the crate; failing to parse it is a build defect.
        let enc = EncodingKey::from_rsa_pem(SIGNING_KEY.as_bytes()).expect("embedded signing key");
        let dec = DecodingKey::from_rsa_pem(SIGNING_PUB.as_bytes()).expect("embedded public key");
        let kid = URL_SAFE_NO_PAD.encode(&sha1::Sha1::digest(SIGNING_PUB.as_bytes())[..]);
        Keys { enc, dec, kid }
    }
}

/// Claims of an app-only Graph access token (v1.0 token shape, as Graph issues them).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct AccessClaims {
    pub aud: String,
    pub iss: String,
    pub iat: i64,
    pub nbf: i64,
    pub exp: i64,
    pub app_displayname: String,
    pub appid: String,
    pub appidacr: String,
    pub idp: String,
    pub idtyp: String,
    pub oid: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<String>,
    pub sub: String,
    pub tid: String,
    pub uti: String,
    pub ver: String,
}

/// Why a bearer token was refused (Graph answers 401 InvalidAuthenticationToken).
pub(crate) fn verify_access_token(
    shared: &Shared,
    token: &str,
) -> Result<AccessClaims, &'static str> {
    if token.is_empty() {
        return Err("Access token is empty.");
    }
    if token.split('.').count() != 3 {
        return Err("IDX14100: JWT is not well formed, there are no dots (.).");
    }
    let mut v = Validation::new(Algorithm::RS256);
    v.validate_exp = false;
    v.validate_aud = false;
    v.required_spec_claims.clear();
    let data = jsonwebtoken::decode::<AccessClaims>(token, &shared.keys.dec, &v)
        .map_err(|_| "Access token validation failure. Invalid signature.")?;
    let c = data.claims;
    if c.aud != GRAPH_RESOURCE && c.aud != "00000003-0000-0000-c000-000000000000" {
        return Err("Access token validation failure. Invalid audience.");
    }
    if c.exp <= now().unix_timestamp() {
        return Err("Lifetime validation failed, the token is expired.");
    }
    Ok(c)
}

/// PEM certificate -> DER bytes.
pub(crate) fn pem_to_der(pem: &str) -> Option<Vec<u8>> {
    let start = pem.find("-----BEGIN CERTIFICATE-----")? + "-----BEGIN CERTIFICATE-----".len();
    let end = pem[start..].find("-----END CERTIFICATE-----")? + start;
    let b64: String = pem[start..end]
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    STANDARD.decode(b64).ok()
}

/// (x5t, x5t#S256, hex SHA-1 thumbprint, verification key) of a PEM certificate.
pub(crate) fn read_certificate(pem: &str) -> Result<(String, String, String, DecodingKey), String> {
    let der = pem_to_der(pem).ok_or("not a PEM certificate")?;
    let sha1 = sha1::Sha1::digest(&der);
    let sha256 = sha2::Sha256::digest(&der);
    let key = DecodingKey::from_rsa_pem(pem.as_bytes())
        .map_err(|e| format!("unsupported certificate key (RSA only): {e}"))?;
    let hex: String = sha1.iter().map(|b| format!("{b:02X}")).collect();
    Ok((
        URL_SAFE_NO_PAD.encode(sha1),
        URL_SAFE_NO_PAD.encode(sha256),
        hex,
        key,
    ))
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

struct Fail(u16, &'static str, u32, String);

fn fail(status: u16, error: &'static str, code: u32, msg: impl Into<String>) -> Fail {
    Fail(status, error, code, msg.into())
}

pub(crate) async fn token(shared: Arc<Shared>, tenant_seg: String, req: Request) -> Resp {
    let headers = req.headers().clone();
    let is_post = req.method() == axum::http::Method::POST;
    let body = axum::body::to_bytes(req.into_body(), 1 << 20)
        .await
        .unwrap_or_default();
    shared.lock().throttle.count(Endpoint::Token, None);
    if !is_post {
        return aad_error(
            &shared.base_url,
            405,
            "invalid_request",
            900561,
            "The endpoint only accepts POST requests.",
            &headers,
        );
    }
    let form = parse_form(&String::from_utf8_lossy(&body));
    match issue(&shared, &tenant_seg, &form) {
        Ok(json) => {
            let mut r: Response<Body> = json_response(200, json, "application/json; charset=utf-8");
            r.headers_mut().insert(
                "cache-control",
                HeaderValue::from_static("no-store, no-cache"),
            );
            r.headers_mut()
                .insert("pragma", HeaderValue::from_static("no-cache"));
            r
        }
        Err(Fail(status, error, code, msg)) => {
            aad_error(&shared.base_url, status, error, code, &msg, &headers)
        }
    }
}

fn issue(shared: &Shared, tenant_seg: &str, form: &[(String, String)]) -> Result<String, Fail> {
    let lower = tenant_seg.to_ascii_lowercase();
    if matches!(lower.as_str(), "common" | "organizations" | "consumers") {
        return Err(fail(
            400,
            "invalid_request",
            900023,
            format!(
                "Specified tenant identifier '{tenant_seg}' is not valid for the client credentials flow: use a tenant id or domain."
            ),
        ));
    }
    let mut st = shared.lock();
    let Some(tid) = st.find_tenant(tenant_seg) else {
        return Err(fail(
            400,
            "invalid_request",
            90002,
            format!(
                "Tenant '{tenant_seg}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud. Check with your subscription administrator, this may happen if there are no active subscriptions for the tenant."
            ),
        ));
    };
    let need = |k: &str| -> Result<String, Fail> {
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
    };
    let grant = need("grant_type")?;
    if grant != "client_credentials" {
        return Err(fail(
            400,
            "unsupported_grant_type",
            70003,
            format!("The app requested an unsupported grant type '{grant}'."),
        ));
    }
    let client_id_s = need("client_id")?;
    let tenant_domain = st.tenants[&tid].domain.clone();
    let not_found = || {
        fail(
            400,
            "unauthorized_client",
            700016,
            format!(
                "Application with identifier '{client_id_s}' was not found in the directory '{tenant_domain}'. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You may have sent your authentication request to the wrong tenant."
            ),
        )
    };
    let Some(client_id) = Uuid::parse_str(&client_id_s)
        .ok()
        .filter(|c| st.apps.contains_key(c))
    else {
        return Err(not_found());
    };
    let scope = need("scope")?;
    let resource = scope.strip_suffix("/.default").ok_or_else(|| {
        fail(400, "invalid_scope", 1002012, format!("The provided value for scope {scope} is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI)."))
    })?;
    if resource != GRAPH_RESOURCE
        && resource != "00000003-0000-0000-c000-000000000000"
        && resource != "https://graph.microsoft.com/"
    {
        return Err(fail(
            400,
            "invalid_resource",
            500011,
            format!(
                "The resource principal named {resource} was not found in the tenant named {tenant_domain}. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You might have sent your authentication request to the wrong tenant."
            ),
        ));
    }

    // Client authentication against the app registration.
    let app = &st.apps[&client_id];
    let app_name = app.display_name.clone();
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
        let mut auds: Vec<String> = vec![
            format!("{}/{}/oauth2/v2.0/token", shared.base_url, tenant_seg),
            format!("{}/{}/oauth2/v2.0/token", shared.base_url, tid),
            format!("{}/{}/oauth2/v2.0/token", shared.base_url, tenant_domain),
        ];
        auds.dedup();
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

    // The app must be present (consented) in this tenant.
    let tenant = &st.tenants[&tid];
    let missing_sp = || {
        fail(
            401,
            "invalid_client",
            7000229,
            format!(
                "The client application {client_id} is missing service principal in the tenant {tid}. See instructions here: https://go.microsoft.com/fwlink/?linkid=2225119"
            ),
        )
    };
    let consent_missing = || {
        fail(
            400,
            "invalid_grant",
            65001,
            format!(
                "The user or administrator has not consented to use the application with ID '{client_id}' named '{app_name}'. Send an interactive authorization request for this user and resource."
            ),
        )
    };
    let Some(sp) = tenant.service_principals.get(&client_id) else {
        return Err(match tenant.unconsented_error {
            UnconsentedError::NoServicePrincipal => missing_sp(),
            UnconsentedError::AppNotFound => not_found(),
            UnconsentedError::ConsentMissing => consent_missing(),
        });
    };
    if st.propagating(tenant, sp, PropagationFailure::Token) {
        return Err(missing_sp());
    }
    if sp.roles.is_empty() {
        return Err(consent_missing());
    }
    if tenant.conditional_access_block {
        return Err(fail(
            400,
            "invalid_grant",
            53003,
            "Access has been blocked by Conditional Access policies. The access policy does not allow token issuance.",
        ));
    }

    let iat = now().unix_timestamp();
    let lifetime = i64::from(shared.cfg.token_lifetime_secs);
    let claims = AccessClaims {
        aud: GRAPH_RESOURCE.to_string(),
        iss: format!("https://sts.windows.net/{tid}/"),
        iat,
        nbf: iat,
        exp: iat + lifetime,
        app_displayname: app_name,
        appid: client_id.to_string(),
        appidacr: appidacr.to_string(),
        idp: format!("https://sts.windows.net/{tid}/"),
        idtyp: "app".to_string(),
        oid: sp.object_id.to_string(),
        roles: sp.roles.clone(),
        sub: sp.object_id.to_string(),
        tid: tid.to_string(),
        uti: URL_SAFE_NO_PAD.encode(Uuid::new_v4().as_bytes()),
        ver: "1.0".to_string(),
    };
    drop(st);
    let mut header = Header::new(Algorithm::RS256);
    header.typ = Some("JWT".into());
    header.kid = Some(shared.keys.kid.clone());
    header.x5t = Some(shared.keys.kid.clone());
    let token = jsonwebtoken::encode(&header, &claims, &shared.keys.enc).map_err(|e| {
        fail(
            500,
            "server_error",
            90033,
            format!("A transient error has occurred: {e}"),
        )
    })?;
    Ok(serde_json::json!({
        "token_type": "Bearer",
        "expires_in": lifetime,
        "ext_expires_in": lifetime,
        "access_token": token,
    })
    .to_string())
}
