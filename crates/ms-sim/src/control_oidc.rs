//! HTTP control routes (under `/_sim`) for sign-in: signing keys, metadata outage, ID-token
//! tampering, and user renames. The library methods live next to what they control.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::model::IdTokenTamper;
use crate::{Shared, SimHandle};

type S = State<Arc<Shared>>;

fn h(s: &Arc<Shared>) -> SimHandle {
    SimHandle { shared: s.clone() }
}

fn keys_report(hd: &SimHandle) -> Response {
    Json(json!({
        "current": hd.current_signing_kid(),
        "published": hd.published_signing_kids(),
    }))
    .into_response()
}

#[derive(Deserialize)]
struct DownReq {
    down: bool,
}

#[derive(Deserialize)]
struct TamperReq {
    #[serde(default)]
    tamper: Option<IdTokenTamper>,
}

#[derive(Deserialize)]
struct RenameReq {
    user_principal_name: String,
}

/// Key-ring actions: `POST /signing-keys/{action}` does it and answers with the ring's state.
type KeyAction = fn(&SimHandle);

const KEY_ACTIONS: [(&str, KeyAction); 3] = [
    ("/signing-keys/publish", |hd| {
        hd.publish_next_signing_key();
    }),
    ("/signing-keys/rotate", |hd| {
        hd.rotate_signing_key();
    }),
    ("/signing-keys/retire", SimHandle::retire_old_signing_keys),
];

pub(crate) fn router() -> Router<Arc<Shared>> {
    let mut router = Router::new().route(
        "/signing-keys",
        get(|State(s): S| async move { keys_report(&h(&s)) }),
    );
    for (path, act) in KEY_ACTIONS {
        router = router.route(
            path,
            post(move |State(s): S| async move {
                let hd = h(&s);
                act(&hd);
                keys_report(&hd)
            }),
        );
    }
    router
        .route(
            "/oidc/down",
            put(|State(s): S, Json(b): Json<DownReq>| async move {
                h(&s).set_oidc_down(b.down);
                Json(json!({ "down": b.down }))
            }),
        )
        .route(
            "/oidc/id-token-tamper",
            put(|State(s): S, Json(b): Json<TamperReq>| async move {
                h(&s).set_id_token_tamper(b.tamper);
                Json(json!({ "tamper": b.tamper }))
            }),
        )
        .route(
            "/id-tokens/sign",
            post(|State(s): S, Json(claims): Json<Value>| async move {
                Json(json!({ "id_token": h(&s).sign_id_token(&claims) }))
            }),
        )
        .route(
            "/users/{user}/rename",
            post(
                |State(s): S, Path(u): Path<String>, Json(b): Json<RenameReq>| async move {
                    crate::control::reply(h(&s).rename_user(&u, &b.user_principal_name))
                },
            ),
        )
}
