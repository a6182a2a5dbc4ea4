//! Verified downloads: mirrors first, then the recipe's URLs; sha256 and size checked while streaming.

use std::path::PathBuf;

use anyhow::Result;

use crate::cache::Cache;
use crate::catalog::Source;
use crate::progress::Reporter;

/// Fetches sources into the cache's content-addressed `downloads/` directory.
pub struct Fetcher<'a> {
    pub cache: &'a Cache,
    pub mirrors: Vec<String>,
    pub offline: bool,
    pub reporter: &'a dyn Reporter,
}

impl<'a> Fetcher<'a> {
    /// Returns the path of the verified file in the cache, downloading it if needed.
    pub fn fetch(&self, source: &Source) -> Result<PathBuf> {
        let _ = (
            source,
            self.cache,
            &self.mirrors,
            self.offline,
            self.reporter,
        );
        todo!("download")
    }

    /// Fetches several sources concurrently; paths in the same order.
    pub fn fetch_all(&self, sources: &[&Source]) -> Result<Vec<PathBuf>> {
        sources.iter().map(|s| self.fetch(s)).collect()
    }
}
