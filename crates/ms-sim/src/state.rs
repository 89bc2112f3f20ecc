//! In-memory world: tenants, apps, users and mailboxes. Seed messages are never stored:
//! a mailbox keeps only counts plus what changed (overrides, additions, moves, deletions)
//! and an append-only change log that delta queries replay.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::DecodingKey;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::config::{PropagationFailure, UnconsentedError};
use crate::model::*;
use crate::throttle::ThrottleState;
use crate::util::hash_parts;

pub(crate) struct State {
    pub seed: u64,
    pub tenants: HashMap<Uuid, Tenant>,
    pub tenant_domains: HashMap<String, Uuid>,
    pub apps: HashMap<Uuid, App>,
    pub users: HashMap<Uuid, User>,
    pub upns: HashMap<String, Uuid>,
    pub mailboxes: Vec<Mailbox>,
    /// Client-assertion `jti`s seen, with their expiry (unix seconds), to refuse replays.
    pub used_jti: HashMap<String, i64>,
    pub consents: Vec<ConsentRecord>,
    /// Bumped to expire every delta token at once.
    pub global_epoch: u32,
    pub propagation: Duration,
    pub propagation_failure: PropagationFailure,
    pub throttle: ThrottleState,
    /// Authorization codes, kept until they expire so a second redemption is recognised.
    pub codes: HashMap<String, crate::authorize::AuthCode>,
    /// Which ID-token keys are published and which one signs.
    pub ring: crate::signing::RingState,
    /// Discovery and JWKS answer 503.
    pub oidc_down: bool,
    pub id_token_tamper: Option<IdTokenTamper>,
}

pub(crate) struct Tenant {
    #[allow(dead_code)] // kept so a Tenant is self-describing when debugging
    pub id: Uuid,
    pub domain: String,
    pub display_name: String,
    pub service_principals: HashMap<Uuid, ServicePrincipal>,
    pub conditional_access_block: bool,
    pub propagation: Option<(Duration, PropagationFailure)>,
    pub unconsented_error: UnconsentedError,
    pub users: Vec<Uuid>,
}

pub(crate) struct ServicePrincipal {
    pub object_id: Uuid,
    /// Granted application roles; empty after the grants were removed.
    pub roles: Vec<String>,
    pub consented_at: Instant,
}

pub(crate) struct App {
    pub client_id: Uuid,
    pub display_name: String,
    pub redirect_uris: Vec<String>,
    pub permissions: Vec<String>,
    pub id_token_wids: bool,
    pub secrets: Vec<Secret>,
    pub certs: Vec<Cert>,
}

pub(crate) struct Secret {
    pub id: Uuid,
    pub value: String,
    pub expires_at: OffsetDateTime,
}

pub(crate) struct Cert {
    #[allow(dead_code)] // identifies the credential like Entra's keyId
    pub id: Uuid,
    pub x5t: String,
    pub x5t_s256: String,
    pub key: Arc<DecodingKey>,
}

pub(crate) struct User {
    pub id: Uuid,
    pub tenant: Uuid,
    pub upn: String,
    pub display_name: String,
    /// Primary SMTP address.
    pub mail: String,
    /// Proxy addresses besides the primary, e.g. `smtp:alias@contoso.com`.
    pub aliases: Vec<String>,
    /// The address seed mail is addressed to/from: a rename must not rewrite old mail.
    pub seed_address: String,
    pub global_admin: bool,
    pub privileged_role_admin: bool,
    pub licensed: bool,
    pub on_premises: bool,
    pub access_policy_excluded: bool,
    pub rbac_scoped_out: bool,
    pub mailbox: Option<u32>,
    /// Created or last renamed: an eventually consistent index lags behind this.
    pub changed_at: Instant,
}

impl User {
    /// `SMTP:{mail}` first, then the aliases.
    pub fn proxy_addresses(&self) -> Vec<String> {
        let mut v = vec![format!("SMTP:{}", self.mail)];
        v.extend(self.aliases.iter().cloned());
        v
    }

    /// Exchange Online hosts the mailbox: only then Graph shows `mail` and `proxyAddresses`.
    pub fn exchange_online(&self) -> bool {
        self.mailbox.is_some() && !self.on_premises
    }

    pub fn info(&self) -> UserInfo {
        UserInfo {
            id: self.id,
            tenant_id: self.tenant,
            user_principal_name: self.upn.clone(),
            display_name: self.display_name.clone(),
            mail: self.mail.clone(),
            proxy_addresses: self.proxy_addresses(),
            global_admin: self.global_admin,
            privileged_role_admin: self.privileged_role_admin,
            licensed: self.licensed,
            on_premises: self.on_premises,
            access_policy_excluded: self.access_policy_excluded,
            rbac_scoped_out: self.rbac_scoped_out,
            has_mailbox: self.mailbox.is_some(),
        }
    }
}

impl State {
    pub fn new(seed: u64, propagation: Duration, propagation_failure: PropagationFailure) -> Self {
        State {
            seed,
            tenants: HashMap::new(),
            tenant_domains: HashMap::new(),
            apps: HashMap::new(),
            users: HashMap::new(),
            upns: HashMap::new(),
            mailboxes: Vec::new(),
            used_jti: HashMap::new(),
            consents: Vec::new(),
            global_epoch: 0,
            propagation,
            propagation_failure,
            throttle: ThrottleState::default(),
            codes: HashMap::new(),
            ring: crate::signing::RingState::default(),
            oidc_down: false,
            id_token_tamper: None,
        }
    }

    /// A tenant by GUID or domain (case-insensitive).
    pub fn find_tenant(&self, s: &str) -> Option<Uuid> {
        if let Ok(id) = Uuid::parse_str(s) {
            return self.tenants.contains_key(&id).then_some(id);
        }
        self.tenant_domains.get(&s.to_ascii_lowercase()).copied()
    }

    /// A user by object id or UPN (case-insensitive), across all tenants.
    pub fn find_user(&self, s: &str) -> Option<Uuid> {
        if let Ok(id) = Uuid::parse_str(s) {
            return self.users.contains_key(&id).then_some(id);
        }
        self.upns.get(&s.to_ascii_lowercase()).copied()
    }

    /// Propagation window and failure mode for a tenant.
    pub fn propagation_for(&self, tenant: &Tenant) -> (Duration, PropagationFailure) {
        tenant
            .propagation
            .unwrap_or((self.propagation, self.propagation_failure))
    }

    /// True while a fresh consent has not "propagated" yet and fails the given way.
    pub fn propagating(
        &self,
        tenant: &Tenant,
        sp: &ServicePrincipal,
        mode: PropagationFailure,
    ) -> bool {
        let (window, m) = self.propagation_for(tenant);
        m == mode && sp.consented_at.elapsed() < window
    }
}

/// Identifies one message inside a mailbox: the folder it was created in and its index there.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct MsgKey {
    pub origin: Folder,
    pub index: u32,
}

/// What changed about one message relative to its seed content.
#[derive(Clone, Debug)]
pub(crate) struct Override {
    /// Current folder; None = deleted.
    pub folder: Option<Folder>,
    /// Bumped on every move: the non-immutable id includes it, so it changes on a move.
    pub move_gen: u16,
    pub version: u32,
    pub last_modified: OffsetDateTime,
    /// Arrival time of messages added after creation.
    pub received: Option<OffsetDateTime>,
    pub custom: Option<Arc<NewMessage>>,
    pub patch: MessagePatch,
}

#[derive(Clone, Copy, Debug)]
pub(crate) struct LogEntry {
    pub seq: u64,
    pub key: MsgKey,
    pub from: Option<Folder>,
    pub to: Option<Folder>,
    pub gen_from: u16,
}

pub(crate) struct Mailbox {
    #[allow(dead_code)] // equals its index in State::mailboxes
    pub num: u32,
    pub user: Uuid,
    pub generated: [u32; 4],
    pub added: [u32; 4],
    pub overrides: HashMap<MsgKey, Override>,
    /// Live messages whose current folder differs from their origin, per current folder.
    pub moved_in: [BTreeSet<MsgKey>; 4],
    pub log: Vec<LogEntry>,
    pub seq: u64,
    /// Bumped to expire the delta tokens of one folder.
    pub epochs: [u32; 4],
    pub max_in_flight: u32,
    pub in_flight: u32,
}

/// Position of a full (initial) delta round.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct FullCursor {
    /// 0: origin indices counting down; 1: messages moved in from other folders.
    pub phase: u8,
    pub pos: u32,
    pub emitted: u32,
}

#[derive(Clone, Copy, Debug)]
pub(crate) struct Filter {
    pub at: OffsetDateTime,
    pub strict: bool,
}

impl Filter {
    pub fn accepts(&self, t: OffsetDateTime) -> bool {
        if self.strict {
            t > self.at
        } else {
            t >= self.at
        }
    }
}

pub(crate) enum Change {
    Upsert(MsgKey),
    /// Removed from the folder: (key, reason is "deleted" (true) or "changed", move_gen it had there).
    Removed(MsgKey, bool, u16),
}

impl Mailbox {
    pub fn new(num: u32, user: Uuid, spec: MailboxSpec) -> Self {
        Mailbox {
            num,
            user,
            generated: [spec.inbox, spec.sentitems, 0, 0],
            added: [0; 4],
            overrides: HashMap::new(),
            moved_in: Default::default(),
            log: Vec::new(),
            seq: 0,
            epochs: [0; 4],
            max_in_flight: 0,
            in_flight: 0,
        }
    }

    pub fn total(&self, origin: Folder) -> u32 {
        self.generated[origin.idx()] + self.added[origin.idx()]
    }

    pub fn exists(&self, key: MsgKey) -> bool {
        key.index < self.total(key.origin)
    }

    pub fn location(&self, key: MsgKey) -> Option<Folder> {
        match self.overrides.get(&key) {
            Some(o) => o.folder,
            None if self.exists(key) => Some(key.origin),
            None => None,
        }
    }

    pub fn move_gen(&self, key: MsgKey) -> u16 {
        self.overrides.get(&key).map(|o| o.move_gen).unwrap_or(0)
    }

    fn log(&mut self, key: MsgKey, from: Option<Folder>, to: Option<Folder>, gen_from: u16) {
        self.seq += 1;
        self.log.push(LogEntry {
            seq: self.seq,
            key,
            from,
            to,
            gen_from,
        });
    }

    fn override_mut(&mut self, key: MsgKey) -> &mut Override {
        self.overrides.entry(key).or_insert_with(|| Override {
            folder: Some(key.origin),
            move_gen: 0,
            version: 1,
            last_modified: crate::util::now(),
            received: None,
            custom: None,
            patch: MessagePatch::default(),
        })
    }

    pub fn add(
        &mut self,
        folder: Folder,
        custom: Option<NewMessage>,
        now: OffsetDateTime,
    ) -> MsgKey {
        let key = MsgKey {
            origin: folder,
            index: self.total(folder),
        };
        self.added[folder.idx()] += 1;
        let received = custom.as_ref().and_then(|c| c.received).unwrap_or(now);
        self.overrides.insert(
            key,
            Override {
                folder: Some(folder),
                move_gen: 0,
                version: 1,
                last_modified: now,
                received: Some(received),
                custom: custom.map(Arc::new),
                patch: MessagePatch::default(),
            },
        );
        self.log(key, None, Some(folder), 0);
        key
    }

    pub fn update(
        &mut self,
        key: MsgKey,
        patch: MessagePatch,
        now: OffsetDateTime,
    ) -> Result<(), SimError> {
        let loc = self
            .location(key)
            .ok_or_else(|| SimError::NotFound("message".into()))?;
        let o = self.override_mut(key);
        o.version += 1;
        o.last_modified = now;
        let p = &mut o.patch;
        if patch.is_read.is_some() {
            p.is_read = patch.is_read;
        }
        if patch.subject.is_some() {
            p.subject = patch.subject;
        }
        if patch.categories.is_some() {
            p.categories = patch.categories;
        }
        if patch.importance.is_some() {
            p.importance = patch.importance;
        }
        if patch.body_html.is_some() {
            p.body_html = patch.body_html;
        }
        if patch.flagged.is_some() {
            p.flagged = patch.flagged;
        }
        let g = o.move_gen;
        self.log(key, Some(loc), Some(loc), g);
        Ok(())
    }

    pub fn delete(&mut self, key: MsgKey, now: OffsetDateTime) -> Result<(), SimError> {
        let loc = self
            .location(key)
            .ok_or_else(|| SimError::NotFound("message".into()))?;
        let o = self.override_mut(key);
        o.folder = None;
        o.last_modified = now;
        let g = o.move_gen;
        self.moved_in[loc.idx()].remove(&key);
        self.log(key, Some(loc), None, g);
        Ok(())
    }

    pub fn move_to(
        &mut self,
        key: MsgKey,
        dest: Folder,
        now: OffsetDateTime,
    ) -> Result<(), SimError> {
        let loc = self
            .location(key)
            .ok_or_else(|| SimError::NotFound("message".into()))?;
        if loc == dest {
            return Ok(());
        }
        let o = self.override_mut(key);
        let g = o.move_gen;
        o.folder = Some(dest);
        o.move_gen = o.move_gen.wrapping_add(1);
        o.version += 1;
        o.last_modified = now;
        self.moved_in[loc.idx()].remove(&key);
        if dest != key.origin {
            self.moved_in[dest.idx()].insert(key);
        }
        self.log(key, Some(loc), Some(dest), g);
        Ok(())
    }

    pub fn start_cursor(&self, folder: Folder) -> FullCursor {
        FullCursor {
            phase: 0,
            pos: self.total(folder),
            emitted: 0,
        }
    }

    /// Next keys of a full round, newest first. `seed_received` gives the received time of a
    /// seed message (monotonic in index, which lets a filter stop early). Returns true when done.
    #[allow(clippy::too_many_arguments)]
    pub fn full_page(
        &self,
        folder: Folder,
        cur: &mut FullCursor,
        limit: u32,
        filter: Option<Filter>,
        cap: u32,
        received: &dyn Fn(MsgKey, Option<&Override>) -> OffsetDateTime,
        out: &mut Vec<MsgKey>,
    ) -> bool {
        let generated = self.generated[folder.idx()];
        while (out.len() as u32) < limit {
            if filter.is_some() && cur.emitted >= cap {
                return true;
            }
            if cur.phase == 0 {
                if cur.pos == 0 {
                    cur.phase = 1;
                    cur.pos = 0;
                    continue;
                }
                cur.pos -= 1;
                let key = MsgKey {
                    origin: folder,
                    index: cur.pos,
                };
                let ov = self.overrides.get(&key);
                let loc = match ov {
                    Some(o) => o.folder,
                    None => Some(folder),
                };
                if loc != Some(folder) {
                    continue;
                }
                if let Some(f) = filter
                    && !f.accepts(received(key, ov))
                {
                    if key.index < generated {
                        // Seed messages get older as the index falls: nothing further matches.
                        cur.pos = 0;
                    }
                    continue;
                }
                cur.emitted += 1;
                out.push(key);
            } else {
                let Some(key) = self.moved_in[folder.idx()]
                    .iter()
                    .nth(cur.pos as usize)
                    .copied()
                else {
                    return true;
                };
                cur.pos += 1;
                if let Some(f) = filter
                    && !f.accepts(received(key, self.overrides.get(&key)))
                {
                    continue;
                }
                cur.emitted += 1;
                out.push(key);
            }
        }
        // Page full: done only if nothing remains.
        cur.phase == 1 && cur.pos as usize >= self.moved_in[folder.idx()].len()
    }

    /// Changes to `folder` between two log positions, keyed and reduced per message, starting
    /// at entry `offset` of that reduced list. Returns (changes, next offset or None when done).
    pub fn changes(
        &self,
        folder: Folder,
        from: u64,
        to: u64,
        offset: u32,
        limit: u32,
    ) -> (Vec<Change>, Option<u32>) {
        let start = self.log.partition_point(|e| e.seq <= from);
        let end = self.log.partition_point(|e| e.seq <= to);
        // per key: (location at `from`, final location, was in folder at some point, gen in folder)
        let mut red: BTreeMap<MsgKey, (Option<Folder>, Option<Folder>, bool, u16)> =
            BTreeMap::new();
        for e in &self.log[start..end] {
            let r =
                red.entry(e.key)
                    .or_insert((e.from, e.from, e.from == Some(folder), e.gen_from));
            if e.from == Some(folder) {
                r.2 = true;
                r.3 = e.gen_from;
            }
            if e.to == Some(folder) {
                r.2 = true;
            }
            r.1 = e.to;
        }
        let mut out = Vec::new();
        for (consumed, (key, (_, fin, ever, gen_in))) in
            (offset..).zip(red.iter().skip(offset as usize))
        {
            if out.len() as u32 >= limit {
                return (out, Some(consumed));
            }
            if *fin == Some(folder) {
                out.push(Change::Upsert(*key));
            } else if *ever {
                out.push(Change::Removed(*key, fin.is_none(), *gen_in));
            }
        }
        (out, None)
    }

    /// Every live message of a folder (ground truth), newest first.
    pub fn live(&self, folder: Folder) -> Vec<MsgKey> {
        let mut cur = self.start_cursor(folder);
        let mut out = Vec::new();
        let never = |_: MsgKey, _: Option<&Override>| OffsetDateTime::UNIX_EPOCH;
        self.full_page(folder, &mut cur, u32::MAX, None, u32::MAX, &never, &mut out);
        out
    }
}

// ---- ids ---------------------------------------------------------------------------------

const IMMUTABLE_PREFIX: &str = "AAkALgAAAAAA";
const REGULAR_PREFIX: &str = "AAMkAGI2AAAA";
const FOLDER_PREFIX: &str = "AAMkAGI2AAAB";

fn tag(seed: u64, mbx: u32, key: MsgKey) -> [u8; 4] {
    let h = hash_parts(&[
        seed,
        0x1d,
        u64::from(mbx),
        key.origin as u64,
        u64::from(key.index),
    ]);
    (h as u32).to_be_bytes()
}

fn key_bytes(seed: u64, mbx: u32, key: MsgKey) -> Vec<u8> {
    let mut b = Vec::with_capacity(16);
    b.extend_from_slice(&mbx.to_be_bytes());
    b.push(key.origin as u8);
    b.extend_from_slice(&key.index.to_be_bytes());
    b.extend_from_slice(&tag(seed, mbx, key));
    b
}

/// Id that survives moves (`Prefer: IdType="ImmutableId"`).
pub(crate) fn immutable_id(seed: u64, mbx: u32, key: MsgKey) -> String {
    format!(
        "{IMMUTABLE_PREFIX}{}",
        URL_SAFE_NO_PAD.encode(key_bytes(seed, mbx, key))
    )
}

/// Default Graph id: encodes the current folder and move generation, so it changes on a move.
pub(crate) fn regular_id(
    seed: u64,
    mbx: u32,
    key: MsgKey,
    folder: Folder,
    move_gen: u16,
) -> String {
    let mut b = key_bytes(seed, mbx, key);
    b.push(folder as u8);
    b.extend_from_slice(&move_gen.to_be_bytes());
    format!("{REGULAR_PREFIX}{}", URL_SAFE_NO_PAD.encode(b))
}

pub(crate) fn folder_id(seed: u64, mbx: u32, folder: Folder) -> String {
    let mut b = mbx.to_be_bytes().to_vec();
    b.push(folder as u8);
    b.extend_from_slice(&(hash_parts(&[seed, 0xf0, u64::from(mbx)]) as u32).to_be_bytes());
    format!("{FOLDER_PREFIX}{}", URL_SAFE_NO_PAD.encode(b))
}

/// Decode either id form back to (mailbox number, key).
pub(crate) fn parse_message_id(seed: u64, id: &str) -> Option<(u32, MsgKey)> {
    let body = id
        .strip_prefix(IMMUTABLE_PREFIX)
        .or_else(|| id.strip_prefix(REGULAR_PREFIX))?;
    let b = URL_SAFE_NO_PAD.decode(body).ok()?;
    if b.len() != 13 && b.len() != 16 {
        return None;
    }
    let mbx = u32::from_be_bytes(b[0..4].try_into().ok()?);
    let key = MsgKey {
        origin: Folder::from_idx(b[4])?,
        index: u32::from_be_bytes(b[5..9].try_into().ok()?),
    };
    (b[9..13] == tag(seed, mbx, key)).then_some((mbx, key))
}

/// Parse a folder segment: well-known name or one of our folder ids.
pub(crate) fn parse_folder(seed: u64, mbx: u32, s: &str) -> Option<Folder> {
    Folder::parse(s).or_else(|| {
        Folder::ALL
            .into_iter()
            .find(|f| folder_id(seed, mbx, *f) == s)
    })
}
