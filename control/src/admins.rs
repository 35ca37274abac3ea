//! Platform admins and group owners: who may change what, from the directory.

use std::sync::Arc;

use crate::directory::{Directory, DirectoryError, Size};
use plinth_identity::Identity;

/// The directory and the platform admin group.
#[derive(Clone)]
pub struct Admins {
    directory: Arc<dyn Directory>,
    group: String,
}

impl std::fmt::Debug for Admins {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admins")
            .field("group", &self.group)
            .finish_non_exhaustive()
    }
}

impl Admins {
    /// Members of `group` in `directory` are admins.
    pub fn new(directory: Arc<dyn Directory>, group: String) -> Self {
        Self { directory, group }
    }

    /// The admin group's name.
    pub fn group(&self) -> &str {
        &self.group
    }

    /// The directory, re-read first if its source changed (a stat, not a read, when not).
    pub fn directory(&self) -> Arc<dyn Directory> {
        if let Err(e) = self.directory.refresh() {
            tracing::error!(error = %e, "directory not reloaded; the previous one stays in force");
        }
        self.directory.clone()
    }

    /// Re-reads the directory now (see [`Directory::reload`]); gives its size then.
    pub async fn reload(&self, floor: Option<Size>) -> Result<Size, DirectoryError> {
        self.directory.reload(floor).await
    }

    /// Whether `identity` is a platform admin.
    pub fn include(&self, identity: &Identity) -> bool {
        self.may_change(identity, [])
    }

    /// May `identity` change something that members of `groups` (and admins) change?
    pub fn may_change<'a>(
        &self,
        identity: &Identity,
        groups: impl IntoIterator<Item = &'a String>,
    ) -> bool {
        let directory = self.directory();
        directory.is_member(identity, &self.group)
            || groups
                .into_iter()
                .any(|group| directory.is_member(identity, group))
    }
}
