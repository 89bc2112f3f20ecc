//! Graph directory reads: `GET /users/{id|upn}` and `GET /users?$filter=` (by `mail` or a
//! proxy address, optionally through an eventually consistent index), plus user renames.

use std::sync::Arc;

use axum::http::HeaderMap;
use serde_json::{Map, Value, json};
use uuid::Uuid;

use crate::errors::{GraphIds, Resp, graph_error};
use crate::graph::{USER_ROLES, admit, check_identity, finish, has_role, identity_not_found};
use crate::identity::AccessClaims;
use crate::model::{SimError, UserInfo};
use crate::state::{State, User};
use crate::throttle::PostFault;
use crate::util::parse_form;
use crate::{Shared, SimHandle};

/// Properties returned without `$select`, in Graph's order.
const DEFAULT_PROPS: &[&str] = &[
    "businessPhones",
    "displayName",
    "givenName",
    "jobTitle",
    "mail",
    "mobilePhone",
    "officeLocation",
    "preferredLanguage",
    "surname",
    "userPrincipalName",
    "id",
];

/// Further properties served only when selected.
const EXTRA_PROPS: &[&str] = &[
    "proxyAddresses",
    "accountEnabled",
    "userType",
    "otherMails",
    "department",
    "companyName",
];

/// `smtp:` prefix for a bare address; a second primary (`SMTP:`) becomes an alias.
pub(crate) fn normalize_alias(a: &str) -> String {
    let a = a.trim();
    match a.split_once(':') {
        Some((p, rest)) if p.eq_ignore_ascii_case("smtp") => format!("smtp:{rest}"),
        Some(_) => a.to_string(),
        None => format!("smtp:{a}"),
    }
}

/// True when the proxy address `alias` (or a bare address) is `addr`.
pub(crate) fn same_address(alias: &str, addr: &str) -> bool {
    let bare = match alias.split_once(':') {
        Some((p, rest)) if p.eq_ignore_ascii_case("smtp") => rest,
        _ => alias,
    };
    bare.eq_ignore_ascii_case(addr)
}

/// The user whose mail or SMTP proxy address is `addr`.
pub(crate) fn address_owner(st: &State, addr: &str) -> Option<Uuid> {
    st.users
        .values()
        .find(|u| {
            u.mail.eq_ignore_ascii_case(addr) || u.aliases.iter().any(|a| same_address(a, addr))
        })
        .map(|u| u.id)
}

fn select_list(query: &str) -> Option<Vec<String>> {
    parse_form(query)
        .into_iter()
        .find(|(k, _)| k == "$select" || k == "select")
        .map(|(_, v)| {
            v.split(',')
                .map(|x| x.trim().to_string())
                .filter(|x| !x.is_empty())
                .collect()
        })
}

/// A 400 for the first selected property a user does not have.
fn check_select(ids: &GraphIds, select: &Option<Vec<String>>) -> Option<Resp> {
    let unknown = select.iter().flatten().find(|name| {
        !DEFAULT_PROPS
            .iter()
            .chain(EXTRA_PROPS)
            .any(|k| k.eq_ignore_ascii_case(name))
    })?;
    Some(graph_error(
        ids,
        400,
        "Request_BadRequest",
        &format!("Could not find a property named '{unknown}' on type 'microsoft.graph.user'."),
    ))
}

/// A user as Graph shows it (`id` always included).
fn user_json(u: &User, select: &Option<Vec<String>>) -> Map<String, Value> {
    let (given, surname) = u
        .display_name
        .split_once(' ')
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .unwrap_or((u.display_name.clone(), String::new()));
    let exo = u.exchange_online();
    let value = |k: &str| -> Value {
        match k {
            "businessPhones" | "otherMails" => json!([]),
            "displayName" => u.display_name.clone().into(),
            "givenName" => given.clone().into(),
            "mail" if exo => u.mail.clone().into(),
            "preferredLanguage" => "en-US".into(),
            "surname" => surname.clone().into(),
            "userPrincipalName" => u.upn.clone().into(),
            "id" => u.id.to_string().into(),
            "proxyAddresses" if exo => json!(u.proxy_addresses()),
            "proxyAddresses" => json!([]),
            "accountEnabled" => true.into(),
            "userType" => "Member".into(),
            _ => Value::Null,
        }
    };
    let mut obj = Map::new();
    match select {
        None => {
            for k in DEFAULT_PROPS {
                obj.insert((*k).into(), value(k));
            }
        }
        Some(w) => {
            for k in DEFAULT_PROPS.iter().chain(EXTRA_PROPS) {
                if *k == "id" || w.iter().any(|x| x.eq_ignore_ascii_case(k)) {
                    obj.insert((*k).into(), value(k));
                }
            }
        }
    }
    obj
}

pub(crate) async fn get_user(
    shared: Arc<Shared>,
    ids: GraphIds,
    claims: AccessClaims,
    user_seg: String,
    query: &str,
) -> Resp {
    let adm = match admit(&shared, &ids, &claims, &user_seg, false).await {
        Ok(a) => a,
        Err(r) => return r,
    };
    if !has_role(&claims, USER_ROLES) {
        return denied(&ids);
    }
    let select = select_list(query);
    if let Some(r) = check_select(&ids, &select) {
        return r;
    }
    let mut obj = Map::new();
    obj.insert(
        "@odata.context".into(),
        format!("{}/v1.0/$metadata#users/$entity", shared.base_url).into(),
    );
    obj.extend(user_json(&shared.lock().users[&adm.user], &select));
    finish(&ids, 200, Value::Object(obj).to_string(), adm.post, None)
}

fn denied(ids: &GraphIds) -> Resp {
    graph_error(
        ids,
        403,
        "Authorization_RequestDenied",
        "Insufficient privileges to complete the operation.",
    )
}

enum UserFilter {
    Mail(String),
    ProxyAddress(String),
}

/// `'...'` with OData's doubled quotes, followed by nothing but whitespace.
fn quoted_to_end(s: &str) -> Option<String> {
    let mut chars = s.trim().strip_prefix('\'')?.chars().peekable();
    let mut out = String::new();
    while let Some(c) = chars.next() {
        if c == '\'' {
            if chars.peek() == Some(&'\'') {
                chars.next();
                out.push('\'');
            } else {
                return chars.all(char::is_whitespace).then_some(out);
            }
        } else {
            out.push(c);
        }
    }
    None
}

fn strip_prefix_ci<'a>(s: &'a str, p: &str) -> Option<&'a str> {
    (s.len() >= p.len() && s.is_char_boundary(p.len()) && s[..p.len()].eq_ignore_ascii_case(p))
        .then(|| &s[p.len()..])
}

/// ` eq '{v}'` (what follows the operand; the operator is case-insensitive).
fn eq_literal(rest: &str) -> Option<String> {
    if !rest.starts_with(char::is_whitespace) {
        return None;
    }
    let rest = strip_prefix_ci(rest.trim_start(), "eq")?;
    if !rest.starts_with(char::is_whitespace) {
        return None;
    }
    quoted_to_end(rest)
}

/// Exactly the two filters a mailbox lookup needs; anything else is "unsupported".
fn parse_filter(f: &str) -> Option<UserFilter> {
    let f = f.trim();
    if let Some(rest) = strip_prefix_ci(f, "mail") {
        return eq_literal(rest).map(UserFilter::Mail);
    }
    let inner = strip_prefix_ci(f, "proxyAddresses/any(")?.strip_suffix(')')?;
    let (var, body) = inner.split_once(':')?;
    let var = var.trim();
    let ident = var
        .chars()
        .enumerate()
        .all(|(i, c)| c == '_' || c.is_ascii_alphabetic() || (i > 0 && c.is_ascii_digit()));
    if var.is_empty() || !ident {
        return None;
    }
    eq_literal(body.trim_start().strip_prefix(var)?).map(UserFilter::ProxyAddress)
}

pub(crate) async fn list_users(
    shared: Arc<Shared>,
    ids: GraphIds,
    claims: AccessClaims,
    query: &str,
    headers: &HeaderMap,
) -> Resp {
    let st = shared.lock();
    let Some((tid, _)) = check_identity(&st, &claims) else {
        return identity_not_found(&ids);
    };
    if !has_role(&claims, USER_ROLES) {
        return denied(&ids);
    }
    let select = select_list(query);
    if let Some(r) = check_select(&ids, &select) {
        return r;
    }
    let filter = match parse_form(query)
        .into_iter()
        .find(|(k, _)| k == "$filter" || k == "filter")
    {
        None => None,
        Some((_, f)) => match parse_filter(&f) {
            Some(f) => Some(f),
            None => {
                return graph_error(&ids, 400, "Request_UnsupportedQuery", "Unsupported Query.");
            }
        },
    };
    // The advanced-query index is eventually consistent: recent creations and renames lag.
    let eventual = headers
        .get("consistencylevel")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("eventual"));
    let lag = shared.cfg.eventual_consistency_lag;
    let mut users: Vec<&User> = st
        .tenants
        .get(&tid)
        .map(|t| t.users.iter().map(|u| &st.users[u]).collect())
        .unwrap_or_default();
    users.retain(|u| {
        let hit = match &filter {
            None => true,
            Some(UserFilter::Mail(v)) => u.exchange_online() && u.mail.eq_ignore_ascii_case(v),
            Some(UserFilter::ProxyAddress(v)) => {
                u.exchange_online()
                    && u.proxy_addresses()
                        .iter()
                        .any(|a| a.eq_ignore_ascii_case(v))
            }
        };
        hit && !(eventual && u.changed_at.elapsed() < lag)
    });
    let context = match &select {
        Some(s) => format!("{}/v1.0/$metadata#users({})", shared.base_url, s.join(",")),
        None => format!("{}/v1.0/$metadata#users", shared.base_url),
    };
    let value: Vec<Value> = users
        .iter()
        .map(|u| Value::Object(user_json(u, &select)))
        .collect();
    drop(st);
    let body = json!({ "@odata.context": context, "value": value });
    finish(&ids, 200, body.to_string(), PostFault::None, None)
}

impl SimHandle {
    /// Rename a user: UPN and primary mail become `new_upn`, the old mail address stays as an
    /// `smtp:` proxy address; object id and mailbox are unchanged. The old UPN no longer
    /// resolves.
    pub fn rename_user(&self, user: &str, new_upn: &str) -> Result<UserInfo, SimError> {
        let new = new_upn.trim().to_ascii_lowercase();
        if !new.contains('@') {
            return Err(SimError::Invalid(format!("'{new}' is not a UPN")));
        }
        let mut st = self.shared.lock();
        let id = st
            .find_user(user)
            .ok_or_else(|| SimError::NotFound(format!("user {user}")))?;
        if st.upns.get(&new).is_some_and(|u| *u != id)
            || address_owner(&st, &new).is_some_and(|u| u != id)
        {
            return Err(SimError::Invalid(format!("{new} is already in use")));
        }
        let old_upn = st.users[&id].upn.to_ascii_lowercase();
        st.upns.remove(&old_upn);
        st.upns.insert(new.clone(), id);
        let Some(u) = st.users.get_mut(&id) else {
            return Err(SimError::NotFound(user.to_string()));
        };
        let old_mail = std::mem::replace(&mut u.mail, new.clone());
        u.upn = new.clone();
        u.aliases.retain(|a| !same_address(a, &new));
        if !old_mail.eq_ignore_ascii_case(&new)
            && !u.aliases.iter().any(|a| same_address(a, &old_mail))
        {
            u.aliases.push(format!("smtp:{old_mail}"));
        }
        u.changed_at = std::time::Instant::now();
        Ok(u.info())
    }
}
