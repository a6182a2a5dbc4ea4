//! Safe extraction of `.tar.gz` / `.tgz` / `.tar.xz` archives.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result, anyhow, bail};
use tar::EntryType;

/// Extracts `archive` into `dest`, an existing empty directory. Refuses entries that would land
/// outside `dest` (absolute paths, `..`, links pointing outside).
///
/// Also refused, because they could be used to the same end: writing through a symlink that an
/// earlier entry made, symlink targets with `..` after a name (`a/../..`: the real resolution
/// depends on whether `a` is itself a link), hard links to symlinks, and device or fifo entries.
/// File and directory modes (without setuid/setgid/sticky) and mtimes are kept, but every
/// directory is made at least `rwxr-xr-x`; owners are not kept.
pub fn extract(archive: &Path, dest: &Path) -> Result<()> {
    extract_within(archive, dest, Limits::default())
}

/// The most an archive may hold: more is refused as a decompression bomb.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Bytes of file content, all entries together.
    pub bytes: u64,
    pub entries: u64,
}

impl Default for Limits {
    /// About four times the largest CPython release (130 MB and 5,300 entries for 3.14).
    fn default() -> Self {
        Limits {
            bytes: 512 * 1024 * 1024,
            entries: 50_000,
        }
    }
}

/// `extract` with other limits.
pub fn extract_within(archive: &Path, dest: &Path, limits: Limits) -> Result<()> {
    let name = archive
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let file = File::open(archive).with_context(|| format!("cannot open {}", archive.display()))?;
    let reader = BufReader::new(file);
    let decoded: Box<dyn Read> = if name.ends_with(".tar.gz") || name.ends_with(".tgz") {
        Box::new(flate2::read::MultiGzDecoder::new(reader))
    } else if name.ends_with(".tar.xz") || name.ends_with(".txz") {
        Box::new(liblzma::read::XzDecoder::new_multi_decoder(reader))
    } else {
        bail!(
            "cannot extract {}: unknown archive type (expected .tar.gz, .tgz or .tar.xz)",
            archive.display()
        );
    };
    unpack(decoded, dest, limits).with_context(|| format!("cannot extract {}", archive.display()))
}

/// An I/O error while unpacking `shown` to `target`, told apart from a refusal: a damaged
/// archive, or a destination that cannot be written. The whole cause is kept.
fn io_error(e: std::io::Error, shown: &str, target: &Path, dest: &Path) -> anyhow::Error {
    use std::io::ErrorKind;
    let what = match e.kind() {
        ErrorKind::UnexpectedEof | ErrorKind::InvalidData | ErrorKind::InvalidInput => format!(
            "cannot read the entry {shown:?} (an I/O error: the archive is truncated or damaged)"
        ),
        ErrorKind::StorageFull | ErrorKind::QuotaExceeded => format!(
            "cannot write {} (an I/O error: the disk is full)\nhint: free space in {}",
            target.display(),
            dest.display()
        ),
        _ => format!(
            "cannot write {} (an I/O error, not a refusal of the archive)",
            target.display()
        ),
    };
    anyhow::Error::new(e).context(what)
}

/// An entry's header that cannot be read. The tar crate's own complaints (kind `Other`) quote
/// the header's raw bytes, so they are replaced by what they mean; a decompression or read
/// error keeps its cause.
fn header_error(e: std::io::Error, entries_before: u64) -> anyhow::Error {
    match e.kind() {
        std::io::ErrorKind::Other if entries_before == 0 => {
            anyhow!("it is not a tar archive (its first block is no tar header)")
        }
        std::io::ErrorKind::Other => anyhow!(
            "the tar header after entry {entries_before} is damaged (the archive is corrupt)"
        ),
        _ => anyhow::Error::new(e).context("cannot read the archive (is it truncated?)"),
    }
}

fn unpack(input: Box<dyn Read>, dest: &Path, limits: Limits) -> Result<()> {
    let mut archive = tar::Archive::new(input);
    archive.set_preserve_permissions(false);
    archive.set_preserve_ownerships(false);
    archive.set_preserve_mtime(true);
    archive.set_unpack_xattrs(false);
    archive.set_overwrite(true);

    // Directory modes and mtimes are set last: a read-only directory would refuse its entries,
    // and every entry written into a directory changes its mtime.
    let mut dirs: Vec<(PathBuf, u32, u64)> = Vec::new();
    let mut tally = Tally::default();
    for entry in archive.entries().context("cannot read the archive")? {
        let mut entry = entry.map_err(|e| header_error(e, tally.entries))?;
        let shown = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        tally.add(&entry, &shown, limits)?;
        let refuse = |why: String| anyhow!("entry {shown:?} {why}");
        let kind = entry.header().entry_type();
        if kind.is_pax_global_extensions()
            || kind.is_pax_local_extensions()
            || kind.is_gnu_longname()
            || kind.is_gnu_longlink()
        {
            continue;
        }
        let path = entry
            .path()
            .map_err(|e| refuse(format!("has an unreadable path: {e}")))?;
        let rel = relative_inside(&path).map_err(refuse)?;
        if rel.as_os_str().is_empty() {
            continue;
        }
        let target = dest.join(&rel);
        match kind {
            EntryType::Directory => dirs.push(unpack_dir(&entry, dest, &rel, target, &refuse)?),
            EntryType::Regular | EntryType::Continuous => {
                prepare_parent(dest, &rel).map_err(refuse)?;
                entry
                    .unpack(&target)
                    .map_err(|e| io_error(e, &shown, &target, dest))?;
            }
            EntryType::Symlink => unpack_symlink(&entry, dest, &rel, &target, &refuse)?,
            EntryType::Link => unpack_hard_link(&entry, dest, &rel, &target, &refuse)?,
            other => return Err(refuse(format!("has an unsupported type ({other:?})"))),
        }
    }
    set_dir_modes_and_mtimes(&dirs)
}

/// The entries and bytes of an archive so far, checked against its limits.
#[derive(Default)]
struct Tally {
    bytes: u64,
    entries: u64,
}

impl Tally {
    /// Counts `entry` (shown as `shown`), refusing the archive once it is over `limits`.
    fn add<R: Read>(
        &mut self,
        entry: &tar::Entry<'_, R>,
        shown: &str,
        limits: Limits,
    ) -> Result<()> {
        self.entries += 1;
        self.bytes = self
            .bytes
            .saturating_add(entry.header().size().unwrap_or(0));
        if self.entries > limits.entries {
            bail!(
                "the archive has more than {} entries; refused as a decompression bomb",
                limits.entries
            );
        }
        if self.bytes > limits.bytes {
            bail!(
                "the archive holds more than {} bytes (at entry {shown:?}); refused as a decompression bomb",
                limits.bytes
            );
        }
        Ok(())
    }
}

/// Creates the directory entry `rel` at `target`, and returns its mode and mtime to set last.
fn unpack_dir<R: Read>(
    entry: &tar::Entry<'_, R>,
    dest: &Path,
    rel: &Path,
    target: PathBuf,
    refuse: &dyn Fn(String) -> anyhow::Error,
) -> Result<(PathBuf, u32, u64)> {
    no_links_on_the_way(dest, rel, true).map_err(refuse)?;
    std::fs::create_dir_all(&target)
        .with_context(|| format!("cannot create {}", target.display()))?;
    // A directory its owner cannot enter (mode 000) would stop the build and
    // the cache's own clean-up: every directory is at least rwxr-xr-x.
    let mode = (entry.header().mode().unwrap_or(0o755) & 0o777) | 0o755;
    let mtime = entry.header().mtime().unwrap_or(0);
    Ok((target, mode, mtime))
}

/// The target of the link entry `entry`, which is `what` (`a symlink`, `a hard link`).
fn link_target<R: Read>(
    entry: &tar::Entry<'_, R>,
    what: &str,
    refuse: &dyn Fn(String) -> anyhow::Error,
) -> Result<PathBuf> {
    let link = entry
        .link_name()
        .map_err(|e| refuse(format!("has an unreadable link target: {e}")))?
        .ok_or_else(|| refuse(format!("is {what} without a target")))?;
    Ok(link.into_owned())
}

/// Creates the symlink entry `rel` at `target`, if its target stays inside `dest`.
fn unpack_symlink<R: Read>(
    entry: &tar::Entry<'_, R>,
    dest: &Path,
    rel: &Path,
    target: &Path,
    refuse: &dyn Fn(String) -> anyhow::Error,
) -> Result<()> {
    let link = link_target(entry, "a symlink", refuse)?;
    symlink_stays_inside(rel, &link).map_err(refuse)?;
    prepare_parent(dest, rel).map_err(refuse)?;
    remove_non_dir(target)?;
    make_symlink(&link, target)
        .with_context(|| format!("cannot create the symlink {}", target.display()))
}

/// Creates the hard link entry `rel` at `target`, if it links to a regular file extracted
/// before it.
fn unpack_hard_link<R: Read>(
    entry: &tar::Entry<'_, R>,
    dest: &Path,
    rel: &Path,
    target: &Path,
    refuse: &dyn Fn(String) -> anyhow::Error,
) -> Result<()> {
    let link = link_target(entry, "a hard link", refuse)?;
    let link_rel = relative_inside(&link)
        .map_err(|why| refuse(format!("links to {}: {why}", link.display())))?;
    no_links_on_the_way(dest, &link_rel, false)
        .map_err(|why| refuse(format!("links to {}: {why}", link.display())))?;
    let source = dest.join(&link_rel);
    if !std::fs::symlink_metadata(&source).is_ok_and(|m| m.is_file()) {
        return Err(refuse(format!(
            "links to {}, which is not a regular file extracted before it",
            link.display()
        )));
    }
    prepare_parent(dest, rel).map_err(refuse)?;
    remove_non_dir(target)?;
    std::fs::hard_link(&source, target)
        .with_context(|| format!("cannot link {} to {}", target.display(), source.display()))
}

/// Sets the modes and mtimes of the extracted directories, deepest (last made) first.
fn set_dir_modes_and_mtimes(dirs: &[(PathBuf, u32, u64)]) -> Result<()> {
    for (dir, mode, mtime) in dirs.iter().rev() {
        set_mode(dir, *mode)?;
        let time = SystemTime::UNIX_EPOCH + Duration::from_secs(*mtime);
        File::open(dir)
            .and_then(|f| f.set_modified(time))
            .with_context(|| format!("cannot set the mtime of {}", dir.display()))?;
    }
    Ok(())
}

/// `path` as a relative path of plain names, or why it is not one.
pub(crate) fn relative_inside(path: &Path) -> Result<PathBuf, String> {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::Normal(name) => out.push(name),
            Component::CurDir => {}
            Component::ParentDir => return Err("has a `..` component".into()),
            Component::RootDir | Component::Prefix(_) => return Err("is an absolute path".into()),
        }
    }
    Ok(out)
}

/// Refuses `rel` when a directory on the way to it (and, with `itself`, `rel` too) is a symlink
/// or not a directory: writing there would follow the link.
pub(crate) fn no_links_on_the_way(dest: &Path, rel: &Path, itself: bool) -> Result<(), String> {
    let mut at = dest.to_path_buf();
    let names: Vec<_> = rel.components().collect();
    let check = if itself {
        names.len()
    } else {
        names.len().saturating_sub(1)
    };
    for (i, name) in names.iter().take(check).enumerate() {
        at.push(name);
        match std::fs::symlink_metadata(&at) {
            Ok(m) if m.file_type().is_symlink() => {
                let via: PathBuf = names[..=i].iter().collect();
                return Err(format!(
                    "would be written through the symlink {}",
                    via.display()
                ));
            }
            Ok(m) if !m.is_dir() && i + 1 < names.len() => {
                let via: PathBuf = names[..=i].iter().collect();
                return Err(format!(
                    "is below {}, which is not a directory",
                    via.display()
                ));
            }
            Ok(_) => {}
            Err(_) => break,
        }
    }
    Ok(())
}

/// Checks the way to `rel` and creates its parent directories.
fn prepare_parent(dest: &Path, rel: &Path) -> Result<(), String> {
    no_links_on_the_way(dest, rel, false)?;
    if let Some(parent) = rel.parent() {
        let dir = dest.join(parent);
        std::fs::create_dir_all(&dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    Ok(())
}

/// A symlink at `rel` pointing to `target` must resolve inside the tree: relative, only leading
/// `..` (no more of them than `rel` is deep), then plain names.
fn symlink_stays_inside(rel: &Path, target: &Path) -> Result<(), String> {
    let depth = rel.components().count().saturating_sub(1);
    let mut ups = 0;
    let mut seen_name = false;
    for component in target.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir if seen_name => {
                return Err(format!(
                    "is a symlink to {}, with `..` after a name",
                    target.display()
                ));
            }
            Component::ParentDir => ups += 1,
            Component::Normal(_) => seen_name = true,
            Component::RootDir | Component::Prefix(_) => {
                return Err(format!(
                    "is a symlink to the absolute path {}",
                    target.display()
                ));
            }
        }
    }
    if ups > depth {
        return Err(format!(
            "is a symlink to {}, outside the extracted tree",
            target.display()
        ));
    }
    Ok(())
}

/// Makes room for a link: an earlier entry of the same name (never a directory) is replaced.
fn remove_non_dir(path: &Path) -> Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if !m.is_dir() => {
            std::fs::remove_file(path).with_context(|| format!("cannot replace {}", path.display()))
        }
        _ => Ok(()),
    }
}

#[cfg(unix)]
fn make_symlink(target: &Path, link: &Path) -> std::io::Result<()> {
    std::os::unix::fs::symlink(target, link)
}

#[cfg(not(unix))]
fn make_symlink(_target: &Path, _link: &Path) -> std::io::Result<()> {
    Err(std::io::Error::other("symlinks are only extracted on Unix"))
}

#[cfg(unix)]
fn set_mode(path: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("cannot set the mode of {}", path.display()))
}

#[cfg(not(unix))]
fn set_mode(_path: &Path, _mode: u32) -> Result<()> {
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests;
