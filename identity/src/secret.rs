//! Secrets Plinth presents (API keys as bearer tokens to Temporal Cloud, the PIN of a
//! hardware security module), read from a file or an environment variable. A file is read
//! again whenever it changes, so a rotated secret takes effect without a restart. No error
//! or `Debug` output shows one.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

/// Where a secret comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SecretSource {
    /// A file holding the secret (surrounding whitespace ignored).
    File(PathBuf),
    /// An environment variable holding the key.
    Env(String),
}

/// Why no usable key could be read. Each names the setting to fix (`setting` is its prefix,
/// such as `[backend] api_key`), never the key.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The environment variable is not set.
    #[error("{setting}_env: environment variable {name} is not set")]
    NotSet {
        /// The setting's prefix.
        setting: &'static str,
        /// The variable.
        name: String,
    },
    /// The file cannot be read.
    #[error("{setting}_file: cannot read {}: {source}", path.display())]
    Unreadable {
        /// The setting's prefix.
        setting: &'static str,
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// The file holds more than any key.
    #[error("{setting}_file: {} is larger than {MAX_FILE_BYTES} bytes; it holds no API key", path.display())]
    TooLarge {
        /// The setting's prefix.
        setting: &'static str,
        /// The file.
        path: PathBuf,
    },
    /// The file or variable holds nothing but whitespace.
    #[error("{setting} ({from}) is empty")]
    Empty {
        /// The setting's prefix.
        setting: &'static str,
        /// The file or variable, described.
        from: String,
    },
    /// The key holds characters an HTTP header cannot carry.
    #[error("{setting} ({from}) holds characters a header cannot carry")]
    NotAToken {
        /// The setting's prefix.
        setting: &'static str,
        /// The file or variable, described.
        from: String,
    },
}

/// The longest key file read: keys are tens of bytes, and the file is read on a timer.
const MAX_FILE_BYTES: u64 = 16 * 1024;

/// What tells one version of a key file from another: a rewrite changes the modification or
/// change time, a rename over it the inode, even within one tick of the clock.
type Stamp = (Option<SystemTime>, u64, u64, i64, i64);

/// The key as last read from a file, with what identified that version of the file.
struct CachedKey {
    stamp: Stamp,
    key: Arc<str>,
}

/// Reads a secret, from its file only when the file changed.
pub struct Secret {
    setting: &'static str,
    source: SecretSource,
    cached: Mutex<Option<CachedKey>>,
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Secret")
            .field("setting", &self.setting)
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

impl Secret {
    /// The key `source` holds; errors name `setting` (`[backend] api_key`: the file is
    /// `[backend] api_key_file`).
    pub fn new(setting: &'static str, source: SecretSource) -> Self {
        Self {
            setting,
            source,
            cached: Mutex::new(None),
        }
    }

    /// The key now.
    pub fn current(&self) -> Result<Arc<str>, SecretError> {
        let key = match &self.source {
            SecretSource::Env(name) => {
                let value = std::env::var(name).map_err(|_| SecretError::NotSet {
                    setting: self.setting,
                    name: name.clone(),
                })?;
                Arc::from(value.trim())
            }
            SecretSource::File(path) => self.read_file(path)?,
        };
        if key.is_empty() {
            return Err(SecretError::Empty {
                setting: self.setting,
                from: self.describe(),
            });
        }
        Ok(key)
    }

    /// `Bearer <key>`, the `authorization` header's value: visible ASCII only, so any HTTP
    /// library takes it.
    pub fn bearer(&self) -> Result<String, SecretError> {
        let key = self.current()?;
        if !key.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(SecretError::NotAToken {
                setting: self.setting,
                from: self.describe(),
            });
        }
        Ok(format!("Bearer {key}"))
    }

    fn read_file(&self, path: &PathBuf) -> Result<Arc<str>, SecretError> {
        let unreadable = |source| SecretError::Unreadable {
            setting: self.setting,
            path: path.clone(),
            source,
        };
        use std::io::Read;
        use std::os::unix::fs::MetadataExt;
        let metadata = std::fs::metadata(path).map_err(unreadable)?;
        let stamp = (
            metadata.modified().ok(),
            metadata.len(),
            metadata.ino(),
            metadata.ctime(),
            metadata.ctime_nsec(),
        );
        let mut cached = self.cached.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(c) = cached.as_ref()
            && c.stamp == stamp
        {
            return Ok(c.key.clone());
        }
        let mut text = String::new();
        std::fs::File::open(path)
            .and_then(|file| file.take(MAX_FILE_BYTES + 1).read_to_string(&mut text))
            .map_err(unreadable)?;
        if text.len() as u64 > MAX_FILE_BYTES {
            return Err(SecretError::TooLarge {
                setting: self.setting,
                path: path.clone(),
            });
        }
        let key: Arc<str> = Arc::from(text.trim());
        *cached = Some(CachedKey {
            stamp,
            key: key.clone(),
        });
        Ok(key)
    }

    fn describe(&self) -> String {
        match &self.source {
            SecretSource::File(path) => format!("file {}", path.display()),
            SecretSource::Env(name) => format!("environment variable {name}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_file_is_read_again_once_it_changes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        std::fs::write(&path, "first-key\n").unwrap();
        let key = Secret::new("[backend] api_key", SecretSource::File(path.clone()));
        assert_eq!(&*key.current().unwrap(), "first-key");
        // The same length, within the same second: still a new key.
        std::fs::write(&path, "other-key\n").unwrap();
        assert_eq!(key.bearer().unwrap(), "Bearer other-key");
    }

    #[test]
    fn a_file_larger_than_any_key_is_refused_unread() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        std::fs::write(&path, vec![b'k'; MAX_FILE_BYTES as usize + 1]).unwrap();
        let key = Secret::new("[backend] api_key", SecretSource::File(path));
        let error = key.current().unwrap_err().to_string();
        assert!(error.contains("larger than"), "{error}");
    }

    #[test]
    fn a_missing_key_names_its_setting_and_source() {
        let key = Secret::new(
            "[backend] upstream_api_key",
            SecretSource::Env("PLINTH_TEST_UNSET_CLOUD_KEY".into()),
        );
        let error = key.current().unwrap_err().to_string();
        assert_eq!(
            error,
            "[backend] upstream_api_key_env: environment variable PLINTH_TEST_UNSET_CLOUD_KEY is not set"
        );
    }

    #[test]
    fn a_key_a_header_cannot_carry_is_refused_without_showing_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        std::fs::write(&path, "s3cr3t value").unwrap();
        let key = Secret::new("[backend] api_key", SecretSource::File(path));
        let error = key.bearer().unwrap_err().to_string();
        assert!(error.contains("cannot carry"), "{error}");
        assert!(!error.contains("s3cr3t"), "{error}");
    }
}
