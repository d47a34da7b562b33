//! Capability tokens for gateway writes: a macaroon-style chain of keyed BLAKE3 MACs.
//!
//! A token is a nonce, a list of caveats and a tag. The tag starts as
//! `keyed_blake3(root, "macronode-cap-v1" ‖ nonce)` and each caveat is folded in with
//! `tag = keyed_blake3(tag, caveat)`. Anyone holding a token can add a caveat (attenuate it:
//! narrower, never wider) without the root key; only the node that knows the root key can
//! check it, in constant time. Caveats: expiry (unix seconds), allowed methods, max bytes,
//! a tenant with its write quota (bytes stored, bytes per second), which the node
//! enforces across all of that tenant's tokens (`quota.rs`), and a mail quota (messages
//! and payload bytes the token's principal may hold in any one mailbox), which every
//! holder of the mailbox enforces (`mail.rs`, `MailboxRequest::SendFor`).
//!
//! A tenant is who pays: unlike the other caveats, naming one is not a narrowing a holder
//! may add. A tenant caveat counts only on a token whose nonce the root key's holder bound
//! to that tenant at mint ([`tenant_nonce`]); else anyone holding any token could write as
//! any tenant, spending its quota and its share of the write slots.
//!
//! Text form: `mn1.` followed by unpadded base64url of the postcard-encoded token.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};

/// Token text prefix: format version 1.
pub const PREFIX: &str = "mn1.";
/// Longest token text accepted.
pub const TOKEN_LEN_MAX: usize = 4096;
/// Most caveats in one token.
pub const CAVEATS_MAX: usize = 32;
/// Longest tenant name.
pub const TENANT_NAME_MAX: usize = 64;
const CONTEXT: &[u8] = b"macronode-cap-v1";
/// The BLAKE3 key-derivation context of the subkey tenant bindings are made under, apart
/// from the token chain's own use of the root key.
const TENANT_KEY_CONTEXT: &str = "macronode capability tenant binding v1";

/// The nonce of a token that names `tenant`: `salt` (8 random bytes, which keep tokens
/// apart) and 8 bytes of a MAC under `root` over the salt and the name, so only the root
/// key's holder can make a token a tenant's (a forger has one chance in 2^64 per try, each
/// try a request the node refuses).
pub fn tenant_nonce(root: &[u8; 32], salt: [u8; 8], tenant: &str) -> [u8; 16] {
    let mut nonce = [0u8; 16];
    nonce[..8].copy_from_slice(&salt);
    nonce[8..].copy_from_slice(&tenant_tag(root, &salt, tenant));
    nonce
}

fn tenant_tag(root: &[u8; 32], salt: &[u8], tenant: &str) -> [u8; 8] {
    let key = blake3::derive_key(TENANT_KEY_CONTEXT, root);
    let mut h = blake3::Hasher::new_keyed(&key);
    h.update(salt);
    h.update(tenant.as_bytes());
    let mut tag = [0u8; 8];
    tag.copy_from_slice(&h.finalize().as_bytes()[..8]);
    tag
}

/// Whether `nonce` was bound to `tenant` under `root` ([`tenant_nonce`]), compared without
/// an early exit.
fn names_tenant(root: &[u8; 32], nonce: &[u8; 16], tenant: &str) -> bool {
    let want = tenant_tag(root, &nonce[..8], tenant);
    want.iter()
        .zip(&nonce[8..])
        .fold(0u8, |acc, (a, b)| acc | (a ^ b))
        == 0
}

/// A restriction a token carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Caveat {
    /// Invalid from this unix time (seconds) on.
    ExpiresAt(u64),
    /// Only these HTTP methods.
    Methods(Vec<String>),
    /// Bodies of at most this many bytes.
    MaxBytes(u64),
    /// Writes count against this tenant's quota.
    Tenant(TenantQuota),
    /// Mail sent with this token holds at most this much in any one mailbox. Appended
    /// last: postcard encodes the variant's index, so tokens minted before it still verify.
    Mailbox(MailQuota),
}

/// The most a token's principal (its tenant, else the token) may hold in any one mailbox,
/// at each holder. Holders cut it further to their own sender quota.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct MailQuota {
    /// Messages held at once.
    pub messages_max: u32,
    /// Payload bytes held at once.
    pub bytes_max: u64,
}

impl MailQuota {
    /// No limit of its own: the holders' sender quota alone applies.
    pub const UNLIMITED: MailQuota = MailQuota {
        messages_max: u32::MAX,
        bytes_max: u64::MAX,
    };

    /// The tighter of each limit.
    pub fn min(self, other: MailQuota) -> MailQuota {
        MailQuota {
            messages_max: self.messages_max.min(other.messages_max),
            bytes_max: self.bytes_max.min(other.bytes_max),
        }
    }
}

/// A tenant and the write quota its tokens carry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantQuota {
    /// The tenant's name (at most 64 bytes).
    pub name: String,
    /// Bytes the tenant may have written in all.
    pub bytes_max: u64,
    /// Bytes per second the tenant may write, on average.
    pub bytes_per_second: u64,
}

/// What a verified token allows beyond its method and expiry.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Grant {
    /// The tightest body size limit its caveats set.
    pub max_bytes: Option<u64>,
    /// The tenant it writes as, with the tightest quota its caveats set.
    pub tenant: Option<TenantQuota>,
    /// The tightest mail quota its caveats set.
    pub mail: Option<MailQuota>,
}

/// The BLAKE3 derive-key context of a mail principal.
const PRINCIPAL_CONTEXT: &str = "macronode mailbox principal v1";

impl Grant {
    /// Who, behind a gateway, writes with this token: the tenant if the token names one
    /// (all its tokens share one quota), else the token itself; hashed, so holders count
    /// it without learning a name or an id they could use. Mail counts against it at every
    /// holder, gateway PUTs for their share of the node's write slots.
    pub fn principal(&self, token_id: &[u8; 16]) -> [u8; 32] {
        let mut h = blake3::Hasher::new_derive_key(PRINCIPAL_CONTEXT);
        match &self.tenant {
            Some(t) => {
                h.update(b"tenant:");
                h.update(t.name.as_bytes());
            }
            None => {
                h.update(b"token:");
                h.update(token_id);
            }
        }
        *h.finalize().as_bytes()
    }
}

/// A capability token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Token {
    nonce: [u8; 16],
    caveats: Vec<Caveat>,
    tag: [u8; 32],
}

/// Why a token was refused. `Missing`, `Invalid`, `Revoked` and `Rotated` mean "not
/// authenticated" (401: the credential is no good); the rest mean "authenticated, not
/// allowed" (403).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CapError {
    /// No token was presented.
    #[error("a capability token is required: Authorization: Bearer mn1...")]
    Missing,
    /// The token is malformed or its MAC chain does not verify.
    #[error("invalid capability token: {0}")]
    Invalid(&'static str),
    /// The token expired.
    #[error("capability token expired at {0} (unix seconds)")]
    Expired(u64),
    /// The token does not allow this method.
    #[error("capability token does not allow {0}")]
    Method(String),
    /// The token's id is on the node's revocation list.
    #[error("capability token {0} has been revoked")]
    Revoked(String),
    /// The token was minted under a capability root rotated out, whose grace ended.
    #[error(
        "capability token's root was rotated out; its grace ended at {0} (unix seconds): mint a new one"
    )]
    Rotated(u64),
    /// The body is larger than the token allows.
    #[error("capability token allows at most {max} bytes, request has {got}")]
    TooLarge {
        /// The caveat's limit.
        max: u64,
        /// The request's size.
        got: u64,
    },
}

impl CapError {
    /// Whether this is an authentication failure (401) rather than a refusal (403).
    pub fn is_unauthenticated(&self) -> bool {
        matches!(
            self,
            CapError::Missing | CapError::Invalid(_) | CapError::Revoked(_) | CapError::Rotated(_)
        )
    }
}

/// What a request asks to do, for checking against caveats.
#[derive(Debug, Clone)]
pub struct Intent<'a> {
    /// HTTP method.
    pub method: &'a str,
    /// Body size if known up front (Content-Length).
    pub size: Option<u64>,
    /// Current unix time in seconds.
    pub now_unix: u64,
}

fn fold(tag: [u8; 32], caveat: &Caveat) -> [u8; 32] {
    let bytes = postcard::to_allocvec(caveat).unwrap_or_default();
    *blake3::keyed_hash(&tag, &bytes).as_bytes()
}

fn start(root: &[u8; 32], nonce: &[u8; 16]) -> [u8; 32] {
    let mut h = blake3::Hasher::new_keyed(root);
    h.update(CONTEXT);
    h.update(nonce);
    *h.finalize().as_bytes()
}

impl Token {
    /// A new token under `root` with these caveats.
    pub fn mint(root: &[u8; 32], nonce: [u8; 16], caveats: Vec<Caveat>) -> Token {
        let mut t = Token {
            nonce,
            caveats: Vec::new(),
            tag: start(root, &nonce),
        };
        for c in caveats {
            t = t.attenuate(c);
        }
        t
    }

    /// This token with one more caveat; needs no key.
    pub fn attenuate(mut self, caveat: Caveat) -> Token {
        self.tag = fold(self.tag, &caveat);
        self.caveats.push(caveat);
        self
    }

    /// The token's id: its nonce (random; for a tenant's token, 8 random bytes and 8 that
    /// bind the tenant), shown by `token mint` and named by `token revoke`.
    /// Attenuations of a token keep its id.
    pub fn id(&self) -> [u8; 16] {
        self.nonce
    }

    /// The caveats, in order.
    pub fn caveats(&self) -> &[Caveat] {
        &self.caveats
    }

    /// The text form.
    pub fn encode(&self) -> String {
        format!(
            "{PREFIX}{}",
            URL_SAFE_NO_PAD.encode(postcard::to_allocvec(self).unwrap_or_default())
        )
    }

    /// Parses the text form (no verification yet).
    pub fn decode(text: &str) -> Result<Token, CapError> {
        if text.len() > TOKEN_LEN_MAX {
            return Err(CapError::Invalid("token too long"));
        }
        let b64 = text
            .strip_prefix(PREFIX)
            .ok_or(CapError::Invalid("unknown token format"))?;
        let raw = URL_SAFE_NO_PAD
            .decode(b64)
            .map_err(|_| CapError::Invalid("not base64url"))?;
        let (t, rest) = postcard::take_from_bytes::<Token>(&raw)
            .map_err(|_| CapError::Invalid("malformed token"))?;
        if !rest.is_empty() || t.caveats.len() > CAVEATS_MAX {
            return Err(CapError::Invalid("malformed token"));
        }
        Ok(t)
    }

    /// Whether the MAC chain verifies under `root` (constant time), whatever the caveats
    /// say: which root a token is of, before judging what it asks.
    pub fn signed_by(&self, root: &[u8; 32]) -> bool {
        let mut tag = start(root, &self.nonce);
        for c in &self.caveats {
            tag = fold(tag, c);
        }
        // blake3::Hash compares in constant time.
        blake3::Hash::from(tag) == blake3::Hash::from(self.tag)
    }

    /// Checks the MAC chain under `root` (constant time) and every caveat against `intent`.
    /// Returns the tightest byte limit the caveats set, for bodies of unknown size.
    pub fn verify(&self, root: &[u8; 32], intent: &Intent<'_>) -> Result<Option<u64>, CapError> {
        self.grant(root, intent).map(|g| g.max_bytes)
    }

    /// As [`verify`](Self::verify), returning everything the token grants: its byte limit
    /// and its tenant. A tenant caveat counts only on a token minted for that tenant
    /// ([`tenant_nonce`]); more may only narrow: they must name the same tenant, and the
    /// tightest limits hold.
    pub fn grant(&self, root: &[u8; 32], intent: &Intent<'_>) -> Result<Grant, CapError> {
        if !self.signed_by(root) {
            return Err(CapError::Invalid("signature does not verify"));
        }
        self.judge(root, intent)
    }

    /// What the caveats grant `intent`, for a token already known to be `root`'s
    /// ([`signed_by`](Self::signed_by)); `root` also checks a tenant's binding.
    pub(crate) fn judge(&self, root: &[u8; 32], intent: &Intent<'_>) -> Result<Grant, CapError> {
        let mut grant = Grant::default();
        for c in &self.caveats {
            match c {
                Caveat::ExpiresAt(t) if intent.now_unix >= *t => return Err(CapError::Expired(*t)),
                Caveat::Methods(m) if !m.iter().any(|x| x.eq_ignore_ascii_case(intent.method)) => {
                    return Err(CapError::Method(intent.method.to_string()));
                }
                Caveat::MaxBytes(max) => {
                    if let Some(got) = intent.size.filter(|g| g > max) {
                        return Err(CapError::TooLarge { max: *max, got });
                    }
                    grant.max_bytes = Some(grant.max_bytes.map_or(*max, |m| m.min(*max)));
                }
                Caveat::Tenant(t) => {
                    if t.name.is_empty() || t.name.len() > TENANT_NAME_MAX {
                        return Err(CapError::Invalid("tenant name empty or too long"));
                    }
                    if !names_tenant(root, &self.nonce, &t.name) {
                        return Err(CapError::Invalid(
                            "the token names a tenant it was not minted for",
                        ));
                    }
                    grant.tenant = Some(match grant.tenant.take() {
                        None => t.clone(),
                        Some(prev) if prev.name == t.name => TenantQuota {
                            name: prev.name,
                            bytes_max: prev.bytes_max.min(t.bytes_max),
                            bytes_per_second: prev.bytes_per_second.min(t.bytes_per_second),
                        },
                        Some(_) => return Err(CapError::Invalid("caveats name two tenants")),
                    });
                }
                Caveat::Mailbox(q) => {
                    grant.mail = Some(grant.mail.map_or(*q, |m| m.min(*q)));
                }
                _ => {}
            }
        }
        Ok(grant)
    }
}

/// The capability root a node has before any `--cap-key` file or rotation: derived from
/// its Ed25519 key (a deterministic signature over a fixed context, hashed), so it needs no
/// extra secret on disk. `keyring` decides which root is in force.
pub fn derived_root(identity: &crate::identity::Identity) -> [u8; 32] {
    let sig = identity.sign(b"macronode capability root v1");
    blake3::derive_key("macronode capability root v1", &sig)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROOT: [u8; 32] = [42; 32];

    fn put(size: Option<u64>, now: u64) -> Intent<'static> {
        Intent {
            method: "PUT",
            size,
            now_unix: now,
        }
    }

    #[test]
    fn a_minted_token_round_trips_and_verifies() {
        let t = Token::mint(
            &ROOT,
            [1; 16],
            vec![Caveat::ExpiresAt(1000), Caveat::Methods(vec!["PUT".into()])],
        );
        let back = Token::decode(&t.encode()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(back, t);
        assert_eq!(back.verify(&ROOT, &put(Some(10), 999)), Ok(None));
    }

    #[test]
    fn caveats_refuse_what_they_should() {
        let t = Token::mint(
            &ROOT,
            [1; 16],
            vec![Caveat::ExpiresAt(1000), Caveat::MaxBytes(100)],
        );
        assert_eq!(
            t.verify(&ROOT, &put(None, 1000)),
            Err(CapError::Expired(1000))
        );
        assert_eq!(
            t.verify(&ROOT, &put(Some(101), 5)),
            Err(CapError::TooLarge { max: 100, got: 101 })
        );
        assert_eq!(
            t.verify(&ROOT, &put(None, 5)),
            Ok(Some(100)),
            "unknown size: the limit is returned"
        );
        let m = Token::mint(&ROOT, [1; 16], vec![Caveat::Methods(vec!["GET".into()])]);
        assert_eq!(
            m.verify(&ROOT, &put(None, 5)),
            Err(CapError::Method("PUT".into()))
        );
    }

    #[test]
    fn attenuation_narrows_and_tampering_breaks_the_chain() {
        let t = Token::mint(&ROOT, [1; 16], vec![Caveat::MaxBytes(100)]);
        let narrower = t.clone().attenuate(Caveat::MaxBytes(10));
        assert_eq!(narrower.verify(&ROOT, &put(None, 5)), Ok(Some(10)));
        // Dropping or loosening a caveat without the key fails the MAC.
        let mut loosened = narrower.clone();
        loosened.caveats[1] = Caveat::MaxBytes(1 << 40);
        assert_eq!(
            loosened.verify(&ROOT, &put(None, 5)),
            Err(CapError::Invalid("signature does not verify"))
        );
        let mut dropped = narrower;
        dropped.caveats.pop();
        assert!(dropped.verify(&ROOT, &put(None, 5)).is_err());
        assert!(
            t.verify(&[0; 32], &put(None, 5)).is_err(),
            "another node's root"
        );
    }

    #[test]
    fn tenant_caveats_narrow_and_never_switch_tenants() {
        let quota = |name: &str, max: u64, rate: u64| {
            Caveat::Tenant(TenantQuota {
                name: name.into(),
                bytes_max: max,
                bytes_per_second: rate,
            })
        };
        let t = Token::mint(
            &ROOT,
            tenant_nonce(&ROOT, [1; 8], "acme"),
            vec![quota("acme", 1000, 100)],
        );
        let g = t
            .grant(&ROOT, &put(None, 5))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(g.tenant.map(|q| q.bytes_max), Some(1000));
        let narrower = t.clone().attenuate(quota("acme", 5000, 10));
        let g = narrower
            .grant(&ROOT, &put(None, 5))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            g.tenant,
            Some(TenantQuota {
                name: "acme".into(),
                bytes_max: 1000,
                bytes_per_second: 10
            }),
            "the tightest of each limit"
        );
        let switched = t.attenuate(quota("other", 1 << 40, 1 << 40));
        assert!(matches!(
            switched.grant(&ROOT, &put(None, 5)),
            Err(CapError::Invalid(_))
        ));
    }

    #[test]
    fn only_the_root_key_names_a_tenant() {
        let acme = Caveat::Tenant(TenantQuota {
            name: "acme".into(),
            bytes_max: u64::MAX,
            bytes_per_second: u64::MAX,
        });
        let refused = |t: &Token| {
            matches!(
                t.grant(&ROOT, &put(None, 5)),
                Err(CapError::Invalid(why)) if why.contains("not minted for")
            )
        };
        // A holder of a token that names no tenant adds one: it verifies as a chain, but
        // its tenant is refused (else it would spend acme's quota and share).
        let plain = Token::mint(&ROOT, [1; 16], vec![Caveat::Methods(vec!["PUT".into()])]);
        assert!(plain.grant(&ROOT, &put(None, 5)).is_ok());
        assert!(refused(&plain.attenuate(acme.clone())));
        // Minted for another tenant's name, or under another root, or with its salt
        // changed: refused too.
        let zed = Token::mint(
            &ROOT,
            tenant_nonce(&ROOT, [2; 8], "zed"),
            vec![acme.clone()],
        );
        assert!(refused(&zed));
        let elsewhere = Token::mint(
            &ROOT,
            tenant_nonce(&[9; 32], [2; 8], "acme"),
            vec![acme.clone()],
        );
        assert!(refused(&elsewhere));
        let mut nonce = tenant_nonce(&ROOT, [2; 8], "acme");
        nonce[0] ^= 1;
        assert!(refused(&Token::mint(&ROOT, nonce, vec![acme.clone()])));
        // Minted for acme by the root key's holder: granted.
        let t = Token::mint(&ROOT, tenant_nonce(&ROOT, [2; 8], "acme"), vec![acme]);
        let g = t
            .grant(&ROOT, &put(None, 5))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(g.tenant.map(|q| q.name), Some("acme".to_string()));
    }

    #[test]
    fn mail_quota_caveats_narrow_and_never_loosen() {
        let mq = |messages_max, bytes_max| {
            Caveat::Mailbox(MailQuota {
                messages_max,
                bytes_max,
            })
        };
        let t = Token::mint(&ROOT, [1; 16], vec![mq(3, 1000)]);
        let g = t
            .grant(&ROOT, &put(None, 5))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            g.mail,
            Some(MailQuota {
                messages_max: 3,
                bytes_max: 1000
            })
        );
        // A later caveat asking for more is no wider; one asking less narrows.
        let later = t.attenuate(mq(100, 10)).attenuate(mq(u32::MAX, u64::MAX));
        let g = later
            .grant(&ROOT, &put(None, 5))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            g.mail,
            Some(MailQuota {
                messages_max: 3,
                bytes_max: 10
            })
        );
        let back = Token::decode(&later.encode()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(back, later, "the new caveat round-trips");
    }

    #[test]
    fn tokens_without_a_mail_caveat_encode_and_verify_as_before() {
        // A token minted before the caveat existed, as bytes: postcard's variant indices
        // of the older caveats did not move.
        let t = Token::mint(
            &ROOT,
            [9; 16],
            vec![Caveat::ExpiresAt(1000), Caveat::MaxBytes(7)],
        );
        let bytes = postcard::to_allocvec(&t).unwrap_or_default();
        assert_eq!(
            &bytes[..18],
            &[9; 16].iter().copied().chain([2, 0]).collect::<Vec<_>>()[..]
        );
        assert_eq!(
            bytes[18..21],
            [0xe8, 0x07, 2],
            "ExpiresAt(1000) is variant 0, MaxBytes 2"
        );
        let g = t
            .grant(&ROOT, &put(None, 5))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(g.mail, None);
        assert_eq!(g.max_bytes, Some(7));
    }

    #[test]
    fn the_principal_is_the_tenant_else_the_token() {
        let tenant = |name: &str| TenantQuota {
            name: name.into(),
            bytes_max: 1,
            bytes_per_second: 1,
        };
        let plain = Grant::default();
        assert_ne!(plain.principal(&[1; 16]), plain.principal(&[2; 16]));
        let acme = Grant {
            tenant: Some(tenant("acme")),
            ..Grant::default()
        };
        assert_eq!(
            acme.principal(&[1; 16]),
            acme.principal(&[2; 16]),
            "one tenant"
        );
        let other = Grant {
            tenant: Some(tenant("other")),
            ..Grant::default()
        };
        assert_ne!(acme.principal(&[1; 16]), other.principal(&[1; 16]));
        assert_ne!(acme.principal(&[1; 16]), plain.principal(&[1; 16]));
    }

    #[test]
    fn garbage_text_is_invalid_not_a_panic() {
        for s in [
            "",
            "mn1.",
            "mn1.!!!",
            "mn2.AAAA",
            "mn1.AAAA",
            &"A".repeat(10_000),
        ] {
            assert!(
                matches!(Token::decode(s), Err(CapError::Invalid(_))),
                "{s:.20}"
            );
        }
    }
}
