//! The user-management API's handlers: parse, call one use case, shape the answer.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use time::OffsetDateTime;

use o365_domain::ids::Email;
use o365_domain::page::PageRequest;
use o365_domain::settings::SettingsChange;
use o365_domain::user::{NewUser, OrgSyncContext, Role, SyncStateKind};
use o365_domain::{DomainError, FieldError};

use crate::ApiState;
use crate::dto::*;
use crate::extract::{ApiJson, ApiQuery, Caller, etag, expected_version};
use crate::problem::{ApiResult, Problem};

fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

fn email_in_path(raw: &str) -> Result<Email, DomainError> {
    Email::parse(raw).map_err(DomainError::from)
}

fn page(limit: Option<u32>, after: Option<String>) -> Result<PageRequest, DomainError> {
    PageRequest::new(limit, after).map_err(DomainError::from)
}

/// The org's switch and connection, read once, to show users as they are.
async fn org_context(state: &ApiState, caller: &Caller) -> ApiResult<OrgSyncContext> {
    Ok(state.services.sync_context(&caller.0.org).await?)
}

#[utoipa::path(get, path = "/v1/integration", tag = "integration",
    responses((status = 200, description = "Success", body = IntegrationDto, headers(("ETag" = String, description = "the resource\'s version, quoted: send it back as If-Match"))), (status = 401, description = "Missing or invalid bearer token (problem+json)", body = Problem, content_type = "application/problem+json"), (status = 403, description = "The caller may not do this (problem+json)", body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn get_integration(
    State(state): State<ApiState>,
    caller: Caller,
) -> ApiResult<impl IntoResponse> {
    let view = state.services.integration(&caller.0).await?;
    Ok((
        etag(view.settings.version),
        Json(IntegrationDto::from(&view)),
    ))
}

#[utoipa::path(patch, path = "/v1/integration/settings", tag = "integration", request_body = SettingsPatch,
    params(("If-Match" = Option<String>, Header, description = "the settings version you read, quoted")),
    responses((status = 200, description = "Success", body = SettingsDto, headers(("ETag" = String, description = "the resource\'s version, quoted: send it back as If-Match"))), (status = 401, description = "Missing or invalid bearer token (problem+json)", body = Problem, content_type = "application/problem+json"), (status = 403, description = "The caller may not do this (problem+json)", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Conflicts with the current state (problem+json)", body = Problem, content_type = "application/problem+json"), (status = 412, description = "If-Match no longer matches the resource's ETag (problem+json)", body = Problem, content_type = "application/problem+json"), (status = 422, description = "Some fields are invalid (problem+json)", body = Problem, content_type = "application/problem+json"), (status = 428, description = "Send the version you read (problem+json)", body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn patch_settings(
    State(state): State<ApiState>,
    caller: Caller,
    headers: HeaderMap,
    ApiJson(patch): ApiJson<SettingsPatch>,
) -> ApiResult<impl IntoResponse> {
    let expected = expected_version(&headers, patch.version)?;
    let change = SettingsChange {
        use_service_account: patch.use_service_account,
        read_only: patch.read_only,
        confirm: patch.confirm,
    };
    let settings = state
        .services
        .change_settings(&caller.0, change, expected.version, now())
        .await
        .map_err(|e| expected.refusal(e))?;
    Ok((etag(settings.version), Json(SettingsDto::from(&settings))))
}

#[utoipa::path(post, path = "/v1/integration/connection/activate", tag = "connection",
    responses((status = 200, description = "Success", body = ConsentLinkDto), (status = 401, description = "Missing or invalid bearer token (problem+json)", body = Problem, content_type = "application/problem+json"), (status = 403, description = "The caller may not do this (problem+json)", body = Problem, content_type = "application/problem+json"), (status = 409, description = "Conflicts with the current state (problem+json)", body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn activate_connection(
    State(state): State<ApiState>,
    caller: Caller,
) -> ApiResult<Json<ConsentLinkDto>> {
    Ok(Json(
        state
            .services
            .activate_connection(&caller.0, now())
            .await?
            .into(),
    ))
}

#[utoipa::path(post, path = "/v1/integration/connection/verify", tag = "connection",
    responses((status = 200, description = "Success", body = ConnectionDto), (status = 401, description = "Missing or invalid bearer token (problem+json)", body = Problem, content_type = "application/problem+json"), (status = 403, description = "The caller may not do this (problem+json)", body = Problem, content_type = "application/problem+json"), (status = 409, description = "Conflicts with the current state (problem+json)", body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn verify_connection(
    State(state): State<ApiState>,
    caller: Caller,
) -> ApiResult<Json<ConnectionDto>> {
    Ok(Json(
        (&state.services.verify_connection(&caller.0, now()).await?).into(),
    ))
}

#[utoipa::path(delete, path = "/v1/integration/connection", tag = "connection",
    responses((status = 200, description = "Success", body = ConnectionDto), (status = 401, description = "Missing or invalid bearer token (problem+json)", body = Problem, content_type = "application/problem+json"), (status = 403, description = "The caller may not do this (problem+json)", body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn delete_connection(
    State(state): State<ApiState>,
    caller: Caller,
) -> ApiResult<Json<ConnectionDto>> {
    Ok(Json(
        (&state.services.delete_connection(&caller.0, now()).await?).into(),
    ))
}

#[utoipa::path(get, path = "/v1/users", tag = "users", params(UsersQuery),
    responses((status = 200, description = "Success", body = UserPageDto), (status = 401, description = "Missing or invalid bearer token (problem+json)", body = Problem, content_type = "application/problem+json"), (status = 403, description = "The caller may not do this (problem+json)", body = Problem, content_type = "application/problem+json"), (status = 422, description = "Some fields are invalid (problem+json)", body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn list_users(
    State(state): State<ApiState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<UsersQuery>,
) -> ApiResult<Json<UserPageDto>> {
    let status = match q.status.as_deref() {
        None => None,
        Some(s) => Some(SyncStateKind::parse(s).ok_or_else(|| {
            DomainError::from(FieldError::new(
                "status",
                "unknown_status",
                "status is never_synced, ok, disabled or error",
            ))
        })?),
    };
    let users = state
        .services
        .list_users(&caller.0, status, page(q.limit, q.after.clone())?)
        .await?;
    Ok(Json(UserPageDto {
        items: users.items.iter().map(UserDto::of).collect(),
        next: users.next,
    }))
}

#[utoipa::path(post, path = "/v1/users", tag = "users", request_body = AddUserRequest,
    responses((status = 201, description = "Created", body = UserDto, headers(("ETag" = String, description = "the resource\'s version, quoted: send it back as If-Match"))), (status = 401, description = "Missing or invalid bearer token (problem+json)", body = Problem, content_type = "application/problem+json"), (status = 403, description = "The caller may not do this (problem+json)", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Conflicts with the current state (problem+json)", body = Problem, content_type = "application/problem+json"), (status = 422, description = "Some fields are invalid (problem+json)", body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn add_user(
    State(state): State<ApiState>,
    caller: Caller,
    ApiJson(body): ApiJson<AddUserRequest>,
) -> ApiResult<impl IntoResponse> {
    let new = NewUser::parse(&body.email, &body.display_name, &body.role)?;
    let user = state.services.add_user(&caller.0, new, now()).await?;
    let org = org_context(&state, &caller).await?;
    Ok((
        StatusCode::CREATED,
        etag(user.version),
        Json(UserDto::of(&user.as_seen(&org))),
    ))
}

#[utoipa::path(get, path = "/v1/users/{email}", tag = "users", params(("email" = String, Path)),
    responses((status = 200, description = "Success", body = UserDto, headers(("ETag" = String, description = "the resource\'s version, quoted: send it back as If-Match"))), (status = 401, description = "Missing or invalid bearer token (problem+json)", body = Problem, content_type = "application/problem+json"), (status = 403, description = "The caller may not do this (problem+json)", body = Problem, content_type = "application/problem+json"), (status = 404, description = "No such resource in the caller's org (problem+json)", body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn get_user(
    State(state): State<ApiState>,
    caller: Caller,
    Path(email): Path<String>,
) -> ApiResult<impl IntoResponse> {
    let user = state
        .services
        .user(&caller.0, &email_in_path(&email)?)
        .await?;
    let org = org_context(&state, &caller).await?;
    Ok((etag(user.version), Json(UserDto::of(&user.as_seen(&org)))))
}

#[utoipa::path(get, path = "/v1/me", tag = "users",
    responses((status = 200, description = "Success", body = UserDto, headers(("ETag" = String, description = "the resource\'s version, quoted: send it back as If-Match"))), (status = 401, description = "Missing or invalid bearer token (problem+json)", body = Problem, content_type = "application/problem+json"), (status = 403, description = "The caller may not do this (problem+json)", body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn get_me(State(state): State<ApiState>, caller: Caller) -> ApiResult<impl IntoResponse> {
    let user = state.services.user(&caller.0, &caller.0.email).await?;
    let org = org_context(&state, &caller).await?;
    Ok((etag(user.version), Json(UserDto::of(&user.as_seen(&org)))))
}

#[utoipa::path(patch, path = "/v1/users/{email}", tag = "users", request_body = ChangeRoleRequest,
    params(("email" = String, Path), ("If-Match" = Option<String>, Header)),
    responses((status = 200, description = "Success", body = UserDto, headers(("ETag" = String, description = "the resource\'s version, quoted: send it back as If-Match"))), (status = 401, description = "Missing or invalid bearer token (problem+json)", body = Problem, content_type = "application/problem+json"), (status = 403, description = "The caller may not do this (problem+json)", body = Problem, content_type = "application/problem+json"), (status = 404, description = "No such resource in the caller's org (problem+json)", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Conflicts with the current state (problem+json)", body = Problem, content_type = "application/problem+json"), (status = 412, description = "If-Match no longer matches the resource's ETag (problem+json)", body = Problem, content_type = "application/problem+json"), (status = 422, description = "Some fields are invalid (problem+json)", body = Problem, content_type = "application/problem+json"), (status = 428, description = "Send the version you read (problem+json)", body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn change_role(
    State(state): State<ApiState>,
    caller: Caller,
    Path(email): Path<String>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<ChangeRoleRequest>,
) -> ApiResult<impl IntoResponse> {
    let email = email_in_path(&email)?;
    let role = Role::parse(&body.role).map_err(DomainError::from)?;
    let expected = expected_version(&headers, body.version)?;
    let user = state
        .services
        .change_role(&caller.0, &email, role, expected.version, now())
        .await
        .map_err(|e| expected.refusal(e))?;
    let org = org_context(&state, &caller).await?;
    Ok((etag(user.version), Json(UserDto::of(&user.as_seen(&org)))))
}

#[utoipa::path(delete, path = "/v1/users/{email}", tag = "users",
    params(("email" = String, Path), ("If-Match" = String, Header, description = "the user's version, quoted")),
    responses((status = 204, description = "Done; nothing to return"), (status = 401, description = "Missing or invalid bearer token (problem+json)", body = Problem, content_type = "application/problem+json"), (status = 403, description = "The caller may not do this (problem+json)", body = Problem, content_type = "application/problem+json"), (status = 404, description = "No such resource in the caller's org (problem+json)", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Conflicts with the current state (problem+json)", body = Problem, content_type = "application/problem+json"), (status = 412, description = "If-Match no longer matches the resource's ETag (problem+json)", body = Problem, content_type = "application/problem+json"), (status = 428, description = "Send the version you read (problem+json)", body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn remove_user(
    State(state): State<ApiState>,
    caller: Caller,
    Path(email): Path<String>,
    headers: HeaderMap,
) -> ApiResult<StatusCode> {
    let email = email_in_path(&email)?;
    let expected = expected_version(&headers, None)?;
    state
        .services
        .remove_user(&caller.0, &email, expected.version, now())
        .await
        .map_err(|e| expected.refusal(e))?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(put, path = "/v1/primary", tag = "users", request_body = SetPrimaryRequest,
    responses((status = 200, description = "Success", body = UserDto), (status = 401, description = "Missing or invalid bearer token (problem+json)", body = Problem, content_type = "application/problem+json"), (status = 403, description = "The caller may not do this (problem+json)", body = Problem, content_type = "application/problem+json"), (status = 404, description = "No such resource in the caller's org (problem+json)", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Conflicts with the current state (problem+json)", body = Problem, content_type = "application/problem+json"), (status = 422, description = "Some fields are invalid (problem+json)", body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn set_primary(
    State(state): State<ApiState>,
    caller: Caller,
    ApiJson(body): ApiJson<SetPrimaryRequest>,
) -> ApiResult<Json<UserDto>> {
    let email = Email::parse(&body.email).map_err(DomainError::from)?;
    let user = state.services.set_primary(&caller.0, &email, now()).await?;
    let org = org_context(&state, &caller).await?;
    Ok(Json(UserDto::of(&user.as_seen(&org))))
}

#[utoipa::path(post, path = "/v1/users/sync", tag = "users", request_body = SyncChangesRequest,
    responses((status = 200, description = "Success", body = UsersDto), (status = 401, description = "Missing or invalid bearer token (problem+json)", body = Problem, content_type = "application/problem+json"), (status = 403, description = "The caller may not do this (problem+json)", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Conflicts with the current state (problem+json)", body = Problem, content_type = "application/problem+json"), (status = 422, description = "Some fields are invalid (problem+json)", body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn set_sync(
    State(state): State<ApiState>,
    caller: Caller,
    ApiJson(body): ApiJson<SyncChangesRequest>,
) -> ApiResult<Json<UsersDto>> {
    let mut changes = Vec::with_capacity(body.changes.len());
    let mut errors = Vec::new();
    for (i, row) in body.changes.iter().enumerate() {
        match Email::parse(&row.email) {
            Ok(e) => changes.push((e, row.sync_enabled)),
            Err(e) => errors.push(e.at(format!("changes[{i}].email"))),
        }
    }
    if !errors.is_empty() {
        return Err(DomainError::Invalid(errors).into());
    }
    let users = state.services.set_sync(&caller.0, &changes, now()).await?;
    let org = org_context(&state, &caller).await?;
    Ok(Json(UsersDto {
        items: users
            .iter()
            .map(|u| UserDto::of(&u.as_seen(&org)))
            .collect(),
    }))
}

#[utoipa::path(post, path = "/v1/sync", tag = "sync",
    responses((status = 202, description = "Accepted: the org's mailboxes are being queued; follow `runs` (GET /v1/sync/runs?request=…) as each mailbox's run finishes. A request within a minute of the org's last one joins it (the same `request_id`, no second walk)", body = SyncTriggeredDto), (status = 401, description = "Missing or invalid bearer token (problem+json)", body = Problem, content_type = "application/problem+json"), (status = 403, description = "The caller may not do this (problem+json)", body = Problem, content_type = "application/problem+json"), (status = 409, description = "Conflicts with the current state (problem+json)", body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn sync_now(
    State(state): State<ApiState>,
    caller: Caller,
) -> ApiResult<impl IntoResponse> {
    let request_id = state.services.sync_now(&caller.0).await?;
    let runs = format!("/v1/sync/runs?request={request_id}");
    Ok((
        StatusCode::ACCEPTED,
        [(axum::http::header::LOCATION, runs.clone())],
        Json(SyncTriggeredDto { request_id, runs }),
    ))
}

#[utoipa::path(get, path = "/v1/sync/runs", tag = "sync", params(SyncRunsQuery),
    responses((status = 200, description = "The org's mailbox runs, newest first: those that changed something, stopped on an error, failed or were continued, and every run of a \"sync now\" request (a scheduled run that found nothing new shows only as the user's last sync)", body = SyncRunPageDto), (status = 401, description = "Missing or invalid bearer token (problem+json)", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The caller may not do this (problem+json)", body = Problem, content_type = "application/problem+json"), (status = 422, description = "Some fields are invalid (problem+json)", body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn sync_runs(
    State(state): State<ApiState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<SyncRunsQuery>,
) -> ApiResult<Json<SyncRunPageDto>> {
    let request = q.request.map(|r| r.to_string());
    let runs = state
        .services
        .sync_runs(
            &caller.0,
            request.as_deref(),
            page(q.limit, q.after.clone())?,
        )
        .await?;
    Ok(Json(SyncRunPageDto {
        items: runs.items.iter().map(SyncRunDto::from).collect(),
        next: runs.next,
    }))
}

#[utoipa::path(get, path = "/v1/audit", tag = "audit", params(PageQuery),
    responses((status = 200, description = "Success", body = AuditPageDto), (status = 401, description = "Missing or invalid bearer token (problem+json)", body = Problem, content_type = "application/problem+json"), (status = 403, description = "The caller may not do this (problem+json)", body = Problem, content_type = "application/problem+json"), (status = 422, description = "Some fields are invalid (problem+json)", body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn audit_log(
    State(state): State<ApiState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> ApiResult<Json<AuditPageDto>> {
    let events = state
        .services
        .audit_log(&caller.0, page(q.limit, q.after.clone())?)
        .await?;
    Ok(Json(AuditPageDto {
        items: events.items.iter().map(AuditEventDto::from).collect(),
        next: events.next,
    }))
}
