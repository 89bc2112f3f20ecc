//! Identity platform: the token endpoint (client credentials here; the authorization-code
//! grant in `auth_code.rs`; client authentication in `client_auth.rs`) and the simulator's
//! own access tokens.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderValue, Response};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, DecodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use sha1::Digest as _;
use uuid::Uuid;

use crate::client_auth::{Fail, authenticate, fail, required};
use crate::config::{PropagationFailure, UnconsentedError};
use crate::errors::{
    Resp, TENANT_NOT_FOUND_HINT, aad_error, app_not_found, json_response, tenant_not_found,
};
use crate::throttle::Endpoint;
use crate::util::{form_get, now, parse_form};
use crate::{GRAPH_RESOURCE, Shared};

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
    /// Delegated tokens only: granted scopes, the user's name and UPN.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scp: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upn: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unique_name: Option<String>,
}

impl AccessClaims {
    /// An access token for Graph (`aud`) issued now (`iat`) until `exp` by tenant `tid` to the
    /// app `client_id`, authenticated as `appidacr`. The caller fills in who it is for
    /// (`idtyp`, `oid`, `sub`) and what it grants (`roles`, or `scp` and the user's names).
    pub(crate) fn issued(
        aud: &str,
        tid: Uuid,
        client_id: Uuid,
        app_displayname: String,
        appidacr: &str,
        iat: i64,
        exp: i64,
    ) -> Self {
        AccessClaims {
            aud: aud.to_string(),
            iss: format!("https://sts.windows.net/{tid}/"),
            iat,
            nbf: iat,
            exp,
            app_displayname,
            appid: client_id.to_string(),
            appidacr: appidacr.to_string(),
            idp: format!("https://sts.windows.net/{tid}/"),
            idtyp: String::new(),
            oid: String::new(),
            roles: Vec::new(),
            sub: String::new(),
            tid: tid.to_string(),
            uti: URL_SAFE_NO_PAD.encode(Uuid::new_v4().as_bytes()),
            ver: "1.0".to_string(),
            scp: None,
            name: None,
            upn: None,
            unique_name: None,
        }
    }
}

/// AADSTS53003, for any grant in a tenant that blocks token issuance.
pub(crate) fn conditional_access_blocked() -> Fail {
    fail(
        400,
        "invalid_grant",
        53003,
        "Access has been blocked by Conditional Access policies. The access policy does not allow token issuance.",
    )
}

/// The token endpoint's success body (`auth_code` adds `scope` and `id_token`).
pub(crate) fn token_response(lifetime: i64, access_token: String) -> serde_json::Value {
    serde_json::json!({
        "token_type": "Bearer",
        "expires_in": lifetime,
        "ext_expires_in": lifetime,
        "access_token": access_token,
    })
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
    let data = jsonwebtoken::decode::<AccessClaims>(token, &shared.keys.access().dec, &v)
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
    let result = if form_get(&form, "grant_type") == Some("authorization_code") {
        crate::auth_code::redeem(&shared, &tenant_seg, &form)
    } else {
        issue(&shared, &tenant_seg, &form)
    };
    match result {
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
            tenant_not_found(tenant_seg) + TENANT_NOT_FOUND_HINT,
        ));
    };
    let need = |k: &str| required(form, k);
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
            app_not_found(&client_id_s, &tenant_domain),
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
    let app_name = st.apps[&client_id].display_name.clone();
    let mut auds: Vec<String> = vec![
        format!("{}/{}/oauth2/v2.0/token", shared.base_url, tenant_seg),
        format!("{}/{}/oauth2/v2.0/token", shared.base_url, tid),
        format!("{}/{}/oauth2/v2.0/token", shared.base_url, tenant_domain),
    ];
    auds.dedup();
    let appidacr = authenticate(&mut st, form, client_id, &auds)?;

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
        return Err(conditional_access_blocked());
    }

    let lifetime = i64::from(shared.cfg.token_lifetime_secs);
    let iat = now().unix_timestamp();
    let claims = AccessClaims {
        idtyp: "app".to_string(),
        oid: sp.object_id.to_string(),
        roles: sp.roles.clone(),
        sub: sp.object_id.to_string(),
        ..AccessClaims::issued(
            GRAPH_RESOURCE,
            tid,
            client_id,
            app_name,
            appidacr,
            iat,
            iat + lifetime,
        )
    };
    drop(st);
    let token = sign_access_token(shared, &claims)?;
    Ok(token_response(lifetime, token).to_string())
}

/// RS256 with the access-token key (`kid` and `x5t` set, as Microsoft does).
pub(crate) fn sign_access_token(shared: &Shared, claims: &AccessClaims) -> Result<String, Fail> {
    let key = shared.keys.access();
    let mut header = Header::new(Algorithm::RS256);
    header.typ = Some("JWT".into());
    header.kid = Some(key.kid.clone());
    header.x5t = Some(key.kid.clone());
    jsonwebtoken::encode(&header, claims, &key.enc).map_err(|e| {
        fail(
            500,
            "server_error",
            90033,
            format!("A transient error has occurred: {e}"),
        )
    })
}
