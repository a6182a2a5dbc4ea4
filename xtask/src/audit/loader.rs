//! The libraries an ELF file loads, found the way the dynamic loader (ld.so) finds them in one
//! file system: its `NEEDED` entries, then theirs, breadth first, as ld.so loads them.
//!
//! A `NEEDED` name with a `/` in it is a path. Any other name of an object is searched in: the
//! object's `DT_RUNPATH`, if it has one; otherwise its `DT_RPATH` and then the `DT_RPATH` of each
//! object above it in the chain (RUNPATH serves only the object's own `NEEDED`, RPATH is
//! inherited); then the directories of `/etc/ld.so.conf` and the files its `include` globs name,
//! standing in for the `ld.so.cache` that `ldconfig` builds from them; then the default
//! directories for the object's machine (multiarch, `lib64`, then `/lib` and `/usr/lib`).
//! `$ORIGIN` is the directory the object was found in. A candidate counts when it is an ELF file
//! with a dynamic section, of the object's machine, after its symlinks are followed inside the
//! root (absolute targets from the root's `/`).
//!
//! Simplified on purpose: the executable's own RPATH, `LD_LIBRARY_PATH`, `LD_PRELOAD`, `$LIB`,
//! `$PLATFORM` and hwcaps subdirectories are not modelled, and a name already loaded is not
//! searched again (ld.so reuses a loaded soname). The walk is bounded: each name is loaded
//! once, chains stop at `MAX_DEPTH`, symlinks at `MAX_LINKS`, so a cycle cannot hang it.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::io::Read;
use std::path::{Component, Path, PathBuf};

use crate::elf::{self, Dynamic};

/// The longest chain of libraries followed below the file audited.
const MAX_DEPTH: usize = 16;
/// The most symlinks followed to resolve one path (as the kernel's `ELOOP` limit).
const MAX_LINKS: usize = 40;
/// The most `include` levels of `ld.so.conf` followed.
const MAX_INCLUDES: usize = 8;
/// The largest `ld.so.conf` file read.
const MAX_CONF: u64 = 1 << 20;

/// A file system as the loader sees it; every path is absolute in the root's own terms.
pub trait Root {
    /// The target of `path` if it is a symlink (the directories of `path` are resolved).
    fn read_link(&self, path: &str) -> Option<String>;
    /// The dynamic section of the ELF file at `path` (no symlink left in it), if it is one.
    fn dynamic_of(&self, path: &str) -> Option<Dynamic>;
    /// `/etc/ld.so.conf` and the files of `/etc/ld.so.conf.d`, by path.
    fn ld_so_conf(&self) -> BTreeMap<String, String>;
}

/// A root recorded in memory: an image's file system read in one walk, or a test's.
#[derive(Debug, Default)]
pub struct MemRoot {
    /// Symlinks, path to target as stored.
    pub links: HashMap<String, String>,
    /// ELF files with a dynamic section.
    pub files: HashMap<String, Dynamic>,
    /// `/etc/ld.so.conf` and `/etc/ld.so.conf.d/*`, path to text.
    pub conf: BTreeMap<String, String>,
}

impl Root for MemRoot {
    fn read_link(&self, path: &str) -> Option<String> {
        self.links.get(path).cloned()
    }

    fn dynamic_of(&self, path: &str) -> Option<Dynamic> {
        self.files.get(path).cloned()
    }

    fn ld_so_conf(&self) -> BTreeMap<String, String> {
        self.conf.clone()
    }
}

/// This machine's file system, with the paths below `installed` read from `dir` (a tree
/// audited where it was unpacked, or a root file system), and the ELF files read cached.
#[derive(Debug)]
pub struct HostRoot {
    installed: String,
    dir: PathBuf,
    /// The largest file read.
    cap: u64,
    cache: RefCell<HashMap<String, Option<Dynamic>>>,
}

impl HostRoot {
    /// The host's `/`, with `installed` (an absolute path) read from `dir`.
    pub fn new(installed: &Path, dir: &Path, cap: u64) -> HostRoot {
        HostRoot {
            installed: normalize(&installed.display().to_string()),
            dir: dir.to_path_buf(),
            cap,
            cache: RefCell::default(),
        }
    }

    /// Where `path` of the root is on this machine.
    fn host_path(&self, path: &str) -> PathBuf {
        let rest = match self.installed.as_str() {
            "/" => path.strip_prefix('/'),
            root => path.strip_prefix(root).and_then(|r| {
                (r.is_empty() || r.starts_with('/')).then(|| r.trim_start_matches('/'))
            }),
        };
        match rest {
            Some("") => self.dir.clone(),
            Some(rest) => self.dir.join(rest),
            None => PathBuf::from(path),
        }
    }

    fn read_dynamic(&self, path: &str) -> Option<Dynamic> {
        let host = self.host_path(path);
        let meta = std::fs::metadata(&host).ok()?;
        if !meta.is_file() || meta.len() > self.cap {
            return None;
        }
        let mut file = std::fs::File::open(&host).ok()?.take(self.cap);
        let mut data = vec![0u8; 4];
        file.read_exact(&mut data).ok()?;
        if data != b"\x7fELF" {
            return None;
        }
        file.read_to_end(&mut data).ok()?;
        elf::parse(&data).ok().flatten()
    }
}

impl Root for HostRoot {
    fn read_link(&self, path: &str) -> Option<String> {
        // The directory mapped in stands for the installed root, whatever it and the
        // directories above it are here: they are taken as directories.
        if path == self.installed || self.installed.starts_with(&format!("{path}/")) {
            return None;
        }
        let target = std::fs::read_link(self.host_path(path)).ok()?;
        Some(target.to_string_lossy().into_owned())
    }

    fn dynamic_of(&self, path: &str) -> Option<Dynamic> {
        if let Some(known) = self.cache.borrow().get(path) {
            return known.clone();
        }
        let dynamic = self.read_dynamic(path);
        self.cache
            .borrow_mut()
            .insert(path.to_string(), dynamic.clone());
        dynamic
    }

    fn ld_so_conf(&self) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        let mut paths = vec!["/etc/ld.so.conf".to_string()];
        if let Ok(entries) = std::fs::read_dir(self.host_path("/etc/ld.so.conf.d")) {
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                paths.push(format!("/etc/ld.so.conf.d/{name}"));
            }
        }
        for path in paths {
            let host = self.host_path(&path);
            let small = std::fs::metadata(&host).is_ok_and(|m| m.is_file() && m.len() <= MAX_CONF);
            if let Some(text) = small.then(|| std::fs::read_to_string(&host).ok()).flatten() {
                out.insert(path, text);
            }
        }
        out
    }
}

/// Whether `path` is a file `ld.so.conf` may include, which an image walk records.
pub fn is_ld_so_conf(path: &str) -> bool {
    path == "/etc/ld.so.conf"
        || path
            .strip_prefix("/etc/ld.so.conf.d/")
            .is_some_and(|name| !name.is_empty() && !name.contains('/'))
}

/// Where the loader found a library.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// The name searched for in the directory it was found in, that directory's symlinks
    /// followed (`/usr/lib/x86_64-linux-gnu/libssl.so.3` where `/lib` links to `usr/lib`).
    pub path: String,
    /// That path with its symlinks followed: the file itself.
    pub real: String,
}

/// One library an object loads, and the chain of libraries that brought it in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loaded {
    pub needed: String,
    /// `None` when the loader finds it nowhere.
    pub found: Option<Found>,
    /// (NEEDED name, path found) of each library between the file audited and this one; empty
    /// for the file's own `NEEDED`.
    pub through: Vec<(String, String)>,
}

/// An object loaded, waiting for its own `NEEDED` to be searched.
struct Node {
    path: String,
    dynamic: Dynamic,
    /// RPATH directories inherited from the objects above, `$ORIGIN` expanded.
    inherited: Vec<String>,
    through: Vec<(String, String)>,
}

/// The loader's view of one root: the root and its `ld.so.conf` directories.
pub struct Loader<R> {
    root: R,
    conf_dirs: Vec<String>,
}

impl<R: Root> Loader<R> {
    pub fn new(root: R) -> Loader<R> {
        let conf_dirs = conf_dirs(&root.ld_so_conf());
        Loader { root, conf_dirs }
    }

    /// Every library the ELF file at `path` (with `dynamic`) loads, breadth first, each name
    /// once.
    pub fn loads(&self, path: &str, dynamic: &Dynamic) -> Vec<Loaded> {
        let mut names: HashSet<String> = dynamic.soname.iter().cloned().collect();
        let mut files: HashSet<String> = self.real_path(path).into_iter().collect();
        let mut out = Vec::new();
        let mut queue = VecDeque::from([Node {
            path: path.to_string(),
            dynamic: dynamic.clone(),
            inherited: vec![],
            through: vec![],
        }]);
        while let Some(node) = queue.pop_front() {
            let rpaths = rpaths_of(&node);
            for needed in &node.dynamic.needed {
                if !names.insert(needed.clone()) {
                    continue;
                }
                let found = self.find(needed, &node, &rpaths);
                if let Some((f, lib)) = &found
                    && node.through.len() < MAX_DEPTH
                    && files.insert(f.real.clone())
                {
                    let mut through = node.through.clone();
                    through.push((needed.clone(), f.path.clone()));
                    let (path, dynamic) = (f.path.clone(), lib.clone());
                    let inherited = rpaths.clone();
                    queue.push_back(Node {
                        path,
                        dynamic,
                        inherited,
                        through,
                    });
                }
                out.push(Loaded {
                    needed: needed.clone(),
                    found: found.map(|(f, _)| f),
                    through: node.through.clone(),
                });
            }
        }
        out
    }

    /// Where the loader finds `needed` of `node`, whose RPATH chain is `rpaths`.
    fn find(&self, needed: &str, node: &Node, rpaths: &[String]) -> Option<(Found, Dynamic)> {
        let machine = node.dynamic.machine;
        if needed.contains('/') {
            return needed
                .starts_with('/')
                .then(|| self.accept(needed, machine))
                .flatten();
        }
        let has_runpath = !node.dynamic.rpath && !node.dynamic.runpath.is_empty();
        let first: Vec<String> = match has_runpath {
            true => node
                .dynamic
                .runpath
                .iter()
                .map(|d| expand_origin(d, Some(&node.path)))
                .collect(),
            false => rpaths.to_vec(),
        };
        let defaults = default_dirs(machine);
        first
            .iter()
            .chain(&self.conf_dirs)
            .map(String::as_str)
            .chain(defaults.iter().copied())
            .find_map(|dir| self.accept(&format!("{dir}/{needed}"), machine))
    }

    /// The library at `path`, if the loader would take it for an object of `machine`.
    fn accept(&self, path: &str, machine: u16) -> Option<(Found, Dynamic)> {
        let real = self.real_path(path)?;
        let dynamic = self.root.dynamic_of(&real)?;
        let fits = dynamic.machine == machine || dynamic.machine == 0 || machine == 0;
        if !fits {
            return None;
        }
        let (dir, name) = normalize(path)
            .rsplit_once('/')
            .map(|(d, n)| (d.to_string(), n.to_string()))?;
        let dir = self.real_path(&dir)?;
        let path = format!("{}/{name}", dir.trim_end_matches('/'));
        Some((Found { path, real }, dynamic))
    }

    /// `path` with every symlink in it followed inside the root; `None` past `MAX_LINKS`.
    pub fn real_path(&self, path: &str) -> Option<String> {
        let mut pending: Vec<String> = path.split('/').rev().map(String::from).collect();
        let mut at: Vec<String> = Vec::new();
        let mut links = 0;
        while let Some(part) = pending.pop() {
            match part.as_str() {
                "" | "." => continue,
                ".." => {
                    at.pop();
                    continue;
                }
                _ => at.push(part),
            }
            let here = format!("/{}", at.join("/"));
            let Some(target) = self.root.read_link(&here) else {
                continue;
            };
            links += 1;
            if links > MAX_LINKS {
                return None;
            }
            at.pop();
            if target.starts_with('/') {
                at.clear();
            }
            pending.extend(target.split('/').rev().map(String::from));
        }
        Some(format!("/{}", at.join("/")))
    }
}

/// The RPATH directories `node` searches for its own `NEEDED` when it has no RUNPATH, and
/// passes on: its own, then those of the objects above it.
fn rpaths_of(node: &Node) -> Vec<String> {
    let own = match node.dynamic.rpath {
        true => node.dynamic.runpath.as_slice(),
        false => &[],
    };
    own.iter()
        .map(|d| expand_origin(d, Some(&node.path)))
        .chain(node.inherited.iter().cloned())
        .collect()
}

/// The directories ld.so searches last, for an object of `machine` (`e_machine`).
fn default_dirs(machine: u16) -> Vec<&'static str> {
    let multiarch: &[&str] = match machine {
        object::elf::EM_X86_64 => &["/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu"],
        object::elf::EM_AARCH64 => &["/lib/aarch64-linux-gnu", "/usr/lib/aarch64-linux-gnu"],
        _ => &[],
    };
    let lib64: &[&str] = match multiarch.is_empty() {
        true => &[],
        false => &["/lib64", "/usr/lib64"],
    };
    [multiarch, lib64, &["/lib", "/usr/lib"]].concat()
}

/// The directories `/etc/ld.so.conf` names in `files`, with its `include`s, in order, once each.
pub fn conf_dirs(files: &BTreeMap<String, String>) -> Vec<String> {
    let mut out = Vec::new();
    read_conf("/etc/ld.so.conf", files, 0, &mut out);
    out
}

fn read_conf(path: &str, files: &BTreeMap<String, String>, depth: usize, out: &mut Vec<String>) {
    let Some(text) = files.get(path).filter(|_| depth <= MAX_INCLUDES) else {
        return;
    };
    let here = Path::new(path).parent().unwrap_or(Path::new("/"));
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        let mut words = line.split_whitespace();
        match words.next() {
            Some("include") => {
                for pattern in words {
                    let pattern = normalize(&here.join(pattern).display().to_string());
                    for file in files.keys().filter(|f| glob_matches(&pattern, f)) {
                        read_conf(file, files, depth + 1, out);
                    }
                }
            }
            Some("hwcap") | None => {}
            Some(_) => {
                let dirs = line.split(|c: char| c.is_whitespace() || c == ':' || c == ',');
                for dir in dirs.filter(|d| d.starts_with('/')) {
                    // `dir=TYPE`, an old form, names the directory before the `=`.
                    let dir = normalize(dir.split('=').next().unwrap_or(dir));
                    if !out.contains(&dir) {
                        out.push(dir);
                    }
                }
            }
        }
    }
}

/// Whether `path` matches the glob `pattern` (`*` and `?` within one path component, as
/// `glob(3)` matches an `include` line).
fn glob_matches(pattern: &str, path: &str) -> bool {
    let (pattern, path): (Vec<&str>, Vec<&str>) =
        (pattern.split('/').collect(), path.split('/').collect());
    pattern.len() == path.len()
        && pattern.iter().zip(&path).all(|(p, s)| {
            let (p, s): (Vec<char>, Vec<char>) = (p.chars().collect(), s.chars().collect());
            component_matches(&p, &s) && !(s.first() == Some(&'.') && p.first() != Some(&'.'))
        })
}

/// Whether `name` matches `pattern` (`*` any run, `?` any one character), in time linear in
/// the product of their lengths whatever the pattern (an image's `ld.so.conf` is its own).
fn component_matches(pattern: &[char], name: &[char]) -> bool {
    // matches[j]: whether the pattern read so far matches `name[..j]`.
    let mut matches = vec![false; name.len() + 1];
    matches[0] = true;
    for &p in pattern {
        let mut next = vec![false; name.len() + 1];
        for j in 0..=name.len() {
            next[j] = match p {
                '*' => matches[j] || (j > 0 && next[j - 1]),
                _ => j > 0 && matches[j - 1] && (p == '?' || p == name[j - 1]),
            };
        }
        matches = next;
    }
    matches[name.len()]
}

/// `$ORIGIN` replaced by the directory the file is installed in, then `..` resolved.
pub fn expand_origin(dir: &str, installed: Option<&str>) -> String {
    if !dir.contains("$ORIGIN") && !dir.contains("${ORIGIN}") {
        return normalize(dir);
    }
    let Some(origin) = installed.and_then(|p| Path::new(p).parent()) else {
        return dir.to_string();
    };
    let origin = origin.display().to_string();
    normalize(
        &dir.replace("${ORIGIN}", &origin)
            .replace("$ORIGIN", &origin),
    )
}

/// `path` made absolute from `/`, with `.` and `..` resolved by name.
pub fn normalize(path: &str) -> String {
    let mut out = PathBuf::from("/");
    for c in Path::new(path).components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(n) => out.push(n),
            _ => {}
        }
    }
    out.display().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An x86-64 library needing `needed`, with `dirs` as its RUNPATH, or its RPATH when
    /// `rpath`.
    fn lib(needed: &[&str], dirs: &[&str], rpath: bool) -> Dynamic {
        Dynamic {
            needed: needed.iter().map(|n| n.to_string()).collect(),
            runpath: dirs.iter().map(|d| d.to_string()).collect(),
            rpath,
            machine: object::elf::EM_X86_64,
            ..Dynamic::default()
        }
    }

    fn root(files: &[(&str, Dynamic)], links: &[(&str, &str)]) -> MemRoot {
        MemRoot {
            files: files
                .iter()
                .map(|(p, d)| (p.to_string(), d.clone()))
                .collect(),
            links: links
                .iter()
                .map(|(p, t)| (p.to_string(), t.to_string()))
                .collect(),
            conf: BTreeMap::new(),
        }
    }

    /// (needed, path found or "-", depth) of each library `path` loads.
    fn loads(loader: &Loader<MemRoot>, path: &str) -> Vec<(String, String, usize)> {
        let dynamic = loader.root.files[path].clone();
        loader
            .loads(path, &dynamic)
            .into_iter()
            .map(|l| {
                let found = l.found.map_or("-".to_string(), |f| f.path);
                (l.needed, found, l.through.len())
            })
            .collect()
    }

    fn triple(needed: &str, found: &str, depth: usize) -> (String, String, usize) {
        (needed.to_string(), found.to_string(), depth)
    }

    #[test]
    fn symlinks_are_followed_inside_the_root() {
        let loader = Loader::new(root(
            &[],
            &[
                ("/lib", "usr/lib"),
                ("/usr/lib/x86_64-linux-gnu/libssl.so.3", "libssl.so.3.0.0"),
                (
                    "/usr/lib/x86_64-linux-gnu/libz.so.1",
                    "/usr/lib/z/../libz.so.1.3",
                ),
                ("/loop/a", "b"),
                ("/loop/b", "/loop/a"),
            ],
        ));
        let real = |p: &str| loader.real_path(p);
        assert_eq!(
            real("/lib/x86_64-linux-gnu/libssl.so.3").as_deref(),
            Some("/usr/lib/x86_64-linux-gnu/libssl.so.3.0.0")
        );
        // An absolute target starts again from the root's `/`, not the host's.
        assert_eq!(
            real("/lib/x86_64-linux-gnu/libz.so.1").as_deref(),
            Some("/usr/lib/libz.so.1.3")
        );
        assert_eq!(real("/loop/a"), None, "a symlink loop ends");
    }

    #[test]
    fn ld_so_conf_includes_are_followed_in_order() {
        let conf = [
            (
                "/etc/ld.so.conf",
                "include /etc/ld.so.conf.d/*.conf\n/opt/last # a comment\n",
            ),
            ("/etc/ld.so.conf.d/b.conf", "/usr/local/lib:/opt/b\n"),
            (
                "/etc/ld.so.conf.d/a.conf",
                "# pq\n/usr/pgsql/lib\ninclude more.d/*.conf\n",
            ),
            ("/etc/ld.so.conf.d/more.d/x.conf", "/opt/x\n"),
            ("/etc/ld.so.conf.d/c.conf.disabled", "/opt/never\n"),
            ("/etc/ld.so.conf.d/.hidden.conf", "/opt/hidden\n"),
        ]
        .map(|(p, t)| (p.to_string(), t.to_string()));
        let glob = |p: &str, s: &str| {
            component_matches(
                &p.chars().collect::<Vec<_>>(),
                &s.chars().collect::<Vec<_>>(),
            )
        };
        assert!(glob("*.conf", "x86_64-linux-gnu.conf") && glob("a?c*", "abc") && glob("*", ""));
        assert!(!glob("*.conf", "a.conf.disabled") && !glob("a?c", "ac"));
        // A pattern made to take exponential time by backtracking is answered at once.
        assert!(!glob(&"*a".repeat(40), &"a".repeat(39)));
        let dirs = conf_dirs(&BTreeMap::from(conf.clone()));
        assert_eq!(
            dirs,
            [
                "/usr/pgsql/lib",
                "/opt/x",
                "/usr/local/lib",
                "/opt/b",
                "/opt/last"
            ]
        );

        // The loader searches them before the default directories.
        let mut r = root(
            &[
                ("/app/ext.so", lib(&["libpq.so.5"], &[], false)),
                ("/usr/pgsql/lib/libpq.so.5", lib(&[], &[], false)),
                ("/usr/lib/libpq.so.5", lib(&[], &[], false)),
            ],
            &[],
        );
        r.conf = BTreeMap::from(conf);
        let loader = Loader::new(r);
        assert_eq!(
            loads(&loader, "/app/ext.so"),
            [triple("libpq.so.5", "/usr/pgsql/lib/libpq.so.5", 0)]
        );
    }

    #[test]
    fn runpath_serves_the_object_alone_and_rpath_is_inherited() {
        let files = |ext: Dynamic| {
            root(
                &[
                    ("/app/ext.so", ext),
                    ("/app/libs/libmid.so", lib(&["libdeep.so"], &[], false)),
                    ("/app/libs/libdeep.so", lib(&[], &[], false)),
                ],
                &[],
            )
        };
        let by_rpath = Loader::new(files(lib(&["libmid.so"], &["$ORIGIN/libs"], true)));
        assert_eq!(
            loads(&by_rpath, "/app/ext.so"),
            [
                triple("libmid.so", "/app/libs/libmid.so", 0),
                triple("libdeep.so", "/app/libs/libdeep.so", 1)
            ]
        );
        let by_runpath = Loader::new(files(lib(&["libmid.so"], &["$ORIGIN/libs"], false)));
        assert_eq!(
            loads(&by_runpath, "/app/ext.so"),
            [
                triple("libmid.so", "/app/libs/libmid.so", 0),
                triple("libdeep.so", "-", 1)
            ]
        );
    }

    #[test]
    fn a_library_of_another_machine_is_passed_over() {
        let mut arm = lib(&[], &[], false);
        arm.machine = object::elf::EM_AARCH64;
        let loader = Loader::new(root(
            &[
                ("/app/ext.so", lib(&["libz.so.1"], &["/opt/arm"], false)),
                ("/opt/arm/libz.so.1", arm),
                ("/usr/lib/x86_64-linux-gnu/libz.so.1", lib(&[], &[], false)),
            ],
            &[],
        ));
        assert_eq!(
            loads(&loader, "/app/ext.so"),
            [triple(
                "libz.so.1",
                "/usr/lib/x86_64-linux-gnu/libz.so.1",
                0
            )]
        );
    }

    #[test]
    fn a_cycle_of_libraries_ends() {
        let loader = Loader::new(root(
            &[
                ("/app/ext.so", lib(&["liba.so"], &["/app"], false)),
                (
                    "/app/liba.so",
                    lib(&["libb.so", "liba.so"], &["$ORIGIN"], false),
                ),
                (
                    "/app/libb.so",
                    lib(&["liba.so", "libc.so"], &["$ORIGIN"], false),
                ),
                (
                    "/app/libc.so",
                    lib(&["libb.so", "ext.so"], &["$ORIGIN"], false),
                ),
            ],
            &[("/app/ext.so.link", "ext.so")],
        ));
        assert_eq!(
            loads(&loader, "/app/ext.so"),
            [
                triple("liba.so", "/app/liba.so", 0),
                triple("libb.so", "/app/libb.so", 1),
                triple("libc.so", "/app/libc.so", 2),
                triple("ext.so", "/app/ext.so", 3),
            ]
        );
    }
}
