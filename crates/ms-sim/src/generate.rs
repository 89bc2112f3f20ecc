//! Deterministic, lazily generated mail content. A seed message is a pure function of
//! (seed, mailbox number, origin folder, index), so 10,000 mailboxes cost no memory until a
//! message changes. Rendering writes Graph's JSON shapes directly into a string.

use time::{Duration, OffsetDateTime};

use crate::config::BodySizes;
use crate::model::{Folder, MessagePatch, NewMessage, Recipient};
use crate::state::{MsgKey, Override, folder_id, immutable_id, regular_id};
use crate::util::{Rng, graph_time, hash_parts, json_str};

const FIRST: &[&str] = &[
    "Adele",
    "Alex",
    "Allan",
    "Christie",
    "Debra",
    "Diego",
    "Emily",
    "Enrico",
    "Gerhart",
    "Grady",
    "Henrietta",
    "Isaiah",
    "Johanna",
    "Joni",
    "Lee",
    "Lidia",
    "Lynne",
    "Megan",
    "Miriam",
    "Nestor",
    "Patti",
    "Pradeep",
    "Irvin",
    "Aiko",
    "Bruno",
    "Chen",
    "Fatima",
    "Kwame",
    "Lucia",
    "Mateo",
    "Noor",
    "Olga",
    "Priya",
    "Sven",
];
const LAST: &[&str] = &[
    "Vance",
    "Wilber",
    "Cline",
    "Cline",
    "Berg",
    "Siciliani",
    "Braun",
    "Rossi",
    "Gerhart",
    "Durham",
    "Montoya",
    "Langer",
    "Lauer",
    "Sherman",
    "Gu",
    "Holloway",
    "Robbins",
    "Bowen",
    "Graham",
    "Wilke",
    "Fernandez",
    "Gupta",
    "Sayers",
    "Tanaka",
    "Costa",
    "Wei",
    "Haddad",
    "Mensah",
    "Alvarez",
    "Ruiz",
    "Khan",
    "Ivanova",
    "Nair",
    "Lund",
];
const DOMAINS: &[&str] = &[
    "fabrikam.com",
    "northwindtraders.com",
    "adatum.com",
    "tailspintoys.com",
    "litwareinc.com",
    "woodgrovebank.com",
];
const TOPICS: &[&str] = &[
    "Q3 budget",
    "Project Falcon",
    "quarterly business review",
    "onboarding checklist",
    "vendor contract",
    "release 2.4",
    "team offsite",
    "customer escalation",
    "hiring plan",
    "security audit",
    "product launch",
    "travel request",
    "board deck",
    "sprint planning",
    "pricing update",
    "support renewal",
    "office move",
    "data migration",
    "partner summit",
    "expense report",
];
const PATTERNS: &[&str] = &[
    "{} update",
    "RE: {}",
    "FW: {} notes",
    "Action required: {}",
    "{} - draft for review",
    "Meeting: {}",
    "Question about {}",
    "{} follow-up",
    "Re: Re: {}",
    "Reminder: {}",
];
const WORDS: &[&str] = &[
    "the",
    "team",
    "review",
    "schedule",
    "please",
    "customer",
    "update",
    "we",
    "will",
    "need",
    "to",
    "confirm",
    "before",
    "friday",
    "numbers",
    "look",
    "good",
    "attached",
    "draft",
    "latest",
    "version",
    "of",
    "and",
    "for",
    "meeting",
    "agenda",
    "next",
    "week",
    "budget",
    "approval",
    "timeline",
    "risk",
    "owner",
    "status",
    "on",
    "track",
    "let",
    "me",
    "know",
    "if",
    "you",
    "have",
    "questions",
    "thanks",
    "again",
    "project",
    "deadline",
    "is",
    "close",
    "our",
    "plan",
    "covers",
    "scope",
    "changes",
    "details",
    "below",
    "summary",
    "action",
    "items",
    "from",
    "call",
];

/// Field bits for `$select`. Bit 0 (id) is always on.
pub(crate) const FIELDS: &[&str] = &[
    "id",
    "createdDateTime",
    "lastModifiedDateTime",
    "changeKey",
    "categories",
    "receivedDateTime",
    "sentDateTime",
    "hasAttachments",
    "internetMessageId",
    "subject",
    "bodyPreview",
    "importance",
    "parentFolderId",
    "conversationId",
    "conversationIndex",
    "isDeliveryReceiptRequested",
    "isReadReceiptRequested",
    "isRead",
    "isDraft",
    "webLink",
    "inferenceClassification",
    "body",
    "sender",
    "from",
    "toRecipients",
    "ccRecipients",
    "bccRecipients",
    "replyTo",
    "flag",
];

pub(crate) const ALL_FIELDS: u32 = (1u32 << 29) - 1;

/// Parse `$select` into a field mask; Err(name) for an unknown property.
pub(crate) fn parse_select(s: &str) -> Result<u32, String> {
    let mut mask = 1u32;
    for name in s.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        match FIELDS.iter().position(|f| f.eq_ignore_ascii_case(name)) {
            Some(i) => mask |= 1 << i,
            None => return Err(name.to_string()),
        }
    }
    Ok(mask)
}

fn has(mask: u32, name: &str) -> bool {
    FIELDS
        .iter()
        .position(|f| *f == name)
        .is_some_and(|i| mask & (1 << i) != 0)
}

/// Who owns the mailbox being rendered.
#[derive(Clone)]
pub(crate) struct Owner {
    pub name: String,
    pub address: String,
}

/// Everything rendering needs, copied out of the state lock.
#[derive(Clone)]
pub(crate) struct RenderCtx {
    pub seed: u64,
    pub mbx: u32,
    pub owner: Owner,
    pub anchor: OffsetDateTime,
    pub history_days: u32,
    pub generated: [u32; 4],
    pub sizes: BodySizes,
}

impl RenderCtx {
    /// Received time of a seed message: spread over `history_days` before the anchor,
    /// strictly ordered by index (newest = highest index).
    pub fn seed_received(&self, key: MsgKey) -> OffsetDateTime {
        let g = self.generated[key.origin.idx()].max(1) as f64;
        let step = f64::from(self.history_days) * 86_400.0 / g;
        let back = (g - f64::from(key.index)) * step;
        let mut r = Rng::new(hash_parts(&[
            self.seed,
            0x7e,
            u64::from(self.mbx),
            key.origin as u64,
            u64::from(key.index),
        ]));
        let jitter = r.unit() * step * 0.5;
        self.anchor - Duration::seconds((back - jitter).max(0.0) as i64)
    }

    pub fn received(&self, key: MsgKey, ov: Option<&Override>) -> OffsetDateTime {
        ov.and_then(|o| o.received)
            .unwrap_or_else(|| self.seed_received(key))
    }
}

struct Base {
    subject: String,
    from: Recipient,
    to: Vec<Recipient>,
    cc: Vec<Recipient>,
    received: OffsetDateTime,
    sent: OffsetDateTime,
    is_read: bool,
    importance: &'static str,
    categories: Vec<String>,
    has_attachments: bool,
    conversation: u64,
    internet_message_id: String,
    body_size: u32,
    body_seed: u64,
    flagged: bool,
}

fn person(r: &mut Rng, domain: Option<&str>) -> Recipient {
    let first = *r.pick(FIRST);
    let last = *r.pick(LAST);
    let domain = domain
        .map(str::to_string)
        .unwrap_or_else(|| r.pick(DOMAINS).to_string());
    Recipient {
        name: format!("{first} {last}"),
        address: format!(
            "{}.{}@{}",
            first.to_lowercase(),
            last.to_lowercase(),
            domain
        ),
    }
}

fn body_size(r: &mut Rng, s: &BodySizes) -> u32 {
    let u = r.unit();
    let (lo, hi) = if u < s.large_share {
        (100 * 1024, s.max)
    } else if u < s.large_share + s.medium_share {
        (8 * 1024, 100 * 1024)
    } else {
        (s.min, 8 * 1024)
    };
    let (lo, hi) = (lo.clamp(s.min, s.max), hi.clamp(s.min, s.max));
    r.range(u64::from(lo), u64::from(hi) + 1) as u32
}

fn base(ctx: &RenderCtx, key: MsgKey, ov: Option<&Override>) -> Base {
    let mut r = Rng::new(hash_parts(&[
        ctx.seed,
        0xba5e,
        u64::from(ctx.mbx),
        key.origin as u64,
        u64::from(key.index),
    ]));
    let domain = ctx
        .owner
        .address
        .split('@')
        .nth(1)
        .unwrap_or("contoso.com")
        .to_string();
    let owner = Recipient {
        name: ctx.owner.name.clone(),
        address: ctx.owner.address.clone(),
    };
    let topic = *r.pick(TOPICS);
    let subject = r.pick(PATTERNS).replace("{}", topic);
    let colleague = r.chance(0.5);
    let other = person(&mut r, colleague.then_some(domain.as_str()));
    let mut cc = Vec::new();
    for _ in 0..r.below(3) {
        cc.push(person(&mut r, Some(&domain)));
    }
    let sent_items = key.origin == Folder::SentItems;
    let (from, mut to) = if sent_items {
        (owner.clone(), vec![other])
    } else {
        (other, vec![owner])
    };
    if r.chance(0.3) {
        to.push(person(&mut r, None));
    }
    let received = ctx.received(key, ov);
    let sent = received - Duration::seconds(r.range(1, 90) as i64);
    let is_read = sent_items || r.chance(0.8);
    let importance = if r.chance(0.05) {
        "high"
    } else if r.chance(0.02) {
        "low"
    } else {
        "normal"
    };
    let categories = if r.chance(0.1) {
        vec!["Blue category".to_string()]
    } else {
        Vec::new()
    };
    let has_attachments = r.chance(0.12);
    let conversation = hash_parts(&[
        ctx.seed,
        u64::from(ctx.mbx),
        hash_str_u(topic),
        key.index as u64 / 4,
    ]);
    let internet_message_id = format!(
        "<{:016x}{:08x}@{}>",
        r.next_u64(),
        key.index,
        from.address.split('@').nth(1).unwrap_or("mail")
    );
    let body_size = body_size(&mut r, &ctx.sizes);
    let flagged = r.chance(0.03);
    Base {
        subject,
        from,
        to,
        cc,
        received,
        sent,
        is_read,
        importance,
        categories,
        has_attachments,
        conversation,
        internet_message_id,
        body_size,
        body_seed: r.next_u64(),
        flagged,
    }
}

fn hash_str_u(s: &str) -> u64 {
    crate::util::hash_str(s)
}

fn sentence(r: &mut Rng, out: &mut String) {
    let n = r.range(6, 17);
    for i in 0..n {
        let w = *r.pick(WORDS);
        if i == 0 {
            let mut c = w.chars();
            if let Some(f) = c.next() {
                out.extend(f.to_uppercase());
                out.push_str(c.as_str());
            }
        } else {
            out.push(' ');
            out.push_str(w);
        }
    }
    out.push('.');
}

fn paragraph(r: &mut Rng) -> String {
    let mut p = String::with_capacity(600);
    for i in 0..r.range(2, 7) {
        if i > 0 {
            p.push(' ');
        }
        sentence(r, &mut p);
    }
    p
}

fn first_name(name: &str) -> &str {
    name.split(' ').next().unwrap_or(name)
}

/// Generated HTML body of about `size` bytes.
fn body_html(b: &Base, size: u32) -> String {
    let mut r = Rng::new(b.body_seed);
    let mut html = String::with_capacity(size as usize + 1024);
    html.push_str("<html><head>\r\n<meta http-equiv=\"Content-Type\" content=\"text/html; charset=utf-8\">\r\n</head>\r\n<body>\r\n");
    html.push_str(&format!("<div>Hi {},</div>\r\n", first_name(&b.to[0].name)));
    while html.len() < size as usize {
        html.push_str("<p>");
        html.push_str(&paragraph(&mut r));
        html.push_str("</p>\r\n");
    }
    html.push_str(&format!(
        "<div>Best regards,<br>{}</div>\r\n</body>\r\n</html>\r\n",
        b.from.name
    ));
    html
}

/// Plain-text start of the generated body: same stream as `body_html`, cut at 255 chars.
fn body_preview(b: &Base) -> String {
    let mut r = Rng::new(b.body_seed);
    let mut text = format!("Hi {},\r\n\r\n", first_name(&b.to[0].name));
    while text.chars().count() < 255 {
        text.push_str(&paragraph(&mut r));
        text.push_str("\r\n\r\n");
    }
    text.chars().take(255).collect()
}

/// Text of an HTML string (tags dropped, whitespace collapsed), first 255 chars.
fn preview_of_html(html: &str) -> String {
    let mut text = String::new();
    let mut in_tag = false;
    let mut last_space = true;
    for c in html.chars() {
        match c {
            '<' => in_tag = true,
            '>' => {
                in_tag = false;
                if !last_space {
                    text.push(' ');
                    last_space = true;
                }
            }
            _ if in_tag => {}
            c if c.is_whitespace() => {
                if !last_space {
                    text.push(' ');
                    last_space = true;
                }
            }
            c => {
                text.push(c);
                last_space = false;
            }
        }
        if text.chars().count() >= 300 {
            break;
        }
    }
    crate::util::html_unescape(text.trim())
        .chars()
        .take(255)
        .collect()
}

/// A message as it currently is, plus how it is addressed in this response.
pub(crate) struct View {
    pub key: MsgKey,
    pub ov: Option<Override>,
    pub folder: Folder,
}

pub(crate) fn change_key(seed: u64, mbx: u32, key: MsgKey, version: u32) -> String {
    let h = hash_parts(&[
        seed,
        0xc4,
        u64::from(mbx),
        key.origin as u64,
        u64::from(key.index),
        u64::from(version),
    ]);
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(
        [
            &[0x09, 0x00, 0x00, 0x00, 0x16, 0x00][..],
            &h.to_be_bytes(),
            &(h.rotate_left(17)).to_be_bytes(),
        ]
        .concat(),
    )
}

pub(crate) fn last_modified(ctx: &RenderCtx, key: MsgKey, ov: Option<&Override>) -> OffsetDateTime {
    match ov {
        Some(o)
            if o.version > 1 || o.received.is_some() || o.move_gen > 0 || o.folder.is_none() =>
        {
            o.last_modified
        }
        _ => ctx.seed_received(key) + Duration::seconds(2),
    }
}

fn recipients(out: &mut String, list: &[Recipient]) {
    out.push('[');
    for (i, p) in list.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        recipient(out, p);
    }
    out.push(']');
}

fn recipient(out: &mut String, p: &Recipient) {
    out.push_str("{\"emailAddress\":{\"name\":");
    json_str(out, &p.name);
    out.push_str(",\"address\":");
    json_str(out, &p.address);
    out.push_str("}}");
}

/// Render one message object with the selected fields.
pub(crate) fn render_message(
    out: &mut String,
    ctx: &RenderCtx,
    v: &View,
    mask: u32,
    immutable: bool,
) {
    let ov = v.ov.as_ref();
    let mut b = base(ctx, v.key, ov);
    let custom: Option<&NewMessage> = ov.and_then(|o| o.custom.as_deref());
    let empty = MessagePatch::default();
    let patch = ov.map(|o| &o.patch).unwrap_or(&empty);
    if let Some(c) = custom {
        if let Some(s) = &c.subject {
            b.subject = s.clone();
        }
        if let Some(f) = &c.from {
            b.from = f.clone();
        }
        if let Some(t) = &c.to
            && !t.is_empty()
        {
            b.to = t.clone();
        }
        if let Some(cc) = &c.cc {
            b.cc = cc.clone();
        }
        if let Some(x) = c.is_read {
            b.is_read = x;
        }
        if let Some(x) = c.has_attachments {
            b.has_attachments = x;
        }
    }
    if let Some(s) = &patch.subject {
        b.subject = s.clone();
    }
    if let Some(x) = patch.is_read {
        b.is_read = x;
    }
    if let Some(c) = &patch.categories {
        b.categories = c.clone();
    }
    if let Some(f) = patch.flagged {
        b.flagged = f;
    }
    let importance = patch
        .importance
        .clone()
        .unwrap_or_else(|| b.importance.to_string());
    let custom_html = patch
        .body_html
        .clone()
        .or_else(|| custom.and_then(|c| c.body_html.clone()));
    let version = ov.map(|o| o.version).unwrap_or(1);
    let move_gen = ov.map(|o| o.move_gen).unwrap_or(0);
    let id = if immutable {
        immutable_id(ctx.seed, ctx.mbx, v.key)
    } else {
        regular_id(ctx.seed, ctx.mbx, v.key, v.folder, move_gen)
    };
    let ck = change_key(ctx.seed, ctx.mbx, v.key, version);

    out.push_str("{\"@odata.etag\":");
    json_str(out, &format!("W/\"{ck}\""));
    out.push_str(",\"id\":");
    json_str(out, &id);
    let s = |name: &str, out: &mut String| -> bool {
        if has(mask, name) {
            out.push_str(",\"");
            out.push_str(name);
            out.push_str("\":");
            true
        } else {
            false
        }
    };
    if s("createdDateTime", out) {
        json_str(out, &graph_time(b.received));
    }
    if s("lastModifiedDateTime", out) {
        json_str(out, &graph_time(last_modified(ctx, v.key, ov)));
    }
    if s("changeKey", out) {
        json_str(out, &ck);
    }
    if s("categories", out) {
        out.push('[');
        for (i, c) in b.categories.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            json_str(out, c);
        }
        out.push(']');
    }
    if s("receivedDateTime", out) {
        json_str(out, &graph_time(b.received));
    }
    if s("sentDateTime", out) {
        json_str(out, &graph_time(b.sent));
    }
    if s("hasAttachments", out) {
        out.push_str(if b.has_attachments { "true" } else { "false" });
    }
    if s("internetMessageId", out) {
        json_str(out, &b.internet_message_id);
    }
    if s("subject", out) {
        json_str(out, &b.subject);
    }
    if s("bodyPreview", out) {
        let p = match &custom_html {
            Some(h) => preview_of_html(h),
            None => body_preview(&b),
        };
        json_str(out, &p);
    }
    if s("importance", out) {
        json_str(out, &importance);
    }
    if s("parentFolderId", out) {
        json_str(out, &folder_id(ctx.seed, ctx.mbx, v.folder));
    }
    if s("conversationId", out) {
        use base64::Engine;
        let cid = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode([&ctx.mbx.to_be_bytes()[..], &b.conversation.to_be_bytes()].concat());
        json_str(out, &format!("AAQkAGI2{cid}"));
    }
    if s("conversationIndex", out) {
        use base64::Engine;
        json_str(
            out,
            &base64::engine::general_purpose::STANDARD.encode(b.conversation.to_be_bytes()),
        );
    }
    if s("isDeliveryReceiptRequested", out) {
        out.push_str("false");
    }
    if s("isReadReceiptRequested", out) {
        out.push_str("false");
    }
    if s("isRead", out) {
        out.push_str(if b.is_read { "true" } else { "false" });
    }
    if s("isDraft", out) {
        out.push_str("false");
    }
    if s("webLink", out) {
        let enc = percent_encoding::utf8_percent_encode(&id, percent_encoding::NON_ALPHANUMERIC)
            .to_string();
        json_str(
            out,
            &format!(
                "https://outlook.office365.com/owa/?ItemID={enc}&exvsurl=1&viewmodel=ReadMessageItem"
            ),
        );
    }
    if s("inferenceClassification", out) {
        out.push_str("\"focused\"");
    }
    if s("body", out) {
        out.push_str("{\"contentType\":\"html\",\"content\":");
        match &custom_html {
            Some(h) => json_str(out, h),
            None => json_str(out, &body_html(&b, b.body_size)),
        }
        out.push('}');
    }
    if s("sender", out) {
        recipient(out, &b.from);
    }
    if s("from", out) {
        recipient(out, &b.from);
    }
    if s("toRecipients", out) {
        recipients(out, &b.to);
    }
    if s("ccRecipients", out) {
        recipients(out, &b.cc);
    }
    if s("bccRecipients", out) {
        out.push_str("[]");
    }
    if s("replyTo", out) {
        out.push_str("[]");
    }
    if s("flag", out) {
        out.push_str(if b.flagged {
            "{\"flagStatus\":\"flagged\"}"
        } else {
            "{\"flagStatus\":\"notFlagged\"}"
        });
    }
    out.push('}');
}
