//! The control API: build the simulated world, change mail between syncs, inject faults and
//! read the ground truth. Library methods live on `SimHandle` (a `Simulator` derefs to it);
//! the same operations are served as JSON under `/_sim/...`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch, post};
use base64::Engine;
use serde::Deserialize;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::config::{PropagationFailure, UnconsentedError};
use crate::generate::{RenderCtx, change_key, last_modified};
use crate::model::*;
use crate::state::{
    App, Cert, Mailbox, MsgKey, Secret, State as World, Tenant, User, immutable_id,
    parse_message_id, regular_id,
};
use crate::throttle::{Endpoint, FaultScope, FaultSpec, RequestCount, Violation};
use crate::util::{graph_time, hash_parts, hash_str, now};
use crate::{Shared, SimHandle};

fn uuid_from(seed: u64, a: u64, b: u64) -> Uuid {
    let hi = hash_parts(&[seed, 0x11, a, b]);
    let lo = hash_parts(&[seed, 0x22, a, b]);
    // Shape it as a version-4 UUID so it looks like what Entra hands out.
    let v = (u128::from(hi) << 64 | u128::from(lo)) & !(0xF000u128 << 64) | (0x4000u128 << 64);
    Uuid::from_u128(v & !(0xC000u128 << 48) | (0x8000u128 << 48))
}

impl SimHandle {
    fn world(&self) -> std::sync::MutexGuard<'_, World> {
        self.shared.lock()
    }

    fn user_id(st: &World, user: &str) -> Result<Uuid, SimError> {
        st.find_user(user)
            .ok_or_else(|| SimError::NotFound(format!("user {user}")))
    }

    fn tenant_id(st: &World, tenant: &str) -> Result<Uuid, SimError> {
        st.find_tenant(tenant)
            .ok_or_else(|| SimError::NotFound(format!("tenant {tenant}")))
    }

    fn render_ctx(&self, st: &World, mbx: u32) -> RenderCtx {
        let m = &st.mailboxes[mbx as usize];
        let u = &st.users[&m.user];
        RenderCtx {
            seed: self.shared.cfg.seed,
            mbx,
            owner: crate::generate::Owner {
                name: u.display_name.clone(),
                address: u.seed_address.clone(),
            },
            anchor: self.shared.anchor,
            history_days: self.shared.cfg.history_days,
            generated: m.generated,
            sizes: self.shared.cfg.body_sizes.clone(),
        }
    }

    // ---- tenants ------------------------------------------------------------------------

    pub fn create_tenant(&self, spec: TenantSpec) -> Result<TenantInfo, SimError> {
        let domain = spec.domain.trim().to_ascii_lowercase();
        if domain.is_empty() || !domain.contains('.') {
            return Err(SimError::Invalid(format!(
                "tenant domain '{domain}' must be a DNS name"
            )));
        }
        let mut st = self.world();
        if st.tenant_domains.contains_key(&domain) {
            return Err(SimError::Invalid(format!("domain {domain} already exists")));
        }
        let id = spec
            .id
            .unwrap_or_else(|| uuid_from(st.seed, hash_str(&domain), 1));
        if st.tenants.contains_key(&id) {
            return Err(SimError::Invalid(format!("tenant {id} already exists")));
        }
        let display_name = spec.display_name.unwrap_or_else(|| {
            let first = domain.split('.').next().unwrap_or("Contoso");
            let mut c = first.chars();
            c.next()
                .map(|f| f.to_uppercase().collect::<String>() + c.as_str())
                .unwrap_or_default()
        });
        st.tenant_domains.insert(domain.clone(), id);
        st.tenants.insert(
            id,
            Tenant {
                id,
                domain: domain.clone(),
                display_name: display_name.clone(),
                service_principals: HashMap::new(),
                conditional_access_block: false,
                propagation: None,
                unconsented_error: UnconsentedError::default(),
                users: Vec::new(),
            },
        );
        Ok(TenantInfo {
            id,
            domain,
            display_name,
        })
    }

    pub fn tenant(&self, id_or_domain: &str) -> Result<TenantInfo, SimError> {
        let st = self.world();
        let id = Self::tenant_id(&st, id_or_domain)?;
        let t = &st.tenants[&id];
        Ok(TenantInfo {
            id,
            domain: t.domain.clone(),
            display_name: t.display_name.clone(),
        })
    }

    /// Block token issuance with AADSTS53003 (a Conditional Access policy).
    pub fn set_conditional_access_block(
        &self,
        tenant: Uuid,
        blocked: bool,
    ) -> Result<(), SimError> {
        let mut st = self.world();
        let t = st
            .tenants
            .get_mut(&tenant)
            .ok_or_else(|| SimError::NotFound(format!("tenant {tenant}")))?;
        t.conditional_access_block = blocked;
        Ok(())
    }

    /// Propagation window after consent: for one tenant, or (None) the simulator default.
    pub fn set_propagation(
        &self,
        tenant: Option<Uuid>,
        window: Duration,
        failure: PropagationFailure,
    ) -> Result<(), SimError> {
        let mut st = self.world();
        match tenant {
            Some(t) => {
                st.tenants
                    .get_mut(&t)
                    .ok_or_else(|| SimError::NotFound(format!("tenant {t}")))?
                    .propagation = Some((window, failure));
            }
            None => {
                st.propagation = window;
                st.propagation_failure = failure;
            }
        }
        Ok(())
    }

    /// Which error a token request gets when the app has no service principal in the tenant.
    pub fn set_unconsented_error(
        &self,
        tenant: Uuid,
        error: UnconsentedError,
    ) -> Result<(), SimError> {
        let mut st = self.world();
        st.tenants
            .get_mut(&tenant)
            .ok_or_else(|| SimError::NotFound(format!("tenant {tenant}")))?
            .unconsented_error = error;
        Ok(())
    }

    // ---- apps ---------------------------------------------------------------------------

    pub fn create_app(&self, spec: AppSpec) -> Result<AppInfo, SimError> {
        let mut st = self.world();
        let n = st.apps.len() as u64;
        let client_id = spec
            .client_id
            .unwrap_or_else(|| uuid_from(st.seed, hash_str(&spec.display_name), 100 + n));
        if st.apps.contains_key(&client_id) {
            return Err(SimError::Invalid(format!("app {client_id} already exists")));
        }
        let display_name = if spec.display_name.is_empty() {
            "o365-sync".to_string()
        } else {
            spec.display_name
        };
        st.apps.insert(
            client_id,
            App {
                client_id,
                display_name: display_name.clone(),
                redirect_uris: spec.redirect_uris.clone(),
                permissions: spec.permissions.clone(),
                id_token_wids: spec.id_token_wids,
                secrets: Vec::new(),
                certs: Vec::new(),
            },
        );
        Ok(AppInfo {
            client_id,
            display_name,
            redirect_uris: spec.redirect_uris,
            permissions: spec.permissions,
            id_token_wids: spec.id_token_wids,
        })
    }

    /// Change the registered permissions (existing consents keep their roles until re-consent).
    pub fn set_app_permissions(
        &self,
        client_id: Uuid,
        permissions: Vec<String>,
    ) -> Result<(), SimError> {
        let mut st = self.world();
        st.apps
            .get_mut(&client_id)
            .ok_or_else(|| SimError::NotFound(format!("app {client_id}")))?
            .permissions = permissions;
        Ok(())
    }

    /// Whether ID tokens for the app carry `wids` (directory roles in `groupMembershipClaims`).
    pub fn set_app_id_token_wids(&self, client_id: Uuid, emit: bool) -> Result<(), SimError> {
        let mut st = self.world();
        st.apps
            .get_mut(&client_id)
            .ok_or_else(|| SimError::NotFound(format!("app {client_id}")))?
            .id_token_wids = emit;
        Ok(())
    }

    pub fn add_redirect_uri(&self, client_id: Uuid, uri: &str) -> Result<(), SimError> {
        let mut st = self.world();
        st.apps
            .get_mut(&client_id)
            .ok_or_else(|| SimError::NotFound(format!("app {client_id}")))?
            .redirect_uris
            .push(uri.to_string());
        Ok(())
    }

    /// Add a client secret with a generated value (Entra-like shape).
    pub fn add_secret(
        &self,
        client_id: Uuid,
        expires_at: OffsetDateTime,
    ) -> Result<SecretInfo, SimError> {
        let value = {
            let st = self.world();
            let n = st
                .apps
                .get(&client_id)
                .map(|a| a.secrets.len())
                .unwrap_or(0) as u64;
            let mut bytes = Vec::new();
            for i in 0..4 {
                bytes.extend_from_slice(
                    &hash_parts(&[st.seed, 0x5ec, client_id.as_u64_pair().0, n, i]).to_be_bytes(),
                );
            }
            let b = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
            format!("{}8Q~{}", &b[..3], &b[3..37])
        };
        self.add_secret_value(client_id, &value, expires_at)
    }

    pub fn add_secret_value(
        &self,
        client_id: Uuid,
        value: &str,
        expires_at: OffsetDateTime,
    ) -> Result<SecretInfo, SimError> {
        let mut st = self.world();
        let seed = st.seed;
        let app = st
            .apps
            .get_mut(&client_id)
            .ok_or_else(|| SimError::NotFound(format!("app {client_id}")))?;
        let id = uuid_from(
            seed,
            client_id.as_u64_pair().1,
            200 + app.secrets.len() as u64,
        );
        app.secrets.push(Secret {
            id,
            value: value.to_string(),
            expires_at,
        });
        Ok(SecretInfo {
            id,
            value: value.to_string(),
            expires_at,
        })
    }

    /// Make one secret (or, with None, every secret of the app) expired as of now.
    pub fn expire_secret(&self, client_id: Uuid, secret_id: Option<Uuid>) -> Result<(), SimError> {
        let mut st = self.world();
        let app = st
            .apps
            .get_mut(&client_id)
            .ok_or_else(|| SimError::NotFound(format!("app {client_id}")))?;
        let past = now() - time::Duration::seconds(1);
        let mut found = false;
        for s in app
            .secrets
            .iter_mut()
            .filter(|s| secret_id.is_none_or(|id| id == s.id))
        {
            s.expires_at = past;
            found = true;
        }
        if found || secret_id.is_none() {
            Ok(())
        } else {
            Err(SimError::NotFound("secret".into()))
        }
    }

    /// Register an X.509 certificate (PEM, RSA key) as a credential of the app.
    pub fn add_certificate(&self, client_id: Uuid, pem: &str) -> Result<CertInfo, SimError> {
        let (x5t, x5t_s256, thumbprint, key) =
            crate::identity::read_certificate(pem).map_err(SimError::Invalid)?;
        let mut st = self.world();
        let seed = st.seed;
        let app = st
            .apps
            .get_mut(&client_id)
            .ok_or_else(|| SimError::NotFound(format!("app {client_id}")))?;
        let id = uuid_from(
            seed,
            client_id.as_u64_pair().1,
            300 + app.certs.len() as u64,
        );
        app.certs.push(Cert {
            id,
            x5t: x5t.clone(),
            x5t_s256: x5t_s256.clone(),
            key: Arc::new(key),
        });
        Ok(CertInfo {
            id,
            x5t,
            x5t_s256,
            thumbprint,
        })
    }

    // ---- users --------------------------------------------------------------------------

    pub fn create_user(&self, tenant: Uuid, spec: UserSpec) -> Result<UserInfo, SimError> {
        let mut st = self.world();
        let t = st
            .tenants
            .get(&tenant)
            .ok_or_else(|| SimError::NotFound(format!("tenant {tenant}")))?;
        let name = spec.user_name.trim();
        if name.is_empty() {
            return Err(SimError::Invalid("user_name is required".into()));
        }
        let upn = if name.contains('@') {
            name.to_ascii_lowercase()
        } else {
            format!("{}@{}", name.to_ascii_lowercase(), t.domain)
        };
        if st.upns.contains_key(&upn) {
            return Err(SimError::Invalid(format!("user {upn} already exists")));
        }
        let mail = spec
            .mail
            .as_deref()
            .map(str::trim)
            .filter(|m| !m.is_empty())
            .unwrap_or(&upn)
            .to_string();
        let aliases: Vec<String> = spec
            .proxy_addresses
            .iter()
            .map(|a| crate::directory::normalize_alias(a))
            .filter(|a| !crate::directory::same_address(a, &mail))
            .collect();
        for addr in std::iter::once(mail.as_str()).chain(aliases.iter().map(String::as_str)) {
            if let Some(other) = crate::directory::address_owner(&st, addr) {
                return Err(SimError::Invalid(format!(
                    "address {addr} already belongs to user {}",
                    st.users[&other].upn
                )));
            }
        }
        let id = spec
            .id
            .unwrap_or_else(|| uuid_from(st.seed, hash_str(&upn), tenant.as_u64_pair().0));
        let display_name = spec.display_name.clone().unwrap_or_else(|| {
            let local = upn.split('@').next().unwrap_or("user");
            local
                .split(['.', '_', '-'])
                .map(|p| {
                    let mut c = p.chars();
                    c.next()
                        .map(|f| f.to_uppercase().collect::<String>() + c.as_str())
                        .unwrap_or_default()
                })
                .collect::<Vec<_>>()
                .join(" ")
        });
        let mailbox = spec.mailbox.map(|m| {
            let num = st.mailboxes.len() as u32;
            st.mailboxes.push(Mailbox::new(num, id, m));
            num
        });
        let user = User {
            id,
            tenant,
            upn: upn.clone(),
            display_name,
            seed_address: mail.clone(),
            mail,
            aliases,
            global_admin: spec.global_admin,
            privileged_role_admin: spec.privileged_role_admin,
            licensed: spec.licensed,
            on_premises: spec.on_premises,
            access_policy_excluded: spec.access_policy_excluded,
            rbac_scoped_out: spec.rbac_scoped_out,
            mailbox,
            changed_at: std::time::Instant::now(),
        };
        let info = user.info();
        st.upns.insert(upn, id);
        st.users.insert(id, user);
        if let Some(t) = st.tenants.get_mut(&tenant) {
            t.users.push(id);
        }
        Ok(info)
    }

    /// Give an existing user an Exchange Online mailbox (e.g. created with `mailbox: None`).
    pub fn add_mailbox(&self, user: &str, spec: MailboxSpec) -> Result<UserInfo, SimError> {
        let mut st = self.world();
        let id = Self::user_id(&st, user)?;
        if st.users[&id].mailbox.is_some() {
            return Err(SimError::Invalid(format!(
                "user {user} already has a mailbox"
            )));
        }
        let num = st.mailboxes.len() as u32;
        st.mailboxes.push(Mailbox::new(num, id, spec));
        let Some(u) = st.users.get_mut(&id) else {
            return Err(SimError::NotFound(user.to_string()));
        };
        u.mailbox = Some(num);
        Ok(u.info())
    }

    pub fn user(&self, id_or_upn: &str) -> Result<UserInfo, SimError> {
        let st = self.world();
        let id = Self::user_id(&st, id_or_upn)?;
        Ok(st.users[&id].info())
    }

    pub fn users(&self, tenant: Uuid) -> Vec<UserInfo> {
        let st = self.world();
        st.tenants
            .get(&tenant)
            .map(|t| t.users.iter().map(|u| st.users[u].info()).collect())
            .unwrap_or_default()
    }

    pub fn set_user_flags(&self, user: &str, flags: UserFlags) -> Result<UserInfo, SimError> {
        let mut st = self.world();
        let id = Self::user_id(&st, user)?;
        let Some(u) = st.users.get_mut(&id) else {
            return Err(SimError::NotFound(user.to_string()));
        };
        if let Some(v) = flags.global_admin {
            u.global_admin = v;
        }
        if let Some(v) = flags.privileged_role_admin {
            u.privileged_role_admin = v;
        }
        if let Some(v) = flags.licensed {
            u.licensed = v;
        }
        if let Some(v) = flags.on_premises {
            u.on_premises = v;
        }
        if let Some(v) = flags.access_policy_excluded {
            u.access_policy_excluded = v;
        }
        if let Some(v) = flags.rbac_scoped_out {
            u.rbac_scoped_out = v;
        }
        Ok(u.info())
    }

    // ---- consent ------------------------------------------------------------------------

    /// Grant admin consent directly (what Accept does), without a browser.
    pub fn grant_consent(&self, tenant: Uuid, client_id: Uuid) -> Result<Vec<String>, SimError> {
        let mut st = self.world();
        if !st.tenants.contains_key(&tenant) {
            return Err(SimError::NotFound(format!("tenant {tenant}")));
        }
        if !st.apps.contains_key(&client_id) {
            return Err(SimError::NotFound(format!("app {client_id}")));
        }
        Ok(crate::consent::grant(&mut st, tenant, client_id, None))
    }

    /// Delete the app's service principal in the tenant (the enterprise app was removed).
    pub fn revoke_consent(&self, tenant: Uuid, client_id: Uuid) -> Result<(), SimError> {
        let mut st = self.world();
        let t = st
            .tenants
            .get_mut(&tenant)
            .ok_or_else(|| SimError::NotFound(format!("tenant {tenant}")))?;
        if t.service_principals.remove(&client_id).is_none() {
            return Err(SimError::NotFound("consent".into()));
        }
        for c in st
            .consents
            .iter_mut()
            .filter(|c| c.tenant_id == tenant && c.client_id == client_id)
        {
            c.revoked = true;
        }
        Ok(())
    }

    /// Keep the service principal but remove its granted roles (tokens then fail with 65001).
    pub fn remove_consent_grants(&self, tenant: Uuid, client_id: Uuid) -> Result<(), SimError> {
        let mut st = self.world();
        let t = st
            .tenants
            .get_mut(&tenant)
            .ok_or_else(|| SimError::NotFound(format!("tenant {tenant}")))?;
        let sp = t
            .service_principals
            .get_mut(&client_id)
            .ok_or_else(|| SimError::NotFound("consent".into()))?;
        sp.roles.clear();
        Ok(())
    }

    /// Roles currently granted to the app in the tenant (None = no service principal).
    pub fn granted_roles(&self, tenant: Uuid, client_id: Uuid) -> Option<Vec<String>> {
        let st = self.world();
        st.tenants
            .get(&tenant)?
            .service_principals
            .get(&client_id)
            .map(|sp| sp.roles.clone())
    }

    pub fn consents(&self) -> Vec<ConsentRecord> {
        self.world().consents.clone()
    }

    // ---- messages -----------------------------------------------------------------------

    fn mailbox_of(st: &World, user: &str) -> Result<u32, SimError> {
        let id = Self::user_id(st, user)?;
        st.users[&id]
            .mailbox
            .ok_or_else(|| SimError::Invalid(format!("user {user} has no mailbox")))
    }

    fn locate(&self, st: &World, id: &str) -> Result<(u32, MsgKey), SimError> {
        let (mbx, key) = parse_message_id(self.shared.cfg.seed, id)
            .ok_or_else(|| SimError::NotFound(format!("message {id}")))?;
        let m = st
            .mailboxes
            .get(mbx as usize)
            .ok_or_else(|| SimError::NotFound(format!("message {id}")))?;
        if !m.exists(key) {
            return Err(SimError::NotFound(format!("message {id}")));
        }
        Ok((mbx, key))
    }

    /// Deliver `count` new generated messages into a folder; returns their immutable ids.
    pub fn add_messages(
        &self,
        user: &str,
        folder: Folder,
        count: u32,
    ) -> Result<Vec<String>, SimError> {
        let mut st = self.world();
        let mbx = Self::mailbox_of(&st, user)?;
        let t = now();
        let seed = self.shared.cfg.seed;
        let m = &mut st.mailboxes[mbx as usize];
        Ok((0..count)
            .map(|_| immutable_id(seed, mbx, m.add(folder, None, t)))
            .collect())
    }

    /// Deliver one message with the given content; returns its immutable id.
    pub fn add_message(
        &self,
        user: &str,
        folder: Folder,
        msg: NewMessage,
    ) -> Result<String, SimError> {
        let mut st = self.world();
        let mbx = Self::mailbox_of(&st, user)?;
        let key = st.mailboxes[mbx as usize].add(folder, Some(msg), now());
        Ok(immutable_id(self.shared.cfg.seed, mbx, key))
    }

    /// Change a live message (either id form).
    pub fn update_message(&self, id: &str, patch: MessagePatch) -> Result<(), SimError> {
        let mut st = self.world();
        let (mbx, key) = self.locate(&st, id)?;
        st.mailboxes[mbx as usize].update(key, patch, now())
    }

    /// Hard-delete a live message (delta reports `@removed` reason `deleted`).
    pub fn delete_message(&self, id: &str) -> Result<(), SimError> {
        let mut st = self.world();
        let (mbx, key) = self.locate(&st, id)?;
        st.mailboxes[mbx as usize].delete(key, now())
    }

    /// Move a live message; returns its new (non-immutable) id.
    pub fn move_message(&self, id: &str, folder: Folder) -> Result<String, SimError> {
        let mut st = self.world();
        let (mbx, key) = self.locate(&st, id)?;
        let m = &mut st.mailboxes[mbx as usize];
        m.move_to(key, folder, now())?;
        Ok(regular_id(
            self.shared.cfg.seed,
            mbx,
            key,
            folder,
            m.move_gen(key),
        ))
    }

    /// Expire delta/skip tokens: of one mailbox folder, all folders of a mailbox, or everything.
    pub fn expire_delta_tokens(
        &self,
        user: Option<&str>,
        folder: Option<Folder>,
    ) -> Result<(), SimError> {
        let mut st = self.world();
        match user {
            None => st.global_epoch += 1,
            Some(u) => {
                let mbx = Self::mailbox_of(&st, u)?;
                let m = &mut st.mailboxes[mbx as usize];
                for f in Folder::ALL
                    .into_iter()
                    .filter(|f| folder.is_none_or(|x| x == *f))
                {
                    m.epochs[f.idx()] += 1;
                }
            }
        }
        Ok(())
    }

    // ---- ground truth and reports -------------------------------------------------------

    /// The exact live messages of a folder right now, newest first.
    pub fn live_messages(&self, user: &str, folder: Folder) -> Result<Vec<TruthMessage>, SimError> {
        let st = self.world();
        let mbx = Self::mailbox_of(&st, user)?;
        let ctx = self.render_ctx(&st, mbx);
        let m = &st.mailboxes[mbx as usize];
        let seed = self.shared.cfg.seed;
        Ok(m.live(folder)
            .into_iter()
            .map(|k| {
                let ov = m.overrides.get(&k);
                TruthMessage {
                    immutable_id: immutable_id(seed, mbx, k),
                    id: regular_id(seed, mbx, k, folder, m.move_gen(k)),
                    folder,
                    change_key: change_key(seed, mbx, k, ov.map(|o| o.version).unwrap_or(1)),
                    last_modified: graph_time(last_modified(&ctx, k, ov)),
                    received: graph_time(ctx.received(k, ov)),
                }
            })
            .collect())
    }

    pub fn message_count(&self, user: &str, folder: Folder) -> Result<usize, SimError> {
        let st = self.world();
        let mbx = Self::mailbox_of(&st, user)?;
        Ok(st.mailboxes[mbx as usize].live(folder).len())
    }

    /// Every protocol rule clients broke so far.
    pub fn violations(&self) -> Vec<Violation> {
        self.world().throttle.violations.clone()
    }

    pub fn clear_violations(&self) {
        self.world().throttle.violations.clear();
    }

    pub fn request_counts(&self) -> Vec<RequestCount> {
        let st = self.world();
        let mut v: Vec<RequestCount> = st
            .throttle
            .counters
            .iter()
            .map(|((e, m), c)| RequestCount {
                endpoint: *e,
                mailbox: *m,
                count: *c,
            })
            .collect();
        v.sort_by_key(|r| (r.endpoint, r.mailbox));
        v
    }

    /// Requests to an endpoint, for one mailbox owner (id or UPN) or summed over all.
    pub fn request_count(&self, endpoint: Endpoint, mailbox: Option<&str>) -> u64 {
        let st = self.world();
        let uid = mailbox.and_then(|m| st.find_user(m));
        st.throttle
            .counters
            .iter()
            .filter(|((e, m), _)| {
                *e == endpoint && (mailbox.is_none() || (uid.is_some() && *m == uid))
            })
            .map(|(_, c)| *c)
            .sum()
    }

    /// Highest number of concurrent Graph requests seen on the user's mailbox (rejected ones included).
    pub fn max_in_flight(&self, user: &str) -> Result<u32, SimError> {
        let st = self.world();
        let mbx = Self::mailbox_of(&st, user)?;
        Ok(st.mailboxes[mbx as usize].max_in_flight)
    }

    /// Set (replace) the faults of a scope; an empty spec clears it.
    pub fn set_faults(&self, scope: FaultScope, spec: FaultSpec) -> Result<(), SimError> {
        let mut st = self.world();
        let clear = spec == FaultSpec::default();
        match scope {
            FaultScope::Global => st.throttle.faults_global = (!clear).then_some((spec, 0)),
            FaultScope::Mailbox(u) => {
                let mbx = Self::mailbox_of(&st, &u)?;
                if clear {
                    st.throttle.faults_mailbox.remove(&mbx);
                } else {
                    st.throttle.faults_mailbox.insert(mbx, (spec, 0));
                }
            }
        }
        Ok(())
    }

    pub fn clear_faults(&self) {
        let mut st = self.world();
        st.throttle.faults_global = None;
        st.throttle.faults_mailbox.clear();
    }
}

// ---- JSON over HTTP ---------------------------------------------------------------------

type S = State<Arc<Shared>>;

fn h(s: &Arc<Shared>) -> SimHandle {
    SimHandle { shared: s.clone() }
}

pub(crate) fn reply<T: serde::Serialize>(r: Result<T, SimError>) -> Response {
    match r {
        Ok(v) => Json(v).into_response(),
        Err(e) => {
            let status = match e {
                SimError::NotFound(_) => StatusCode::NOT_FOUND,
                SimError::Invalid(_) => StatusCode::BAD_REQUEST,
                SimError::Io(_) => StatusCode::INTERNAL_SERVER_ERROR,
            };
            (status, Json(serde_json::json!({"error": e.to_string()}))).into_response()
        }
    }
}

fn parse_uuid(s: &str) -> Result<Uuid, SimError> {
    Uuid::parse_str(s).map_err(|_| SimError::Invalid(format!("'{s}' is not a GUID")))
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct TenantOptions {
    conditional_access_block: Option<bool>,
    propagation_ms: Option<u64>,
    propagation_failure: Option<PropagationFailure>,
    unconsented_error: Option<UnconsentedError>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct SecretReq {
    value: Option<String>,
    expires_in_secs: Option<i64>,
}

#[derive(Deserialize)]
struct CertReq {
    pem: String,
}

#[derive(Deserialize)]
struct ConsentReq {
    tenant: String,
    client_id: Uuid,
}

#[derive(Deserialize)]
struct AddReq {
    folder: Folder,
    #[serde(default)]
    count: Option<u32>,
    #[serde(default)]
    message: Option<NewMessage>,
}

#[derive(Deserialize)]
struct MoveReq {
    folder: Folder,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct ExpireReq {
    user: Option<String>,
    folder: Option<Folder>,
}

#[derive(Deserialize)]
struct FaultReq {
    scope: FaultScope,
    #[serde(default)]
    spec: FaultSpec,
}

#[derive(Deserialize)]
struct PropagationReq {
    tenant: Option<String>,
    window_ms: u64,
    #[serde(default)]
    failure: PropagationFailure,
}

pub(crate) fn router() -> Router<Arc<Shared>> {
    Router::new()
        .route("/health", get(|| async { "ok" }))
        .route("/tenants", post(|State(s): S, Json(b): Json<TenantSpec>| async move { reply(h(&s).create_tenant(b)) }))
        .route(
            "/tenants/{tenant}/options",
            post(|State(s): S, Path(t): Path<String>, Json(b): Json<TenantOptions>| async move {
                let hd = h(&s);
                reply((|| {
                    let id = hd.tenant(&t)?.id;
                    if let Some(v) = b.conditional_access_block {
                        hd.set_conditional_access_block(id, v)?;
                    }
                    if let Some(ms) = b.propagation_ms {
                        hd.set_propagation(Some(id), Duration::from_millis(ms), b.propagation_failure.unwrap_or_default())?;
                    }
                    if let Some(e) = b.unconsented_error {
                        hd.set_unconsented_error(id, e)?;
                    }
                    hd.tenant(&t)
                })())
            }),
        )
        .route(
            "/tenants/{tenant}/users",
            post(|State(s): S, Path(t): Path<String>, Json(b): Json<UserSpec>| async move {
                let hd = h(&s);
                reply(hd.tenant(&t).and_then(|ti| hd.create_user(ti.id, b)))
            })
            .get(|State(s): S, Path(t): Path<String>| async move {
                let hd = h(&s);
                reply(hd.tenant(&t).map(|ti| hd.users(ti.id)))
            }),
        )
        .route("/apps", post(|State(s): S, Json(b): Json<AppSpec>| async move { reply(h(&s).create_app(b)) }))
        .route(
            "/apps/{cid}/secrets",
            post(|State(s): S, Path(c): Path<String>, Json(b): Json<SecretReq>| async move {
                let hd = h(&s);
                reply(parse_uuid(&c).and_then(|cid| {
                    let exp = now() + time::Duration::seconds(b.expires_in_secs.unwrap_or(365 * 86_400));
                    match b.value {
                        Some(v) => hd.add_secret_value(cid, &v, exp),
                        None => hd.add_secret(cid, exp),
                    }
                }))
            }),
        )
        .route(
            "/apps/{cid}/secrets/expire",
            post(|State(s): S, Path(c): Path<String>| async move { reply(parse_uuid(&c).and_then(|cid| h(&s).expire_secret(cid, None))) }),
        )
        .route(
            "/apps/{cid}/secrets/{sid}/expire",
            post(|State(s): S, Path((c, sid)): Path<(String, String)>| async move {
                reply(parse_uuid(&c).and_then(|cid| h(&s).expire_secret(cid, Some(parse_uuid(&sid)?))))
            }),
        )
        .route(
            "/apps/{cid}/certificates",
            post(|State(s): S, Path(c): Path<String>, Json(b): Json<CertReq>| async move {
                reply(parse_uuid(&c).and_then(|cid| h(&s).add_certificate(cid, &b.pem)))
            }),
        )
        .route(
            "/users/{user}",
            get(|State(s): S, Path(u): Path<String>| async move { reply(h(&s).user(&u)) })
                .patch(|State(s): S, Path(u): Path<String>, Json(b): Json<UserFlags>| async move { reply(h(&s).set_user_flags(&u, b)) }),
        )
        .route(
            "/consents",
            post(|State(s): S, Json(b): Json<ConsentReq>| async move {
                let hd = h(&s);
                reply(hd.tenant(&b.tenant).and_then(|t| hd.grant_consent(t.id, b.client_id)))
            })
            .get(|State(s): S| async move { reply(Ok::<_, SimError>(h(&s).consents())) }),
        )
        .route(
            "/consents/{tenant}/{cid}",
            axum::routing::delete(|State(s): S, Path((t, c)): Path<(String, String)>| async move {
                let hd = h(&s);
                reply(hd.tenant(&t).and_then(|ti| hd.revoke_consent(ti.id, parse_uuid(&c)?)))
            }),
        )
        .route(
            "/users/{user}/mailbox",
            post(|State(s): S, Path(u): Path<String>, Json(b): Json<MailboxSpec>| async move { reply(h(&s).add_mailbox(&u, b)) }),
        )
        .route(
            "/users/{user}/messages",
            post(|State(s): S, Path(u): Path<String>, Json(b): Json<AddReq>| async move {
                let hd = h(&s);
                reply(match b.message {
                    Some(m) => hd.add_message(&u, b.folder, m).map(|id| vec![id]),
                    None => hd.add_messages(&u, b.folder, b.count.unwrap_or(1)),
                })
            }),
        )
        .route(
            "/users/{user}/truth/{folder}",
            get(|State(s): S, Path((u, f)): Path<(String, String)>| async move {
                let hd = h(&s);
                reply(Folder::parse(&f).ok_or_else(|| SimError::Invalid(format!("folder {f}"))).and_then(|f| hd.live_messages(&u, f)))
            }),
        )
        .route(
            "/users/{user}/max-in-flight",
            get(|State(s): S, Path(u): Path<String>| async move { reply(h(&s).max_in_flight(&u)) }),
        )
        .route(
            "/messages/{id}",
            patch(|State(s): S, Path(id): Path<String>, Json(b): Json<MessagePatch>| async move { reply(h(&s).update_message(&id, b)) })
                .delete(|State(s): S, Path(id): Path<String>| async move { reply(h(&s).delete_message(&id)) }),
        )
        .route(
            "/messages/{id}/move",
            post(|State(s): S, Path(id): Path<String>, Json(b): Json<MoveReq>| async move { reply(h(&s).move_message(&id, b.folder)) }),
        )
        .route(
            "/delta/expire",
            post(|State(s): S, Json(b): Json<ExpireReq>| async move { reply(h(&s).expire_delta_tokens(b.user.as_deref(), b.folder)) }),
        )
        .route(
            "/propagation",
            post(|State(s): S, Json(b): Json<PropagationReq>| async move {
                let hd = h(&s);
                reply((|| {
                    let t = match &b.tenant {
                        Some(t) => Some(hd.tenant(t)?.id),
                        None => None,
                    };
                    hd.set_propagation(t, Duration::from_millis(b.window_ms), b.failure)
                })())
            }),
        )
        .route(
            "/faults",
            axum::routing::put(|State(s): S, Json(b): Json<FaultReq>| async move { reply(h(&s).set_faults(b.scope, b.spec)) }).delete(
                |State(s): S| async move {
                    h(&s).clear_faults();
                    reply(Ok::<_, SimError>(()))
                },
            ),
        )
        .route(
            "/violations",
            get(|State(s): S| async move { reply(Ok::<_, SimError>(h(&s).violations())) }).delete(|State(s): S| async move {
                h(&s).clear_violations();
                reply(Ok::<_, SimError>(()))
            }),
        )
        .route("/counters", get(|State(s): S| async move { reply(Ok::<_, SimError>(h(&s).request_counts())) }))
}
