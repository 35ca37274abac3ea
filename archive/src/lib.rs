//! Plinth's archive: what it keeps in object storage beyond Temporal's retention, the audit
//! trail ([`audit`]) and closed workflows' histories ([`history`]). A destination is a URL (`s3://bucket/prefix`,
//! `gs://…`, `az://…`, `file:///…`) opened with the `object_store` crate, credentials coming
//! from the environment as each store's own tools read them.

#![forbid(unsafe_code)]

pub mod audit;
pub mod history;
mod hours;

use std::sync::Arc;

use bytes::Bytes;
use futures::TryStreamExt as _;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt as _, PutPayload};

/// Why the archive could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// The destination URL names no store Plinth can open.
    #[error("archive destination {url:?}: {reason}")]
    Destination {
        /// The URL, without credentials.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The store refused a request or could not be reached.
    #[error("archive {url}: {key}: {reason}")]
    Store {
        /// The destination.
        url: String,
        /// The object, or prefix, asked for.
        key: String,
        /// The store's answer.
        reason: String,
    },
    /// An object holds something Plinth did not write there.
    #[error("archive {url}: {key}: not written by Plinth: {reason}")]
    Malformed {
        /// The destination.
        url: String,
        /// The object.
        key: String,
        /// What is wrong, and where.
        reason: String,
    },
}

/// One destination: a store and the prefix within it under which Plinth writes.
#[derive(Clone, Debug)]
pub struct Archive {
    store: Arc<dyn ObjectStore>,
    root: Path,
    /// The URL as configured, credentials removed: for messages.
    url: String,
}

impl Archive {
    /// Opens the destination at `url`. S3 reads `AWS_*` variables (and web identity, ECS and
    /// instance credentials), GCS `GOOGLE_*` (and `GOOGLE_APPLICATION_CREDENTIALS`), Azure
    /// `AZURE_*`. A `file://` directory is made if missing.
    pub fn open(url: &str) -> Result<Self, ArchiveError> {
        // An unparsed URL is not shown: credentials in it could not be told apart.
        let parsed = url::Url::parse(url).map_err(|e| destination("(not a URL)", e.to_string()))?;
        let shown = shown(&parsed);
        if !parsed.username().is_empty() || parsed.password().is_some() {
            return Err(destination(
                &shown,
                "credentials do not belong in the URL: give them in the store's environment \
                 variables or files"
                    .into(),
            ));
        }
        let fail = |e: object_store::Error| destination(&shown, e.to_string());
        let (store, root): (Arc<dyn ObjectStore>, Path) = match parsed.scheme() {
            "file" => {
                let dir = parsed
                    .to_file_path()
                    .map_err(|()| destination(&shown, "not a local path".into()))?;
                std::fs::create_dir_all(&dir)
                    .map_err(|e| destination(&shown, format!("cannot make the directory: {e}")))?;
                let store = object_store::local::LocalFileSystem::new_with_prefix(&dir)
                    .map_err(fail)?
                    // An object written is on disk when the write returns, as in S3.
                    .with_fsync(true);
                (Arc::new(store), Path::default())
            }
            "s3" | "s3a" => {
                let store = object_store::aws::AmazonS3Builder::from_env()
                    .with_url(url)
                    .build()
                    .map_err(fail)?;
                (Arc::new(store), prefix_of(&parsed, &shown)?)
            }
            "gs" => {
                let store = object_store::gcp::GoogleCloudStorageBuilder::from_env()
                    .with_url(url)
                    .build()
                    .map_err(fail)?;
                (Arc::new(store), prefix_of(&parsed, &shown)?)
            }
            "az" | "azure" | "abfs" | "abfss" => {
                let store = object_store::azure::MicrosoftAzureBuilder::from_env()
                    .with_url(url)
                    .build()
                    .map_err(fail)?;
                (Arc::new(store), prefix_of(&parsed, &shown)?)
            }
            other => {
                return Err(destination(
                    &shown,
                    format!("{other}:// is not a store Plinth writes to (s3, gs, az, file)"),
                ));
            }
        };
        Ok(Self {
            store,
            root,
            url: shown,
        })
    }

    /// The destination, as messages show it.
    pub fn url(&self) -> &str {
        &self.url
    }

    fn path(&self, key: &str) -> Path {
        let mut path = self.root.clone();
        for part in key.split('/').filter(|part| !part.is_empty()) {
            path = path.clone().join(part);
        }
        path
    }

    /// `key` relative to the destination's prefix.
    fn key(&self, path: &Path) -> String {
        match path.prefix_match(&self.root) {
            Some(parts) => parts
                .map(|part| part.as_ref().to_owned())
                .collect::<Vec<_>>()
                .join("/"),
            None => path.to_string(),
        }
    }

    fn store_error(&self, key: &str, e: object_store::Error) -> ArchiveError {
        ArchiveError::Store {
            url: self.url.clone(),
            key: key.to_owned(),
            reason: e.to_string(),
        }
    }

    /// Writes `bytes` as `key`, replacing what was there: a retried write leaves the same
    /// object.
    pub async fn put(&self, key: &str, bytes: Bytes) -> Result<(), ArchiveError> {
        self.store
            .put(&self.path(key), PutPayload::from_bytes(bytes))
            .await
            .map(drop)
            .map_err(|e| self.store_error(key, e))
    }

    /// The object `key`, or `None` when there is none.
    pub async fn get(&self, key: &str) -> Result<Option<Bytes>, ArchiveError> {
        self.get_at_most(key, u64::MAX).await
    }

    /// The object `key`, or `None` when there is none; one larger than `max` bytes is
    /// refused unread.
    pub async fn get_at_most(&self, key: &str, max: u64) -> Result<Option<Bytes>, ArchiveError> {
        let got = match self.store.get(&self.path(key)).await {
            Ok(got) => got,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(self.store_error(key, e)),
        };
        if got.meta.size > max {
            return Err(self.malformed(key, format!("{} bytes, over {max}", got.meta.size)));
        }
        got.bytes()
            .await
            .map(Some)
            .map_err(|e| self.store_error(key, e))
    }

    /// The keys of every object under `prefix`, sorted.
    pub async fn list(&self, prefix: &str) -> Result<Vec<String>, ArchiveError> {
        Ok(self.list_at_most(prefix, usize::MAX).await?.0)
    }

    /// The keys of at most `max` objects under `prefix`, sorted, and whether there were more:
    /// a prefix holding more than Plinth wrote there is never held whole.
    pub async fn list_at_most(
        &self,
        prefix: &str,
        max: usize,
    ) -> Result<(Vec<String>, bool), ArchiveError> {
        let path = self.path(prefix);
        let mut listing = self.store.list(Some(&path));
        let mut keys = Vec::new();
        while let Some(meta) = listing
            .try_next()
            .await
            .map_err(|e| self.store_error(prefix, e))?
        {
            if keys.len() == max {
                return Ok((keys, true));
            }
            keys.push(self.key(&meta.location));
        }
        keys.sort();
        Ok((keys, false))
    }

    fn malformed(&self, key: &str, reason: String) -> ArchiveError {
        ArchiveError::Malformed {
            url: self.url.clone(),
            key: key.to_owned(),
            reason,
        }
    }
}

/// The `file://` URL of local directory `dir`, which must be absolute.
pub fn directory_url(dir: &std::path::Path) -> Option<String> {
    url::Url::from_directory_path(dir)
        .ok()
        .map(|url| url.to_string())
}

fn destination(url: &str, reason: String) -> ArchiveError {
    ArchiveError::Destination {
        url: url.to_owned(),
        reason,
    }
}

/// The URL without a query, fragment or user information: what may appear in messages.
fn shown(url: &url::Url) -> String {
    let mut shown = url.clone();
    let _ = shown.set_username("");
    let _ = shown.set_password(None);
    shown.set_query(None);
    shown.set_fragment(None);
    shown.to_string()
}

/// The path after the bucket or container.
fn prefix_of(url: &url::Url, shown: &str) -> Result<Path, ArchiveError> {
    if url.host_str().is_none_or(str::is_empty) {
        return Err(destination(shown, "names no bucket".into()));
    }
    Path::parse(url.path().trim_matches('/')).map_err(|e| destination(shown, e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_listing_holds_no_more_keys_than_asked_and_says_there_were_more() {
        let dir = tempfile::tempdir().unwrap();
        let archive = Archive::open(&format!("file://{}", dir.path().display())).unwrap();
        for key in ["p/a", "p/b", "p/c"] {
            archive.put(key, Bytes::from_static(b"x")).await.unwrap();
        }
        let (some, more) = archive.list_at_most("p", 2).await.unwrap();
        assert_eq!((some.len(), more), (2, true));
        let (all, more) = archive.list_at_most("p", 3).await.unwrap();
        assert_eq!(
            (all, more),
            (vec!["p/a".into(), "p/b".into(), "p/c".into()], false)
        );
    }

    #[tokio::test]
    async fn a_file_destination_keeps_what_is_put_under_its_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("file://{}/archive", dir.path().display());
        let archive = Archive::open(&url).unwrap();
        archive
            .put(
                "audit/v1/2026/12/04/10/1.ndjson",
                Bytes::from_static(b"x\n"),
            )
            .await
            .unwrap();
        assert_eq!(
            std::fs::read(dir.path().join("archive/audit/v1/2026/12/04/10/1.ndjson")).unwrap(),
            b"x\n"
        );
        assert_eq!(
            archive.list("audit/v1/2026").await.unwrap(),
            ["audit/v1/2026/12/04/10/1.ndjson"]
        );
        assert_eq!(
            archive
                .get("audit/v1/2026/12/04/10/1.ndjson")
                .await
                .unwrap(),
            Some(Bytes::from_static(b"x\n"))
        );
        assert_eq!(archive.get("audit/v1/none").await.unwrap(), None);
        assert!(archive.list("history").await.unwrap().is_empty());
    }

    #[test]
    fn a_destination_plinth_cannot_write_to_is_refused_by_its_url() {
        for (url, why) in [
            ("ftp://host/x", "not a store"),
            ("s3://key:secret@bucket/x", "credentials do not belong"),
            ("not a url with secret", "(not a URL)"),
        ] {
            let e = Archive::open(url).unwrap_err().to_string();
            assert!(e.contains(why), "{url}: {e}");
            assert!(!e.contains("secret"), "{e}");
        }
    }
}
