//! Token endpoint, `grant_type=authorization_code`: redeem a code from the authorize endpoint
//! for a delegated Graph access token and an ID token. No refresh tokens.

use std::time::Instant;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};
use sha2::Digest as _;
use uuid::Uuid;

use crate::client_auth::{Fail, authenticate, fail, required};
use crate::errors::{app_not_found, tenant_not_found};
use crate::identity::{
    AccessClaims, conditional_access_blocked, sign_access_token, token_response,
};
use crate::util::{form_get, now};
use crate::{GRAPH_APP_ID, Shared};

/// Directory role template ids carried in `wids`.
pub const ROLE_MEMBER: &str = "b79fbf4d-3ef9-4689-8143-76b194e85509";
pub const ROLE_GLOBAL_ADMIN: &str = "62e90394-69f5-4237-9190-012177145e10";
pub const ROLE_PRIVILEGED_ROLE_ADMIN: &str = "e8611ab8-c189-46e8-94e1-60213ab1f814";

const ID_TOKEN_LIFETIME: i64 = 3600;

fn invalid_grant(code: u32, msg: impl Into<String>) -> Fail {
    fail(400, "invalid_grant", code, msg)
}

/// `sub` is pairwise: stable per (app, user), different for every app.
fn pairwise_sub(seed: u64, client_id: Uuid, oid: Uuid) -> String {
    let mut h = sha2::Sha256::new();
    h.update(seed.to_be_bytes());
    h.update(client_id.as_bytes());
    h.update(oid.as_bytes());
    URL_SAFE_NO_PAD.encode(h.finalize())[..43].to_string()
}

fn pkce_ok(challenge: &str, method: &str, verifier: &str) -> bool {
    if method == "S256" {
        URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(verifier.as_bytes())) == challenge
    } else {
        verifier == challenge
    }
}

pub(crate) fn redeem(
    shared: &Shared,
    tenant_seg: &str,
    form: &[(String, String)],
) -> Result<String, Fail> {
    let lower = tenant_seg.to_ascii_lowercase();
    if lower == "consumers" {
        return Err(fail(
            400,
            "invalid_request",
            90130,
            "Application is not supported over the /consumers endpoint. Please use the /organizations or tenant-specific endpoint.",
        ));
    }
    let mut st = shared.lock();
    let path_tenant = if lower == "organizations" || lower == "common" {
        None
    } else {
        Some(
            st.find_tenant(tenant_seg)
                .ok_or_else(|| fail(400, "invalid_request", 90002, tenant_not_found(tenant_seg)))?,
        )
    };
    let client_id_s = required(form, "client_id")?;
    let Some(client_id) = Uuid::parse_str(&client_id_s)
        .ok()
        .filter(|c| st.apps.contains_key(c))
    else {
        let dir = path_tenant
            .map(|t| st.tenants[&t].domain.clone())
            .unwrap_or(lower);
        return Err(fail(
            400,
            "unauthorized_client",
            700016,
            app_not_found(&client_id_s, &dir),
        ));
    };
    let code_s = required(form, "code")?;
    let redirect_uri = required(form, "redirect_uri")?;
    let base = &shared.base_url;
    let mut auds = vec![format!("{base}/{tenant_seg}/oauth2/v2.0/token")];
    if let Some(t) = path_tenant {
        auds.push(format!("{base}/{t}/oauth2/v2.0/token"));
        auds.push(format!(
            "{base}/{}/oauth2/v2.0/token",
            st.tenants[&t].domain
        ));
    }
    let appidacr = authenticate(&mut st, form, client_id, &auds)?;

    let code = st
        .codes
        .get(&code_s)
        .filter(|c| c.expires > Instant::now())
        .ok_or_else(|| {
            invalid_grant(
                70008,
                "The provided authorization code or refresh token has expired due to inactivity. Send a new interactive authorization request for this user and resource.",
            )
        })?;
    if code.redeemed {
        return Err(invalid_grant(
            54005,
            "OAuth2 Authorization code was already redeemed, please retry with a new valid code or use an existing refresh token.",
        ));
    }
    if code.client_id != client_id {
        return Err(invalid_grant(
            70000,
            "Provided grant is invalid or malformed: the authorization code was issued to another application.",
        ));
    }
    if code.redirect_uri != redirect_uri {
        return Err(invalid_grant(
            500112,
            format!(
                "The reply address '{redirect_uri}' does not match the reply address '{}' provided when requesting Authorization code.",
                code.redirect_uri
            ),
        ));
    }
    if path_tenant.is_some_and(|t| t != code.tenant) {
        return Err(invalid_grant(
            700005,
            "Provided Authorization Code is intended to use against other tenant, thus rejected.",
        ));
    }
    if let Some((challenge, method)) = &code.challenge {
        let verifier = form_get(form, "code_verifier").unwrap_or("");
        if verifier.is_empty() || !pkce_ok(challenge, method, verifier) {
            return Err(invalid_grant(
                501481,
                "The Code_Verifier does not match the code_challenge supplied in the authorization request.",
            ));
        }
    }
    let tid = code.tenant;
    if st.tenants[&tid].conditional_access_block {
        return Err(conditional_access_blocked());
    }

    // Redeem: the code stays stored (redeemed) until it expires, to recognise a replay.
    let (uid, nonce) = (code.user, code.nonce.clone());
    let scopes: Vec<String> = code
        .scope
        .split_whitespace()
        .filter(|s| *s != "offline_access")
        .map(str::to_string)
        .collect();
    if let Some(c) = st.codes.get_mut(&code_s) {
        c.redeemed = true;
    }
    let user = &st.users[&uid];
    let app = &st.apps[&client_id];
    let scope = scopes.join(" ");
    let iat = now().unix_timestamp();
    let lifetime = i64::from(shared.cfg.token_lifetime_secs);

    let mut id = json!({
        "aud": client_id.to_string(),
        "iss": format!("{base}/{tid}/v2.0"),
        "iat": iat,
        "nbf": iat,
        "exp": iat + ID_TOKEN_LIFETIME,
        "name": user.display_name,
        "oid": user.id.to_string(),
        "preferred_username": user.upn,
        "sub": pairwise_sub(shared.cfg.seed, client_id, user.id),
        "tid": tid.to_string(),
        "uti": URL_SAFE_NO_PAD.encode(Uuid::new_v4().as_bytes()),
        "ver": "2.0",
    });
    if scopes.iter().any(|s| s == "email") && user.exchange_online() {
        id["email"] = user.mail.clone().into();
    }
    if let Some(n) = nonce {
        id["nonce"] = n.into();
    }
    if app.id_token_wids {
        let mut wids = vec![ROLE_MEMBER];
        if user.global_admin {
            wids.push(ROLE_GLOBAL_ADMIN);
        }
        if user.privileged_role_admin {
            wids.push(ROLE_PRIVILEGED_ROLE_ADMIN);
        }
        id["wids"] = Value::from(wids);
    }
    let access = AccessClaims {
        idtyp: "user".to_string(),
        oid: user.id.to_string(),
        sub: pairwise_sub(shared.cfg.seed, client_id, user.id),
        scp: Some(scope.clone()),
        name: Some(user.display_name.clone()),
        upn: Some(user.upn.clone()),
        unique_name: Some(user.upn.clone()),
        ..AccessClaims::issued(
            GRAPH_APP_ID,
            tid,
            client_id,
            app.display_name.clone(),
            appidacr,
            iat,
            iat + lifetime,
        )
    };
    let id_token =
        crate::signing::sign_id_token(&shared.keys, &st.ring, id, st.id_token_tamper, base);
    drop(st);
    let access_token = sign_access_token(shared, &access)?;
    let mut body = token_response(lifetime, access_token);
    body["scope"] = scope.into();
    body["id_token"] = id_token.into();
    Ok(body.to_string())
}
