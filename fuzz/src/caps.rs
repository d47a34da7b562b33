//! Target `cap_token`: capability tokens as a client presents them, and tokens built from
//! arbitrary caveats.
//!
//! The first byte picks the mode. Text mode: the rest is the `Authorization` token text;
//! decoding never panics, a decoded token re-encodes to itself, and no token verifies under
//! two different root keys. Built mode: caveats (tenant and mailbox quotas among them), a
//! nonce (sometimes bound by the root to a tenant) and a request drawn from the input; a
//! minted token decodes to itself (or is refused for too many caveats), is signed by its
//! root and never another, stops verifying when a caveat is dropped, counts a tenant only
//! if its root bound the nonce to that tenant, and an added caveat only narrows what it
//! allows (bytes, tenant quota, mail quota).

use node::caps::{CAVEATS_MAX, Caveat, Grant, Intent, MailQuota, TenantQuota, Token, tenant_nonce};

use super::input::Input;

const ROOT: [u8; 32] = [0x11; 32];
const OTHER_ROOT: [u8; 32] = [0x22; 32];

/// Runs every check on one input; panics on a violation.
pub fn run(data: &[u8]) {
    let mut input = Input::new(data);
    let mode = input.byte();
    let method = match input.byte() % 4 {
        0 => "PUT".to_string(),
        1 => "put".to_string(),
        2 => "GET".to_string(),
        _ => String::from_utf8_lossy(input.bytes(6)).into_owned(),
    };
    let size = (input.byte() & 1 == 1).then(|| input.u64() % 4096);
    let now_unix = input.u64() % 4096;
    let intent = Intent {
        method: &method,
        size,
        now_unix,
    };
    if mode & 1 == 0 {
        from_text(&String::from_utf8_lossy(input.rest()), &intent);
    } else {
        built(&mut input, &intent);
    }
}

fn from_text(text: &str, intent: &Intent<'_>) {
    let Ok(t) = Token::decode(text) else { return };
    assert!(t.caveats().len() <= CAVEATS_MAX);
    assert_eq!(
        Token::decode(&t.encode()).ok(),
        Some(t.clone()),
        "re-encoding changed it"
    );
    assert!(
        !(t.signed_by(&ROOT) && t.signed_by(&OTHER_ROOT)),
        "one token verifies under two roots"
    );
    if let Ok(g) = t.grant(&ROOT, intent) {
        bound_tenant_only(&t, &g);
    }
}

/// Tenant names a token may carry: two real ones, the empty name, one too long.
fn tenant_name(input: &mut Input<'_>) -> String {
    match input.byte() % 4 {
        0 => "acme".to_string(),
        1 => "beta".to_string(),
        2 => String::new(),
        _ => "x".repeat(65),
    }
}

fn caveat(input: &mut Input<'_>) -> Caveat {
    match input.byte() % 5 {
        3 => Caveat::Tenant(TenantQuota {
            name: tenant_name(input),
            bytes_max: input.u64() % 8192,
            bytes_per_second: input.u64() % 8192,
        }),
        4 => Caveat::Mailbox(MailQuota {
            messages_max: u32::from(input.u16()),
            bytes_max: input.u64() % 8192,
        }),
        0 => Caveat::ExpiresAt(input.u64() % 8192),
        1 => {
            let n = usize::from(input.byte() % 3);
            let methods = (0..n)
                .map(|_| match input.byte() % 3 {
                    0 => "PUT".to_string(),
                    1 => "GET".to_string(),
                    _ => String::from_utf8_lossy(input.bytes(4)).into_owned(),
                })
                .collect();
            Caveat::Methods(methods)
        }
        _ => Caveat::MaxBytes(input.u64() % 8192),
    }
}

fn built(input: &mut Input<'_>, intent: &Intent<'_>) {
    let mut nonce = [0u8; 16];
    for x in &mut nonce {
        *x = input.byte();
    }
    if input.byte() & 1 == 1 {
        // As `token mint --tenant` does: the root binds the nonce to the tenant.
        let mut salt = [0u8; 8];
        salt.copy_from_slice(&nonce[..8]);
        nonce = tenant_nonce(&ROOT, salt, &tenant_name(input));
    }
    let n = usize::from(input.byte()) % (CAVEATS_MAX + 4);
    let caveats: Vec<Caveat> = (0..n).map(|_| caveat(input)).collect();
    let t = Token::mint(&ROOT, nonce, caveats.clone());
    assert_eq!(t.caveats(), &caveats[..]);
    match Token::decode(&t.encode()) {
        Ok(back) => assert_eq!(back, t),
        Err(e) => assert!(
            caveats.len() > CAVEATS_MAX || t.encode().len() > node::caps::TOKEN_LEN_MAX,
            "a minted token was refused: {e}"
        ),
    }
    assert!(t.signed_by(&ROOT), "a minted token fails its own root");
    assert!(!t.signed_by(&OTHER_ROOT), "verifies under another root");
    let verdict = t.grant(&ROOT, intent);
    if let Ok(g) = &verdict {
        bound_tenant_only(&t, g);
    }
    if let Some((_, fewer)) = caveats.split_last() {
        let dropped = Token::mint(&ROOT, nonce, fewer.to_vec());
        // Same caveats but the last, with the longer token's tag: a forged widening.
        if let Some(forged) = with_tag_of(&dropped, &t) {
            assert!(!forged.signed_by(&ROOT), "a dropped caveat still verifies");
        }
    }
    let narrower = t.clone().attenuate(caveat(input));
    assert!(narrower.signed_by(&ROOT), "attenuation broke the chain");
    if let Ok(after) = narrower.grant(&ROOT, intent) {
        let before = verdict.unwrap_or_else(|e| panic!("a caveat widened a refusal ({e})"));
        narrows(&before, &after);
    }
}

/// A granted tenant is one the token's root bound its nonce to, and every tenant caveat
/// names it with a quota no tighter than the grant's.
fn bound_tenant_only(t: &Token, g: &Grant) {
    let Some(q) = &g.tenant else { return };
    let mut salt = [0u8; 8];
    salt.copy_from_slice(&t.id()[..8]);
    assert_eq!(
        tenant_nonce(&ROOT, salt, &q.name),
        t.id(),
        "a tenant counted on a token not minted for it"
    );
    for c in t.caveats() {
        if let Caveat::Tenant(c) = c {
            assert_eq!(c.name, q.name, "a second tenant was granted");
            assert!(q.bytes_max <= c.bytes_max && q.bytes_per_second <= c.bytes_per_second);
        }
    }
}

/// What `after` (one caveat more) grants is within what `before` granted.
fn narrows(before: &Grant, after: &Grant) {
    match (before.max_bytes, after.max_bytes) {
        (Some(b), Some(a)) => assert!(a <= b, "attenuation raised the byte limit"),
        (Some(b), None) => panic!("attenuation removed the byte limit {b}"),
        _ => {}
    }
    match (&before.tenant, &after.tenant) {
        (Some(b), Some(a)) => {
            assert_eq!(a.name, b.name, "attenuation changed the tenant");
            assert!(
                a.bytes_max <= b.bytes_max && a.bytes_per_second <= b.bytes_per_second,
                "attenuation raised the tenant's quota"
            );
        }
        (Some(b), None) => panic!("attenuation removed the tenant {}", b.name),
        _ => {}
    }
    match (before.mail, after.mail) {
        (Some(b), Some(a)) => assert!(
            a.messages_max <= b.messages_max && a.bytes_max <= b.bytes_max,
            "attenuation raised the mail quota"
        ),
        (Some(_), None) => panic!("attenuation removed the mail quota"),
        _ => {}
    }
}

/// `shorter`'s caveats with `longer`'s tag, through the text form (the only way a client
/// can present a token): what someone would send after deleting a caveat. Tags are not
/// public; postcard writes a token's tag last, as 32 raw bytes.
fn with_tag_of(shorter: &Token, longer: &Token) -> Option<Token> {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let raw = |t: &Token| {
        URL_SAFE_NO_PAD
            .decode(t.encode().trim_start_matches("mn1."))
            .ok()
    };
    let (long, mut short) = (raw(longer)?, raw(shorter)?);
    let (tag_at, from) = (short.len().checked_sub(32)?, long.len().checked_sub(32)?);
    short[tag_at..].copy_from_slice(&long[from..]);
    Token::decode(&format!("mn1.{}", URL_SAFE_NO_PAD.encode(&short))).ok()
}
