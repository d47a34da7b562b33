//! The keys and the revocation list a node checks capability tokens against, kept in files
//! an operator manages, re-read at start and when asked (`POST /v1/tokens/reload` on the
//! admin plane, which `macronode token revoke` and `token rotate` call).
//!
//! Files (the operator commands are their only writers; the node only reads them):
//! - the **root**: the `--cap-key` file when one is configured (a fleet shares it), else
//!   `data_dir/cap.key` once `token rotate` made one, else a key derived from the node's
//!   identity. So the capability root is apart from the node identity as soon as it is
//!   rotated once, and a rotation never changes the node id.
//! - the **previous root**: `<root file>.previous`, `HEX UNTIL_UNIX`: tokens of the root
//!   that `token rotate` replaced are accepted until then (the grace period), then refused.
//!   Only one previous root is kept: rotating again within the grace ends the older one.
//! - the **revocation list**: `data_dir/revoked-tokens`, one token id (32 hex digits) a line.
//!   A token's id is its nonce, so every token has one, tokens minted before ids were
//!   printed included, and attenuations of a token share its id (revoking it revokes them).
//!
//! Invariant: a token is accepted only if its id is not revoked and its MAC chain verifies
//! under the current root, or under the previous one before its grace ends.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use crate::caps::{CapError, Grant, Intent, Token};
use crate::identity::Identity;

/// The root file `token rotate` creates when no `--cap-key` is configured.
pub const ROOT_FILE: &str = "cap.key";
/// The revocation list in the data directory.
pub const REVOKED_FILE: &str = "revoked-tokens";
/// Most ids a revocation list may hold (a bound on memory and on reading the file).
pub const REVOKED_MAX: usize = 100_000;

/// A keyring that could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum KeyringError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A file does not hold what it should.
    #[error("{path}: {why}")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
}

/// Where a node's capability files are.
#[derive(Debug, Clone)]
pub struct KeyFiles {
    /// The data directory (revocation list, default root file).
    pub data_dir: PathBuf,
    /// A configured `--cap-key` file.
    pub cap_key: Option<PathBuf>,
}

impl KeyFiles {
    /// The file holding the current root, if the root is not derived from the identity.
    pub fn root_file(&self) -> PathBuf {
        self.cap_key
            .clone()
            .unwrap_or_else(|| self.data_dir.join(ROOT_FILE))
    }

    /// The file holding the previous root and the end of its grace.
    pub fn previous_file(&self) -> PathBuf {
        let mut name = self.root_file().into_os_string();
        name.push(".previous");
        PathBuf::from(name)
    }

    /// The revocation list.
    pub fn revoked_file(&self) -> PathBuf {
        self.data_dir.join(REVOKED_FILE)
    }
}

/// The keys and revocations in force.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Keys {
    /// Tokens are minted and checked with this.
    pub root: [u8; 32],
    /// A rotated-out root and the unix second its tokens stop being accepted.
    pub previous: Option<([u8; 32], u64)>,
    /// Revoked token ids.
    pub revoked: BTreeSet<[u8; 16]>,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> KeyringError + '_ {
    move |source| KeyringError::Io {
        path: path.into(),
        source,
    }
}

fn malformed(path: &Path, why: impl Into<String>) -> KeyringError {
    KeyringError::Malformed {
        path: path.into(),
        why: why.into(),
    }
}

/// The contents of a file, `None` if it does not exist.
fn read_optional(path: &Path) -> Result<Option<String>, KeyringError> {
    match std::fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io(path)(e)),
    }
}

fn parse_key(path: &Path, text: &str) -> Result<[u8; 32], KeyringError> {
    let mut k = [0u8; 32];
    hex::decode_to_slice(text.trim(), &mut k)
        .map_err(|_| malformed(path, "a capability key is 64 hex digits"))?;
    Ok(k)
}

/// Parses a token id (32 hex digits).
pub fn parse_token_id(text: &str) -> Option<[u8; 16]> {
    let mut id = [0u8; 16];
    hex::decode_to_slice(text.trim(), &mut id).ok()?;
    Some(id)
}

impl Keys {
    /// Reads the keys from their files; `identity` gives the derived root when there is no
    /// root file.
    pub fn load(files: &KeyFiles, identity: &Identity) -> Result<Keys, KeyringError> {
        let root_file = files.root_file();
        let root = match read_optional(&root_file)? {
            Some(text) => parse_key(&root_file, &text)?,
            // A configured --cap-key must exist; only the default file may be absent.
            None if files.cap_key.is_some() => {
                return Err(io(&root_file)(std::io::ErrorKind::NotFound.into()));
            }
            None => crate::caps::derived_root(identity),
        };
        let prev_file = files.previous_file();
        let previous = match read_optional(&prev_file)? {
            None => None,
            Some(text) => {
                let (key, until) = text
                    .trim()
                    .split_once(' ')
                    .ok_or_else(|| malformed(&prev_file, "expected `HEX UNTIL_UNIX`"))?;
                let until = until
                    .trim()
                    .parse()
                    .map_err(|_| malformed(&prev_file, "grace end is not a unix time"))?;
                Some((parse_key(&prev_file, key)?, until))
            }
        };
        let revoked_file = files.revoked_file();
        let mut revoked = BTreeSet::new();
        for (n, line) in read_optional(&revoked_file)?
            .unwrap_or_default()
            .lines()
            .enumerate()
        {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let id = parse_token_id(line).ok_or_else(|| {
                malformed(&revoked_file, format!("line {}: not a token id", n + 1))
            })?;
            revoked.insert(id);
            if revoked.len() > REVOKED_MAX {
                return Err(malformed(&revoked_file, "more ids than REVOKED_MAX"));
            }
        }
        Ok(Keys {
            root,
            previous,
            revoked,
        })
    }

    /// Checks `token` for `intent`: not revoked, and its MAC verifies under the root or
    /// under the previous root within its grace.
    pub fn grant(&self, token: &Token, intent: &Intent<'_>) -> Result<Grant, CapError> {
        if self.revoked.contains(&token.id()) {
            return Err(CapError::Revoked(hex::encode(token.id())));
        }
        if token.signed_by(&self.root) {
            return token.judge(&self.root, intent);
        }
        match self.previous {
            // A token of the previous root is judged by that root during its grace: what is
            // wrong with it is its caveats' verdict (expired, too large, a tenant it was not
            // minted for), not "signature does not verify" under the new root.
            Some((old, until)) if token.signed_by(&old) => {
                if intent.now_unix < until {
                    token.judge(&old, intent)
                } else {
                    Err(CapError::Rotated(until))
                }
            }
            _ => Err(CapError::Invalid("signature does not verify")),
        }
    }
}

/// The keys in force, shared by the gateway and the object layer, reloadable in place.
#[derive(Debug, Clone)]
pub struct Keyring {
    files: Arc<KeyFiles>,
    identity: Arc<Identity>,
    keys: Arc<RwLock<Arc<Keys>>>,
}

impl Keyring {
    /// Loads the keyring from its files.
    pub fn load(files: KeyFiles, identity: Arc<Identity>) -> Result<Keyring, KeyringError> {
        let keys = Keys::load(&files, &identity)?;
        Ok(Keyring {
            files: Arc::new(files),
            identity,
            keys: Arc::new(RwLock::new(Arc::new(keys))),
        })
    }

    /// A keyring of one root and nothing else (tests, tools).
    pub fn fixed(root: [u8; 32], identity: Arc<Identity>, data_dir: PathBuf) -> Keyring {
        Keyring {
            files: Arc::new(KeyFiles {
                data_dir,
                cap_key: None,
            }),
            identity,
            keys: Arc::new(RwLock::new(Arc::new(Keys {
                root,
                ..Keys::default()
            }))),
        }
    }

    /// The keys in force now.
    pub fn keys(&self) -> Arc<Keys> {
        match self.keys.read() {
            Ok(k) => k.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Re-reads the files; on error the keys in force stay.
    pub fn reload(&self) -> Result<Arc<Keys>, KeyringError> {
        let fresh = Arc::new(Keys::load(&self.files, &self.identity)?);
        match self.keys.write() {
            Ok(mut k) => *k = fresh.clone(),
            Err(poisoned) => *poisoned.into_inner() = fresh.clone(),
        }
        Ok(fresh)
    }

    /// Checks a token against the keys in force (see [`Keys::grant`]).
    pub fn grant(&self, token: &Token, intent: &Intent<'_>) -> Result<Grant, CapError> {
        self.keys().grant(token, intent)
    }
}

/// Writes `bytes` to `path` through a temporary file and a rename (owner-only), so a
/// reader sees the old contents or the new, never half.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), KeyringError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(io(path))
}

/// Adds `id` to the revocation list in `files` (the operator command's side).
pub fn revoke(files: &KeyFiles, id: [u8; 16]) -> Result<(), KeyringError> {
    let path = files.revoked_file();
    let mut text = read_optional(&path)?.unwrap_or_default();
    let hex_id = hex::encode(id);
    if text.lines().any(|l| l.trim() == hex_id) {
        return Ok(());
    }
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    text.push_str(&hex_id);
    text.push('\n');
    write_atomic(&path, text.as_bytes())
}

/// Replaces the root with `new`, keeping the current one as the previous root until
/// `grace_until` (unix seconds). Returns the root file written.
pub fn rotate(
    files: &KeyFiles,
    identity: &Identity,
    new: [u8; 32],
    grace_until: u64,
) -> Result<PathBuf, KeyringError> {
    let current = Keys::load(files, identity)?.root;
    write_atomic(
        &files.previous_file(),
        format!("{} {grace_until}\n", hex::encode(current)).as_bytes(),
    )?;
    let root_file = files.root_file();
    write_atomic(&root_file, format!("{}\n", hex::encode(new)).as_bytes())?;
    Ok(root_file)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::caps::Caveat;

    fn put(now: u64) -> Intent<'static> {
        Intent {
            method: "PUT",
            size: None,
            now_unix: now,
        }
    }

    #[test]
    fn revoked_ids_and_expired_graces_are_refused() {
        let old = [1; 32];
        let new = [2; 32];
        let t_old = Token::mint(&old, [7; 16], vec![Caveat::MaxBytes(10)]);
        let t_new = Token::mint(&new, [8; 16], vec![]);
        let mut keys = Keys {
            root: new,
            previous: Some((old, 100)),
            revoked: BTreeSet::new(),
        };
        assert!(keys.grant(&t_old, &put(99)).is_ok());
        assert_eq!(keys.grant(&t_old, &put(100)), Err(CapError::Rotated(100)));
        // During the grace, the previous root's token gets its caveats' own verdict.
        let too_big = Intent {
            size: Some(11),
            ..put(99)
        };
        assert_eq!(
            keys.grant(&t_old, &too_big),
            Err(CapError::TooLarge { max: 10, got: 11 })
        );
        let posing = t_old
            .clone()
            .attenuate(Caveat::Tenant(crate::caps::TenantQuota {
                name: "acme".into(),
                bytes_max: 1,
                bytes_per_second: 1,
            }));
        assert_eq!(
            keys.grant(&posing, &put(99)),
            Err(CapError::Invalid(
                "the token names a tenant it was not minted for"
            ))
        );
        assert!(keys.grant(&t_new, &put(1000)).is_ok());
        keys.revoked.insert([8; 16]);
        assert_eq!(
            keys.grant(&t_new, &put(1)),
            Err(CapError::Revoked(hex::encode([8u8; 16])))
        );
        // An attenuation keeps its token's id, so revoking the one revokes the other.
        let narrower = t_new.attenuate(Caveat::MaxBytes(1));
        assert!(matches!(
            keys.grant(&narrower, &put(1)),
            Err(CapError::Revoked(_))
        ));
    }
}
