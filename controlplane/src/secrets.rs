//! Secrets the control plane holds: the master key that seals provider
//! credentials at rest (AES-256-GCM, a fresh nonce per value, a key id so
//! the key can be rotated) and the admin and data-plane tokens.

use std::path::{Path, PathBuf};

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use rand::RngCore;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};

const SEALED_PREFIX: &str = "v1";

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("{0}")]
    Invalid(String),
    #[error("sealed with master key '{0}', which is not configured")]
    UnknownKey(String),
    #[error("cannot be opened with master key '{0}': the key is wrong or the data was altered")]
    Tampered(String),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// One AES-256 key and its id (the first 8 hex digits of its SHA-256).
struct MasterKey {
    id: String,
    cipher: Aes256Gcm,
}

impl MasterKey {
    fn from_text(text: &str) -> Result<Self, SecretError> {
        let text = text.trim();
        let bytes = STANDARD
            .decode(text)
            .ok()
            .filter(|b| b.len() == 32)
            .or_else(|| hex::decode(text).ok().filter(|b| b.len() == 32))
            .ok_or_else(|| {
                SecretError::Invalid(
                    "a master key must be 32 bytes, written as base64 or as 64 hex digits"
                        .to_string(),
                )
            })?;
        let id = hex::encode(&Sha256::digest(&bytes)[..4]);
        let cipher = Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(&bytes));
        Ok(MasterKey { id, cipher })
    }
}

/// Seals and opens values with the current master key; opens values sealed
/// with previous keys too, so a rotation can re-seal them.
pub struct Sealer {
    current: MasterKey,
    previous: Vec<MasterKey>,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealer")
            .field("current_key_id", &self.current.id)
            .field(
                "previous_key_ids",
                &self.previous.iter().map(|k| &k.id).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl Sealer {
    pub fn new(current: &SecretString, previous: &[SecretString]) -> Result<Self, SecretError> {
        Ok(Sealer {
            current: MasterKey::from_text(current.expose_secret())?,
            previous: previous
                .iter()
                .map(|k| MasterKey::from_text(k.expose_secret()))
                .collect::<Result<_, _>>()?,
        })
    }

    pub fn current_key_id(&self) -> &str {
        &self.current.id
    }

    /// Seals `plain`; `context` (for example "provider/openai/api_key") is
    /// bound in as associated data so a sealed value cannot be moved to
    /// another row or field.
    pub fn seal(&self, plain: &str, context: &str) -> Result<String, SecretError> {
        let mut nonce = [0u8; 12];
        rand::thread_rng().fill_bytes(&mut nonce);
        let ct = self
            .current
            .cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plain.as_bytes(),
                    aad: context.as_bytes(),
                },
            )
            .map_err(|_| SecretError::Invalid("encryption failed".into()))?;
        Ok(format!(
            "{SEALED_PREFIX}.{}.{}.{}",
            self.current.id,
            URL_SAFE_NO_PAD.encode(nonce),
            URL_SAFE_NO_PAD.encode(ct)
        ))
    }

    /// The id of the key that sealed `sealed`.
    pub fn key_id_of(sealed: &str) -> Option<&str> {
        let mut parts = sealed.split('.');
        (parts.next() == Some(SEALED_PREFIX))
            .then(|| parts.next())
            .flatten()
    }

    pub fn open(&self, sealed: &str, context: &str) -> Result<SecretString, SecretError> {
        let parts: Vec<&str> = sealed.split('.').collect();
        let [prefix, kid, nonce, ct] = parts.as_slice() else {
            return Err(SecretError::Invalid("sealed value is malformed".into()));
        };
        if *prefix != SEALED_PREFIX {
            return Err(SecretError::Invalid(
                "sealed value has an unknown format".into(),
            ));
        }
        let key = std::iter::once(&self.current)
            .chain(self.previous.iter())
            .find(|k| k.id == *kid)
            .ok_or_else(|| SecretError::UnknownKey((*kid).to_string()))?;
        let nonce = URL_SAFE_NO_PAD
            .decode(nonce)
            .ok()
            .filter(|n| n.len() == 12)
            .ok_or_else(|| SecretError::Invalid("sealed value has a bad nonce".into()))?;
        let ct = URL_SAFE_NO_PAD
            .decode(ct)
            .map_err(|_| SecretError::Invalid("sealed value has bad ciphertext".into()))?;
        let plain = key
            .cipher
            .decrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: &ct,
                    aad: context.as_bytes(),
                },
            )
            .map_err(|_| SecretError::Tampered(key.id.clone()))?;
        String::from_utf8(plain)
            .map(SecretString::from)
            .map_err(|_| SecretError::Invalid("sealed value is not text".into()))
    }
}

/// 32 random bytes as URL-safe base64: used for generated tokens and keys.
pub fn random_token() -> String {
    let mut b = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut b);
    URL_SAFE_NO_PAD.encode(b)
}

/// A secret taken from the environment, or else from a 0600 file in the
/// data folder, created with a fresh random value on first start.
pub struct Loaded {
    pub value: SecretString,
    /// Set when the value came from (or was written to) a file.
    pub file: Option<PathBuf>,
    pub generated: bool,
}

pub fn from_env_or_file(
    env_value: Option<SecretString>,
    path: &Path,
    generate: impl FnOnce() -> String,
) -> Result<Loaded, SecretError> {
    if let Some(v) = env_value.filter(|v| !v.expose_secret().trim().is_empty()) {
        return Ok(Loaded {
            value: SecretString::from(v.expose_secret().trim().to_string()),
            file: None,
            generated: false,
        });
    }
    let io = |source| SecretError::Io {
        path: path.to_path_buf(),
        source,
    };
    match std::fs::read_to_string(path) {
        Ok(text) if !text.trim().is_empty() => {
            return Ok(Loaded {
                value: SecretString::from(text.trim().to_string()),
                file: Some(path.to_path_buf()),
                generated: false,
            })
        }
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(e)),
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let value = generate();
    write_private(path, &value).map_err(io)?;
    Ok(Loaded {
        value: SecretString::from(value),
        file: Some(path.to_path_buf()),
        generated: true,
    })
}

#[cfg(unix)]
fn write_private(path: &Path, value: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(value.as_bytes())?;
    f.write_all(b"\n")?;
    f.sync_all()
}

#[cfg(not(unix))]
fn write_private(path: &Path, value: &str) -> std::io::Result<()> {
    std::fs::write(path, format!("{value}\n"))
}

/// Generates a master key as base64.
pub fn generate_master_key() -> String {
    let mut b = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut b);
    STANDARD.encode(b)
}

/// Compares a presented bearer token with the expected one in constant time
/// (hashing first so lengths leak nothing either).
pub fn token_matches(presented: &str, expected: &SecretString) -> bool {
    let a = Sha256::digest(presented.as_bytes());
    let b = Sha256::digest(expected.expose_secret().as_bytes());
    llmgw_core::keys::ct_eq(&a, &b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> SecretString {
        SecretString::from(generate_master_key())
    }

    #[test]
    fn seal_round_trip_and_binding() {
        let s = Sealer::new(&key(), &[]).unwrap();
        let sealed = s.seal("sk-secret", "provider/a/api_key").unwrap();
        assert!(!sealed.contains("sk-secret"));
        assert_eq!(
            s.open(&sealed, "provider/a/api_key")
                .unwrap()
                .expose_secret(),
            "sk-secret"
        );
        assert!(matches!(
            s.open(&sealed, "provider/b/api_key"),
            Err(SecretError::Tampered(_))
        ));
        assert_ne!(sealed, s.seal("sk-secret", "provider/a/api_key").unwrap());
    }

    #[test]
    fn rotation_opens_old_values() {
        let old = key();
        let new = key();
        let old_sealer = Sealer::new(&old, &[]).unwrap();
        let sealed = old_sealer.seal("v", "c").unwrap();
        let rotated = Sealer::new(&new, std::slice::from_ref(&old)).unwrap();
        assert_eq!(rotated.open(&sealed, "c").unwrap().expose_secret(), "v");
        let without_old = Sealer::new(&new, &[]).unwrap();
        assert!(matches!(
            without_old.open(&sealed, "c"),
            Err(SecretError::UnknownKey(_))
        ));
        assert_eq!(
            Sealer::key_id_of(&sealed),
            Some(old_sealer.current_key_id())
        );
    }

    #[test]
    fn bad_master_keys_are_refused() {
        assert!(Sealer::new(&SecretString::from("short".to_string()), &[]).is_err());
        let hex_key = SecretString::from("11".repeat(32));
        assert!(Sealer::new(&hex_key, &[]).is_ok());
    }

    #[test]
    fn token_files_are_private_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/admin-token");
        let first = from_env_or_file(None, &path, random_token).unwrap();
        assert!(first.generated);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let second = from_env_or_file(None, &path, random_token).unwrap();
        assert!(!second.generated);
        assert_eq!(first.value.expose_secret(), second.value.expose_secret());
        let env = from_env_or_file(
            Some(SecretString::from("e".to_string())),
            &path,
            random_token,
        )
        .unwrap();
        assert_eq!(env.value.expose_secret(), "e");
        assert!(env.file.is_none());
        assert!(token_matches("e", &env.value));
        assert!(!token_matches("f", &env.value));
    }
}
