//! Multi-file patch application with diffy: all in memory first, written only if everything applied.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use diffy::patch_set::{FileMode, FileOperation, ParseOptions, PatchKind, PatchSet};
use diffy::{Hunk, Line, Patch};

use crate::extract::{no_links_on_the_way, relative_inside};

/// What happened to one patch file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Applied,
    AlreadyApplied,
}

/// Applies every patch (in order) to the tree rooted at `tree`. Nothing is written unless every
/// hunk of every file of every patch applied.
///
/// Paths lose their first component (`a/`, `b/`), like `patch -p1`. Context must match byte for
/// byte, though a hunk may be found away from its line numbers. A patch that does not apply but
/// whose reverse does is `AlreadyApplied`; one that applies both ways is an error, since either
/// reading could be wrong.
pub fn apply_all(tree: &Path, patches: &[PathBuf]) -> Result<Vec<Outcome>> {
    let mut state = Tree {
        root: tree,
        files: BTreeMap::new(),
    };
    let mut outcomes = Vec::new();
    for patch_file in patches {
        let text = std::fs::read(patch_file)
            .with_context(|| format!("cannot read the patch {}", patch_file.display()))?;
        let changes = parse(&text, patch_file)?;
        let forward = plan(&state, &changes, patch_file, false);
        let backward = plan(&state, &changes, patch_file, true);
        let outcome = match (forward, backward) {
            (Ok(planned), Err(_)) => {
                state.files.extend(planned);
                Outcome::Applied
            }
            (Err(_), Ok(_)) => Outcome::AlreadyApplied,
            (Ok(_), Ok(_)) => bail!(
                "{} applies both forwards and backwards to {}, so whether it is already applied cannot be told\nhint: give its hunks more context (`git diff -U5`)",
                patch_file.display(),
                tree.display()
            ),
            (Err(e), Err(_)) => return Err(e),
        };
        outcomes.push(outcome);
    }
    state.write()?;
    Ok(outcomes)
}

/// Applies in memory, with context matched byte for byte (no fuzz), the hunks of `patch_file`
/// that change files under `under` (`Lib`) to the same files of another tree laid out without
/// that directory: `Lib/x` is read as `dir/x` (Debian ships CPython's `Lib/` as
/// `usr/lib/python3.X/`). Nothing is written. Returns the files checked, by their patch paths;
/// the error names the file and the hunk.
pub fn check_subtree(patch_file: &Path, under: &Path, dir: &Path) -> Result<Vec<PathBuf>> {
    let text = std::fs::read(patch_file)
        .with_context(|| format!("cannot read the patch {}", patch_file.display()))?;
    let mut checked = Vec::new();
    let mut selected = Vec::new();
    for change in parse(&text, patch_file)? {
        let Some(target) = change.target.below(under) else {
            continue;
        };
        checked.push(under.join(target.path()));
        selected.push(Change { target, ..change });
    }
    let tree = Tree {
        root: dir,
        files: BTreeMap::new(),
    };
    plan(&tree, &selected, patch_file, false).with_context(|| {
        format!(
            "the {} hunks of {} do not apply to {}",
            under.display(),
            patch_file.display(),
            dir.display()
        )
    })?;
    Ok(checked)
}

/// Parses `patch_file` and returns the number of files it changes (for the catalog invariants).
#[cfg(test)]
pub fn check_parses(patch_file: &Path) -> Result<usize> {
    let text = std::fs::read(patch_file)
        .with_context(|| format!("cannot read the patch {}", patch_file.display()))?;
    Ok(parse(&text, patch_file)?.len())
}

/// A file's content as planned: `None` when deleted; with the mode to set, if any.
#[derive(Clone)]
struct Planned {
    content: Option<Vec<u8>>,
    executable: Option<bool>,
}

/// The tree on disk plus every change planned so far.
struct Tree<'a> {
    root: &'a Path,
    files: BTreeMap<PathBuf, Planned>,
}

impl Tree<'_> {
    /// The current content of `rel`, or `None` when it does not exist.
    fn read(&self, rel: &Path) -> Result<Option<Vec<u8>>> {
        if let Some(planned) = self.files.get(rel) {
            return Ok(planned.content.clone());
        }
        let path = self.root.join(rel);
        // Patches change regular files of the tree only: never what a link leads to.
        no_links_on_the_way(self.root, rel, true)
            .map_err(|why| anyhow!("{} {why}; patches change regular files only", rel.display()))?;
        match std::fs::read(&path) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
        }
    }

    fn write(&self) -> Result<()> {
        for (rel, planned) in &self.files {
            let path = self.root.join(rel);
            match &planned.content {
                Some(bytes) => {
                    if let Some(dir) = path.parent() {
                        std::fs::create_dir_all(dir)
                            .with_context(|| format!("cannot create {}", dir.display()))?;
                    }
                    replace(&path, bytes, planned.executable)?;
                }
                None => match std::fs::remove_file(&path) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                        return Err(e).with_context(|| format!("cannot remove {}", path.display()));
                    }
                    _ => {}
                },
            }
        }
        Ok(())
    }
}

/// Writes `bytes` to `path` through a sibling file and a rename, so that a hard link to the old
/// file keeps the old content. The mode is `executable`'s, or else the old file's.
fn replace(path: &Path, bytes: &[u8], executable: Option<bool>) -> Result<()> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.patched.{}", std::process::id()));
    let old_mode = std::fs::symlink_metadata(path)
        .ok()
        .map(|m| m.permissions());
    std::fs::write(&tmp, bytes).with_context(|| format!("cannot write {}", tmp.display()))?;
    match (executable, old_mode) {
        (Some(executable), _) => set_executable(&tmp, executable)?,
        (None, Some(mode)) => std::fs::set_permissions(&tmp, mode)
            .with_context(|| format!("cannot set the mode of {}", tmp.display()))?,
        (None, None) => {}
    }
    std::fs::rename(&tmp, path).with_context(|| {
        let _ = std::fs::remove_file(&tmp);
        format!("cannot rename {} to {}", tmp.display(), path.display())
    })
}

/// What one file section of a patch does.
enum Target {
    /// The paths of the `---` and `+++` lines; usually the same.
    Modify(PathBuf, PathBuf),
    Create(PathBuf),
    Delete(PathBuf),
}

impl Target {
    /// The path of the file that is changed (the `+++` one of a modification).
    fn path(&self) -> &Path {
        match self {
            Target::Modify(_, p) | Target::Create(p) | Target::Delete(p) => p,
        }
    }

    /// The same change with its paths relative to `dir`, if it is below `dir`.
    fn below(&self, dir: &Path) -> Option<Target> {
        let strip = |p: &PathBuf| p.strip_prefix(dir).ok().map(Path::to_path_buf);
        Some(match self {
            Target::Modify(a, b) => Target::Modify(strip(a)?, strip(b)?),
            Target::Create(p) => Target::Create(strip(p)?),
            Target::Delete(p) => Target::Delete(strip(p)?),
        })
    }
}

struct Change<'a> {
    target: Target,
    patch: Patch<'a, [u8]>,
    executable: Option<bool>,
}

fn parse<'a>(text: &'a [u8], patch_file: &Path) -> Result<Vec<Change<'a>>> {
    let git = text
        .split(|&b| b == b'\n')
        .any(|line| line.starts_with(b"diff --git "));
    let (body, opts) = if git {
        // The git parser skips everything before the first `diff --git` line.
        (text, ParseOptions::gitdiff())
    } else {
        (skip_header(text), ParseOptions::unidiff())
    };
    let mut changes = Vec::new();
    for file in PatchSet::parse_bytes(body, opts) {
        let file =
            file.with_context(|| format!("cannot parse the patch {}", patch_file.display()))?;
        let path = |bytes: &[u8]| -> Result<PathBuf> {
            let text = std::str::from_utf8(bytes).map_err(|_| {
                anyhow!(
                    "{}: the path {:?} is not UTF-8",
                    patch_file.display(),
                    String::from_utf8_lossy(bytes)
                )
            })?;
            relative_inside(Path::new(text))
                .map_err(|why| anyhow!("{}: the path {text:?} {why}", patch_file.display()))
        };
        let target = match file.operation().strip_prefix(1) {
            FileOperation::Modify { original, modified } => {
                Target::Modify(path(&original)?, path(&modified)?)
            }
            FileOperation::Create(p) => Target::Create(path(&p)?),
            FileOperation::Delete(p) => Target::Delete(path(&p)?),
            FileOperation::Rename { .. } | FileOperation::Copy { .. } => bail!(
                "{}: renames and copies are not supported\nhint: make the patch with `git diff --no-renames`",
                patch_file.display()
            ),
        };
        let executable = file.new_mode().and_then(|m| match m {
            FileMode::Executable => Some(true),
            FileMode::Regular => Some(false),
            _ => None,
        });
        let patch = match file.into_patch() {
            PatchKind::Text(patch) => patch,
            PatchKind::Binary(_) => {
                bail!("{}: binary patches are not supported", patch_file.display())
            }
        };
        changes.push(Change {
            target,
            patch,
            executable,
        });
    }
    Ok(changes)
}

/// Drops free text before the first `--- ` line that a `+++ ` line follows (a header comment).
fn skip_header(text: &[u8]) -> &[u8] {
    let mut offset = 0;
    let mut lines = text.split_inclusive(|&b| b == b'\n').peekable();
    while let Some(line) = lines.next() {
        if line.starts_with(b"--- ") && lines.peek().is_some_and(|next| next.starts_with(b"+++ ")) {
            return &text[offset..];
        }
        offset += line.len();
    }
    text
}

/// Applies one patch file (forwards, or backwards to test whether it is already applied) on top
/// of `tree`, returning the new content of every file it touches.
fn plan(
    tree: &Tree,
    changes: &[Change],
    patch_file: &Path,
    backwards: bool,
) -> Result<BTreeMap<PathBuf, Planned>> {
    let mut out: BTreeMap<PathBuf, Planned> = BTreeMap::new();
    for change in changes {
        let reversed;
        let patch = if backwards {
            reversed = change.patch.reverse();
            &reversed
        } else {
            &change.patch
        };
        let (rel, must_exist, deletes) = target(tree, &out, &change.target, backwards)?;
        let current = match out.get(rel) {
            Some(planned) => planned.content.clone(),
            None => tree.read(rel)?,
        };
        let fail = |why: String| {
            anyhow!(
                "cannot apply {} to {}: {why}",
                patch_file.display(),
                rel.display()
            )
        };
        let base = match (current, must_exist) {
            (Some(bytes), true) => bytes,
            (None, false) => Vec::new(),
            (None, true) => return Err(fail("the file does not exist".into())),
            (Some(_), false) => return Err(fail("the file it creates already exists".into())),
        };
        let result = diffy::apply_bytes(&base, patch).map_err(|e| {
            if crlf_mismatch(&base, patch) {
                return fail(
                    "the patch has CRLF (Windows) line endings, but the file has LF ones\nhint: convert the patch to LF line endings (`sed -i 's/\\r$//' PATCH`, or `git config core.autocrlf false` and check it out again)".into(),
                );
            }
            let (n, detail) = explain(&base, patch, &e);
            fail(format!(
                "hunk #{n} does not match\n  {detail}\nhint: the patch was made for other sources; refresh it against this release"
            ))
        })?;
        let content = if deletes {
            if !result.is_empty() {
                return Err(fail(
                    "the file it deletes has more content than the patch removes".into(),
                ));
            }
            None
        } else {
            Some(result)
        };
        out.insert(
            rel.clone(),
            Planned {
                content,
                executable: change.executable,
            },
        );
    }
    Ok(out)
}

/// The file a change applies to, whether it must exist, and whether the change deletes it;
/// `planned` holds what the patch's earlier changes made of the tree.
fn target<'c>(
    tree: &Tree,
    planned: &BTreeMap<PathBuf, Planned>,
    target: &'c Target,
    backwards: bool,
) -> Result<(&'c PathBuf, bool, bool)> {
    Ok(match (target, backwards) {
        // `--- a/x.orig` / `+++ b/x`: the file that exists is the one to change.
        (Target::Modify(original, modified), _) => {
            let exists = |p: &PathBuf| -> Result<bool> {
                Ok(match planned.get(p) {
                    Some(planned) => planned.content.is_some(),
                    None => tree.read(p)?.is_some(),
                })
            };
            if original != modified && !exists(original)? && exists(modified)? {
                (modified, true, false)
            } else {
                (original, true, false)
            }
        }
        (Target::Create(p), false) | (Target::Delete(p), true) => (p, false, false),
        (Target::Create(p), true) | (Target::Delete(p), false) => (p, true, true),
    })
}

/// The patch's lines end in CRLF where the file's end in LF.
fn crlf_mismatch(base: &[u8], patch: &Patch<'_, [u8]>) -> bool {
    let patch_crlf = patch
        .hunks()
        .iter()
        .flat_map(|h| h.lines())
        .any(|line| match line {
            Line::Context(l) | Line::Delete(l) => l.ends_with(b"\r\n"),
            Line::Insert(_) => false,
        });
    patch_crlf && !base.windows(2).any(|w| w == b"\r\n")
}

/// Which hunk failed and the first of its lines that differs from the file where the hunk says
/// it belongs. diffy reports only the hunk number, so the line is worked out here.
fn explain(base: &[u8], patch: &Patch<'_, [u8]>, error: &diffy::ApplyError) -> (usize, String) {
    let lines: Vec<&[u8]> = base.split_inclusive(|&b| b == b'\n').collect();
    let reported = error
        .to_string()
        .rsplit('#')
        .next()
        .and_then(|n| n.trim().parse::<usize>().ok())
        .filter(|&n| n >= 1 && n <= patch.hunks().len());
    let first_mismatch = |hunk: &Hunk<'_, [u8]>| -> Option<String> {
        let range = hunk.old_range();
        // A hunk without old lines (`-5,0`) goes after line 5; otherwise it starts at line 5.
        let start = if range.is_empty() {
            range.start()
        } else {
            range.start().saturating_sub(1)
        };
        let wanted = hunk.lines().iter().filter_map(|line| match line {
            Line::Context(l) | Line::Delete(l) => Some(*l),
            Line::Insert(_) => None,
        });
        for (i, want) in wanted.enumerate() {
            let at = start + i;
            match lines.get(at) {
                Some(have) if *have == want => {}
                Some(have) => {
                    return Some(format!(
                        "line {}: the patch expects {:?}\n  but the file has   {:?}",
                        at + 1,
                        show(want),
                        show(have)
                    ));
                }
                None => {
                    return Some(format!(
                        "line {}: the patch expects {:?}\n  but the file ends at line {}",
                        at + 1,
                        show(want),
                        lines.len()
                    ));
                }
            }
        }
        None
    };
    let n = reported.unwrap_or_else(|| {
        patch
            .hunks()
            .iter()
            .position(|h| first_mismatch(h).is_some())
            .map_or(1, |i| i + 1)
    });
    let detail = patch
        .hunks()
        .get(n - 1)
        .and_then(first_mismatch)
        .unwrap_or_else(|| "its lines are in place, but overlap an earlier hunk".into());
    (n, detail)
}

fn show(line: &[u8]) -> String {
    let text = String::from_utf8_lossy(line);
    text.strip_suffix('\n').unwrap_or(&text).to_string()
}

#[cfg(unix)]
fn set_executable(path: &Path, executable: bool) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mode = if executable { 0o755 } else { 0o644 };
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("cannot set the mode of {}", path.display()))
}

#[cfg(not(unix))]
fn set_executable(_path: &Path, _executable: bool) -> Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests;
