//! The node's identity: one Ed25519 key, kept in the data directory, whose public half is the
//! node id every peer knows us by.
//!
//! It sits under the transport: TLS proves possession of this key in every handshake, so a
//! peer that dials our id reaches us and nobody else. The invariant: the key on disk is created
//! once, atomically (temporary file, fsync, link into place), readable by its owner only
//! (mode 0600), and never silently replaced; a file that is the wrong size, not an Ed25519
//! key, or readable by group or others is refused with a typed error rather than repaired,
//! because repairing it would change who we are.
//!
//! File format: the 48-byte PKCS#8 v1 DER encoding of the Ed25519 seed (RFC 8410), the same
//! bytes `openssl genpkey -algorithm ed25519 -outform DER` writes, so operators can inspect
//! it with `openssl pkey -inform DER -in node.key -noout -text`.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::{Ed25519KeyPair, KeyPair};
use rustls::pki_types::PrivatePkcs8KeyDer;
use wire::NodeId;

/// The key file's name inside the data directory.
pub const KEY_FILE: &str = "node.key";

/// The PKCS#8 v1 header of an Ed25519 private key; the 32-byte seed follows it.
const PKCS8_ED25519_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];
/// Length of a key file: the header and the seed.
pub const KEY_FILE_LEN: usize = PKCS8_ED25519_PREFIX.len() + 32;

/// Why the identity could not be loaded or created.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// The data directory could not be created.
    #[error("cannot create data directory {path}: {source}")]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// What the OS said.
        source: io::Error,
    },
    /// The key file exists but could not be read.
    #[error("cannot read key file {path}: {source}")]
    Read {
        /// The key file.
        path: PathBuf,
        /// What the OS said.
        source: io::Error,
    },
    /// A new key file could not be written.
    #[error("cannot write key file {path}: {source}")]
    Write {
        /// The file being written.
        path: PathBuf,
        /// What the OS said.
        source: io::Error,
    },
    /// The key file is not the 48 bytes of an Ed25519 PKCS#8 key.
    #[error("key file {path} is {len} bytes, expected {KEY_FILE_LEN}")]
    BadSize {
        /// The key file.
        path: PathBuf,
        /// Its length.
        len: u64,
    },
    /// The key file has the right size but is not an Ed25519 PKCS#8 key.
    #[error("key file {path} is not an Ed25519 PKCS#8 v1 key")]
    BadFormat {
        /// The key file.
        path: PathBuf,
    },
    /// The key file is not a regular file.
    #[error("key file {path} is not a regular file")]
    NotAFile {
        /// The path.
        path: PathBuf,
    },
    /// Group or others may read or write the key file.
    #[error(
        "key file {path} has mode {mode:03o}; it must not be accessible to group or others (chmod 600)"
    )]
    InsecurePermissions {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The OS gave no randomness for a new key.
    #[error("the OS random number generator failed")]
    Entropy,
    /// The key bytes are not a usable Ed25519 key.
    #[error("the key bytes are not a valid Ed25519 key")]
    InvalidKey,
}

/// The node's Ed25519 key pair and the node id derived from it.
///
/// Exists so that everything that proves or names "us" (TLS certificates, HELLO, signed
/// records later) reads one value; it is cheap to share behind an `Arc`.
pub struct Identity {
    pkcs8: Vec<u8>,
    key_pair: Ed25519KeyPair,
    node_id: NodeId,
    path: Option<PathBuf>,
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the secret.
        f.debug_struct("Identity")
            .field("node_id", &self.node_id)
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl Identity {
    /// Loads the key from `data_dir/node.key`, creating the directory and a fresh key on first
    /// start. Refuses a key file that is malformed or readable by group or others.
    pub fn load_or_create(data_dir: &Path) -> Result<Identity, IdentityError> {
        let path = data_dir.join(KEY_FILE);
        match fs::symlink_metadata(&path) {
            Ok(_) => Identity::load(&path),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                create_dir(data_dir)?;
                Identity::create(data_dir, &path)
            }
            Err(source) => Err(IdentityError::Read { path, source }),
        }
    }

    /// Loads an existing key file, checking its permissions, size and format.
    pub fn load(path: &Path) -> Result<Identity, IdentityError> {
        let read_err = |source| IdentityError::Read {
            path: path.to_path_buf(),
            source,
        };
        let meta = fs::metadata(path).map_err(read_err)?;
        if !meta.is_file() {
            return Err(IdentityError::NotAFile {
                path: path.to_path_buf(),
            });
        }
        check_permissions(path, &meta)?;
        if meta.len() != KEY_FILE_LEN as u64 {
            return Err(IdentityError::BadSize {
                path: path.to_path_buf(),
                len: meta.len(),
            });
        }
        let mut bytes = Vec::with_capacity(KEY_FILE_LEN);
        File::open(path)
            .and_then(|f| f.take(KEY_FILE_LEN as u64 + 1).read_to_end(&mut bytes))
            .map_err(read_err)?;
        if bytes.len() != KEY_FILE_LEN {
            return Err(IdentityError::BadSize {
                path: path.to_path_buf(),
                len: bytes.len() as u64,
            });
        }
        let mut seed = [0u8; 32];
        match bytes.split_at(PKCS8_ED25519_PREFIX.len()) {
            (prefix, rest) if prefix == PKCS8_ED25519_PREFIX => seed.copy_from_slice(rest),
            _ => {
                return Err(IdentityError::BadFormat {
                    path: path.to_path_buf(),
                });
            }
        }
        let mut identity = Identity::from_seed(seed).map_err(|_| IdentityError::BadFormat {
            path: path.to_path_buf(),
        })?;
        identity.path = Some(path.to_path_buf());
        Ok(identity)
    }

    /// A fresh key that lives only in memory (tests, amnesia mode).
    pub fn generate() -> Result<Identity, IdentityError> {
        let mut seed = [0u8; 32];
        SystemRandom::new()
            .fill(&mut seed)
            .map_err(|_| IdentityError::Entropy)?;
        Identity::from_seed(seed)
    }

    /// The key for a given 32-byte seed: deterministic identities for tests and simulations.
    pub fn from_seed(seed: [u8; 32]) -> Result<Identity, IdentityError> {
        let mut pkcs8 = Vec::with_capacity(KEY_FILE_LEN);
        pkcs8.extend_from_slice(&PKCS8_ED25519_PREFIX);
        pkcs8.extend_from_slice(&seed);
        let key_pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(&pkcs8)
            .map_err(|_| IdentityError::InvalidKey)?;
        let mut id = [0u8; 32];
        id.copy_from_slice(key_pair.public_key().as_ref());
        Ok(Identity {
            pkcs8,
            key_pair,
            node_id: NodeId(id),
            path: None,
        })
    }

    /// Our node id: the Ed25519 public key. Its `Display` is the stable text form.
    pub fn node_id(&self) -> NodeId {
        self.node_id
    }

    /// Where the key is kept, if it came from disk.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Signs `msg` with the node key (for records that must name their author).
    pub fn sign(&self, msg: &[u8]) -> [u8; 64] {
        let mut out = [0u8; 64];
        out.copy_from_slice(self.key_pair.sign(msg).as_ref());
        out
    }

    /// The private key as PKCS#8 DER, for TLS certificates and handshakes.
    pub(crate) fn pkcs8_der(&self) -> PrivatePkcs8KeyDer<'static> {
        PrivatePkcs8KeyDer::from(self.pkcs8.clone())
    }

    /// Writes a new key atomically: a private temporary file, fsync, then a link into place
    /// that fails if another process created the key first (we then load theirs).
    fn create(dir: &Path, path: &Path) -> Result<Identity, IdentityError> {
        let identity = Identity::generate()?;
        let tmp = dir.join(format!(".{KEY_FILE}.tmp.{}", std::process::id()));
        let write_err = |source| IdentityError::Write {
            path: tmp.clone(),
            source,
        };
        // A stale temporary file from a crash of this very pid is ours to replace.
        let _ = fs::remove_file(&tmp);
        let mut file = private_create(&tmp).map_err(write_err)?;
        file.write_all(&identity.pkcs8)
            .and_then(|()| file.sync_all())
            .map_err(write_err)?;
        drop(file);
        let placed = match fs::hard_link(&tmp, path) {
            Ok(()) => {
                let _ = fs::remove_file(&tmp);
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                let _ = fs::remove_file(&tmp);
                return Identity::load(path);
            }
            // Filesystems without hard links: rename is atomic too, only not exclusive.
            Err(_) => fs::rename(&tmp, path),
        };
        placed
            .and_then(|()| sync_dir(dir))
            .map_err(|source| IdentityError::Write {
                path: path.to_path_buf(),
                source,
            })?;
        let mut identity = identity;
        identity.path = Some(path.to_path_buf());
        tracing::info!(node_id = %identity.node_id, path = %path.display(), "created node key");
        Ok(identity)
    }
}

fn create_dir(dir: &Path) -> Result<(), IdentityError> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder
        .create(dir)
        .map_err(|source| IdentityError::CreateDir {
            path: dir.to_path_buf(),
            source,
        })
}

fn private_create(path: &Path) -> io::Result<File> {
    let mut opts = OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    opts.open(path)
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        File::open(dir)?.sync_all()?;
    }
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

#[cfg(unix)]
fn check_permissions(path: &Path, meta: &fs::Metadata) -> Result<(), IdentityError> {
    use std::os::unix::fs::PermissionsExt;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(IdentityError::InsecurePermissions {
            path: path.to_path_buf(),
            mode,
        });
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_permissions(_path: &Path, _meta: &fs::Metadata) -> Result<(), IdentityError> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_gives_a_stable_id_and_valid_signatures() {
        let a = Identity::from_seed([7; 32]);
        let b = Identity::from_seed([7; 32]);
        let (Ok(a), Ok(b)) = (a, b) else {
            panic!("from_seed failed");
        };
        assert_eq!(a.node_id(), b.node_id());
        let sig = a.sign(b"hello");
        let pk = ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, a.node_id().0);
        assert!(pk.verify(b"hello", &sig).is_ok());
        assert!(!format!("{a:?}").contains("pkcs8"));
    }
}
