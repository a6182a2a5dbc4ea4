//! `audit`: finds ELF objects that carry their own crypto in a tree, a venv, a wheel or an image.
//!
//! A FIPS interpreter is only as FIPS as the extension modules it loads: a wheel that links
//! OpenSSL, BoringSSL or LibreSSL statically, bundles a renamed libcrypto, or resolves
//! `libcrypto.so` outside the tree runs cryptography the tree's provider never sees. Each ELF
//! file is classified from its own bytes: defined `EVP_`/`SSL_` symbols, version strings, and
//! its `NEEDED` crypto libraries with the `RUNPATH` that resolves them, read from `PT_DYNAMIC`
//! as the loader reads them.
//!
//! A system library can bring a second libcrypto too (psycopg2 built from source links the
//! distribution's `libpq.so.5`, which links the system's `libssl.so.3`), so each file's `NEEDED`
//! libraries are also resolved transitively, as ld.so would in the root the file runs in
//! (`audit/loader.rs`: RUNPATH, else RPATH inherited down the chain, `$ORIGIN`, `ld.so.conf` and
//! its `include`s, the machine's default directories, symlinks followed inside the root). A
//! libcrypto or libssl reached through another library that is not the tree's is a finding
//! naming the chain ("loads /usr/lib/x86_64-linux-gnu/libssl.so.3 through libpq.so.5
//! (/usr/lib/x86_64-linux-gnu/libpq.so.5)"), and so is one the loader finds nowhere. The root
//! of an image is what its one tar walk recorded (every ELF file's dynamic section, every
//! symlink, `/etc/ld.so.conf` and `/etc/ld.so.conf.d/*`), resolved in memory after the walk; the
//! root of a directory or a file is this machine's `/`, with the directory's own files where
//! they install (a tree at `/opt/python-fips`); a wheel's members have no root and are judged
//! by their own `NEEDED` alone.
//!
//! Nothing is called clean that was not read: an ELF file whose dynamic array or symbol tables
//! cannot be read, or that is larger than `Limits::file`, is a finding ("cannot be audited").
//! Only regular files are read, a wheel member only once its first bytes are `\x7fELF`, and a
//! wheel's ELF members up to `Limits::wheel` in all, so memory stays bounded by one file's cap.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use object::{Object, ObjectSymbol};
use serde::Serialize;
use xshell::Shell;

use crate::cache::Cache;
use crate::elf;
use crate::engine::{ContainerSpec, Engine};
use crate::flags;
use crate::host::Host;
use crate::pipeline::PREFIX;
use crate::tarwalk;

mod loader;
mod zip;

use loader::{HostRoot, Loader, MemRoot, Root, expand_origin};

/// Functions every OpenSSL-compatible library (OpenSSL, LibreSSL, BoringSSL) defines. A file
/// that defines some of them, with any binding (a static link keeps them as local symbols), has
/// such a library inside; one that only calls them has them undefined.
const CORE_FUNCTIONS: [&str; 10] = [
    "EVP_DigestInit_ex",
    "EVP_DigestUpdate",
    "EVP_EncryptInit_ex",
    "EVP_CIPHER_CTX_new",
    "EVP_MD_CTX_new",
    "RAND_bytes",
    "ERR_get_error",
    "X509_verify_cert",
    "SSL_CTX_new",
    "SSL_new",
];
/// How many of them make a file a crypto library rather than a wrapper defining a helper.
const CORE_FUNCTIONS_MIN: usize = 3;

/// One thing found in one file.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Finding {
    /// The Python package the file belongs to (its directory in site-packages, or its wheel).
    pub package: String,
    pub file: String,
    pub what: String,
    pub why: String,
}

/// What `audit` saw in one target.
#[derive(Debug, Default, Serialize)]
pub struct Report {
    pub target: String,
    /// ELF files read.
    pub elf_files: usize,
    pub findings: Vec<Finding>,
}

impl flags::Audit {
    pub fn run(self, sh: &Shell) -> Result<()> {
        let path = Path::new(&self.target);
        let report = if path.exists() {
            audit_path(path)?
        } else {
            let engine = Engine::detect(sh, self.host.engine.as_deref())?;
            if engine.image_id(sh, &self.target)?.is_none() {
                bail!(
                    "{} is neither a file, a directory nor an image known to {}; \
                     pass a tree, a venv, a .whl file, an ELF file or an image name",
                    self.target,
                    engine
                );
            }
            let cache = Cache::open(self.host.cache.as_deref())?;
            audit_image(sh, &engine, &cache, &self.target)?
        };
        match self.json.as_deref() {
            Some(p) if p == Path::new("-") => {
                crate::progress::print_answer(serde_json::to_string_pretty(&report)?)
            }
            Some(p) => {
                crate::progress::print_answer(render(&report).trim_end());
                crate::cache::write_atomic(p, &serde_json::to_vec_pretty(&report)?)?;
            }
            None => crate::progress::print_answer(render(&report).trim_end()),
        }
        report.ensure_clean()
    }
}

impl Report {
    /// An error naming how many files carry their own crypto, if any does.
    pub fn ensure_clean(&self) -> Result<()> {
        if self.findings.is_empty() {
            return Ok(());
        }
        let unreadable = self
            .findings
            .iter()
            .filter(|f| f.what.starts_with(CANNOT_BE_AUDITED))
            .count();
        let damaged = match unreadable {
            0 => String::new(),
            n => format!(
                "; {n} of them are files audit cannot read (damaged, or larger than it reads): \
                 replace them with intact copies"
            ),
        };
        bail!(
            "audit of {} found {} finding(s); an application on this tree would run crypto outside \
             its FIPS provider: rebuild those packages against the tree with `cargo xtask wheels`\
             {damaged}",
            self.target,
            self.findings.len()
        )
    }
}

/// The largest `ld.so.conf` file an image walk records.
const LD_SO_CONF_MAX: u64 = 1 << 20;

/// How much `audit` reads of what it is given.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// The largest ELF file read (a wheel member once inflated, an image's file).
    pub file: u64,
    /// The most a wheel's ELF members may inflate to, all together.
    pub wheel: u64,
}

pub const LIMITS: Limits = Limits {
    file: 512 << 20,
    wheel: 2 << 30,
};
// A member of 1 GiB, the size that once took 1 GiB of memory, is past the cap.
const _: () = assert!(LIMITS.file < 1 << 30);

/// Audits a file (a wheel or an ELF file) or a directory (a tree, a venv, a root file system).
pub fn audit_path(path: &Path) -> Result<Report> {
    audit_path_within(path, LIMITS)
}

fn audit_path_within(path: &Path, limits: Limits) -> Result<Report> {
    let mut scanner = Scanner::new(&path.display().to_string(), limits);
    if path.is_dir() {
        scanner.scan_dir(path)?;
    } else {
        let host = HostRoot::new(Path::new("/"), Path::new("/"), limits.file);
        scanner.system = Some(Loader::new(host));
        let installed = std::path::absolute(path)?.display().to_string();
        if !scanner.scan_regular(path, &installed)? {
            bail!(
                "{} is neither a wheel (.whl) nor an ELF file; pass it, or the directory holding it",
                path.display()
            );
        }
    }
    Ok(scanner.report)
}

/// Audits the Python environments of an image: the tree and every `site-packages` or
/// `dist-packages` directory, read from a stopped container of it as one tar stream, which also
/// gives the rest of its file system for the libraries they load.
pub fn audit_image(sh: &Shell, engine: &Engine, cache: &Cache, image: &str) -> Result<Report> {
    let spec = ContainerSpec {
        command: vec!["true".into()],
        ..Host::new(sh, engine, cache).spec("audit", image)
    };
    let container = engine.container(sh, &spec)?;
    let result = (|| -> Result<Report> {
        let mut scanner = Scanner::new(image, LIMITS);
        // A failed copy is the error even when the scan of its truncated stream failed too.
        container.read_out("/", |stream| scanner.scan_tar(stream))?;
        Ok(scanner.report)
    })();
    drop(container);
    result.with_context(|| format!("cannot audit the image {image}"))
}

/// One audit under way: what it may read and what it found.
struct Scanner {
    limits: Limits,
    report: Report,
    /// The host's file system, where the ELF files of a directory or a file find the libraries
    /// they load; an image's is recorded in its walk instead.
    system: Option<Loader<HostRoot>>,
}

/// An image's file system as one walk records it, and its ELF files audited.
#[derive(Default)]
struct ImageWalk {
    root: MemRoot,
    audited: Vec<Audited>,
}

/// `path` of an image's tar stream as the image's own absolute path: `docker cp container:/ -`
/// names entries `./opt/…` or `/opt/…` depending on the engine.
fn rooted(path: &str) -> String {
    loader::normalize(path.trim_start_matches("./"))
}

impl ImageWalk {
    /// Records `entry`, at `installed`, if it is a symlink or a hard link (to a file recorded
    /// before it); says whether it is a regular file instead, which the caller reads.
    fn record_link<R: Read>(&mut self, installed: &str, entry: &tar::Entry<'_, R>) -> Result<bool> {
        let kind = entry.header().entry_type();
        let target = entry.link_name()?.map(|t| t.to_string_lossy().into_owned());
        match target {
            Some(target) if kind.is_symlink() => {
                self.root.links.insert(installed.to_string(), target);
            }
            Some(target) if kind.is_hard_link() => {
                if let Some(dynamic) = self.root.files.get(&rooted(&target)).cloned() {
                    self.root.files.insert(installed.to_string(), dynamic);
                }
            }
            _ => return Ok(kind.is_file()),
        }
        Ok(false)
    }
}

/// An ELF file of an image audited, whose loaded libraries are judged after the walk.
struct Audited {
    installed: String,
    package: String,
    dynamic: elf::Dynamic,
    /// Where its findings end in the report, for those about what it loads.
    at: usize,
}

impl Scanner {
    fn new(target: &str, limits: Limits) -> Scanner {
        Scanner {
            limits,
            report: Report {
                target: target.to_string(),
                ..Report::default()
            },
            system: None,
        }
    }

    /// Scans the Python environments in a tar of a root file system, recording in the same
    /// walk what the loader needs of every other file, then judges what each ELF file loads.
    fn scan_tar(&mut self, reader: impl Read) -> Result<()> {
        let mut walk = ImageWalk::default();
        tarwalk::walk(reader, "the image's file system", |path, entry| {
            self.scan_tar_entry(&mut walk, path, entry)?;
            Ok(None::<()>)
        })?;
        let loader = Loader::new(walk.root);
        // From the last file back, so the places of the earlier ones stay where they were.
        for file in walk.audited.iter().rev() {
            let found = loaded_through(&loader, &file.installed, &file.dynamic)
                .into_iter()
                .map(|(what, why)| Finding {
                    package: file.package.clone(),
                    file: file.installed.clone(),
                    what,
                    why,
                });
            self.report.findings.splice(file.at..file.at, found);
        }
        Ok(())
    }

    /// Records one entry of an image's file system in `walk`, and audits it if it is a file of
    /// a Python environment.
    fn scan_tar_entry<R: Read>(
        &mut self,
        walk: &mut ImageWalk,
        path: &str,
        entry: &mut tar::Entry<'_, R>,
    ) -> Result<()> {
        let installed = rooted(path);
        if !walk.record_link(&installed, entry)? {
            return Ok(());
        }
        let size = entry.header().size()?;
        if loader::is_ld_so_conf(&installed) {
            let mut text = String::new();
            entry.take(LD_SO_CONF_MAX).read_to_string(&mut text)?;
            walk.root.conf.insert(installed, text);
            return Ok(());
        }
        let candidate = read_candidate(&mut *entry, size, self.limits.file)?;
        let dynamic = match &candidate {
            Candidate::Elf(data) => elf::parse(data).ok().flatten(),
            _ => None,
        };
        if let Some(dynamic) = &dynamic {
            walk.root.files.insert(installed.clone(), dynamic.clone());
        }
        let python_env = installed.starts_with(&format!("{PREFIX}/"))
            || installed.contains("/site-packages/")
            || installed.contains("/dist-packages/");
        if !python_env {
            return Ok(());
        }
        let package = package_of(&installed);
        self.scan_candidate(&installed, Some(&installed), &package, candidate);
        if let Some(dynamic) = dynamic {
            let at = self.report.findings.len();
            walk.audited.push(Audited {
                installed,
                package,
                dynamic,
                at,
            });
        }
        Ok(())
    }

    fn scan_dir(&mut self, dir: &Path) -> Result<()> {
        let installed_root = installed_root(dir)?;
        let host = HostRoot::new(
            &installed_root,
            &std::path::absolute(dir)?,
            self.limits.file,
        );
        self.system = Some(Loader::new(host));
        let mut stack = vec![dir.to_path_buf()];
        while let Some(at) = stack.pop() {
            let list = || format!("cannot list {}", at.display());
            let mut entries: Vec<_> = std::fs::read_dir(&at)
                .with_context(list)?
                .collect::<std::io::Result<_>>()
                .with_context(list)?;
            entries.sort_by_key(|e| e.file_name());
            for entry in entries {
                let path = entry.path();
                let kind = entry
                    .file_type()
                    .with_context(|| format!("cannot read the type of {}", path.display()))?;
                if kind.is_dir() {
                    stack.push(path);
                    continue;
                }
                if !kind.is_file() {
                    continue;
                }
                let rel = path.strip_prefix(dir).expect("walked below dir");
                let installed = installed_root.join(rel).display().to_string();
                self.scan_regular(&path, &installed)?;
            }
        }
        Ok(())
    }

    /// Scans the regular file at `path`, installed at `installed`, if it is a wheel or an ELF
    /// file (and says whether it was).
    fn scan_regular(&mut self, path: &Path, installed: &str) -> Result<bool> {
        let (file, len) = open_regular(path)?;
        let shown = path.display().to_string();
        if is_wheel(&shown) {
            self.scan_wheel(&shown, file)?;
            return Ok(true);
        }
        let candidate = read_candidate(file, len, self.limits.file)
            .with_context(|| format!("cannot read {shown}"))?;
        let elf = !matches!(candidate, Candidate::NotElf);
        self.scan_candidate(&shown, Some(installed), &package_of(installed), candidate);
        Ok(elf)
    }

    /// The ELF members of a wheel, read one at a time; where they will be installed is unknown,
    /// so `$ORIGIN` is too.
    fn scan_wheel(&mut self, shown: &str, file: File) -> Result<()> {
        let file_name = shown.rsplit('/').next().unwrap_or(shown);
        let package = file_name.split('-').next().unwrap_or(file_name).to_string();
        let context = || format!("cannot read {shown}");
        let mut file = BufReader::new(file);
        let mut left = self.limits.wheel;
        for entry in zip::entries(&mut file).with_context(context)? {
            if entry.is_dir() {
                continue;
            }
            let candidate = entry
                .read_elf(&mut file, self.limits.file)
                .with_context(context)?;
            let inflated = match &candidate {
                Candidate::Elf(data) => data.len() as u64,
                Candidate::TooLarge(read) => *read,
                Candidate::NotElf => 0,
            };
            left = left.checked_sub(inflated).with_context(|| {
                format!(
                    "{}: its ELF members inflate to more than {} in all, the most audit reads of \
                     one wheel",
                    context(),
                    size_text(self.limits.wheel)
                )
            })?;
            let member = format!("{shown}:{}", entry.name);
            self.scan_candidate(&member, None, &package, candidate);
        }
        Ok(())
    }

    /// Adds a file read as `candidate` to the report, if it is an ELF file.
    fn scan_candidate(
        &mut self,
        shown: &str,
        installed: Option<&str>,
        package: &str,
        candidate: Candidate,
    ) {
        match candidate {
            Candidate::NotElf => {}
            Candidate::Elf(data) => self.scan_file(shown, installed, package, &data),
            Candidate::TooLarge(_) => {
                self.report.elf_files += 1;
                self.report.findings.push(Finding {
                    package: package.to_string(),
                    file: shown.to_string(),
                    what: format!(
                        "{CANNOT_BE_AUDITED}it is more than {}, the most audit reads of one ELF file",
                        size_text(self.limits.file)
                    ),
                    why: WHY_UNREADABLE.to_string(),
                });
            }
        }
    }

    /// Adds what one ELF file carries to the report.
    fn scan_file(&mut self, shown: &str, installed: Option<&str>, package: &str, data: &[u8]) {
        self.report.elf_files += 1;
        let mut found = classify(data, installed);
        if let (Some(system), Some(installed)) = (&self.system, installed)
            && let Ok(Some(dynamic)) = elf::parse(data)
        {
            found.extend(loaded_through(system, installed, &dynamic));
        }
        for (what, why) in found {
            self.report.findings.push(Finding {
                package: package.to_string(),
                file: shown.to_string(),
                what,
                why,
            });
        }
    }
}

/// What audit reads of a file that may be an ELF file.
#[derive(Debug)]
enum Candidate {
    /// It does not start with `\x7fELF`; nothing past those bytes was read.
    NotElf,
    Elf(Vec<u8>),
    /// An ELF file larger than the cap, left after reading this many bytes of it.
    TooLarge(u64),
}

/// Reads `reader` (`declared` bytes long, as its file system or archive says) if it starts with
/// `\x7fELF`, and never more than `cap` bytes: one declared larger is left at its first bytes,
/// one that turns out larger at the cap.
fn read_candidate(reader: impl Read, declared: u64, cap: u64) -> std::io::Result<Candidate> {
    let mut reader = reader.take(cap.saturating_add(1));
    let mut magic = [0u8; 4];
    match reader.read_exact(&mut magic) {
        Ok(()) if &magic == b"\x7fELF" => {}
        Ok(()) => return Ok(Candidate::NotElf),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(Candidate::NotElf),
        Err(e) => return Err(e),
    }
    if declared > cap {
        return Ok(Candidate::TooLarge(magic.len() as u64));
    }
    let mut data = Vec::with_capacity(declared.min(64 << 20) as usize);
    data.extend_from_slice(&magic);
    reader.read_to_end(&mut data)?;
    match data.len() as u64 > cap {
        true => Ok(Candidate::TooLarge(data.len() as u64)),
        false => Ok(Candidate::Elf(data)),
    }
}

/// Opens `path` for reading if it is a regular file; a FIFO (whose opening waits for a writer)
/// or a device (which never ends) is refused before it is opened. Also gives the file's length.
fn open_regular(path: &Path) -> Result<(File, u64)> {
    let cannot = || format!("cannot read {}", path.display());
    let ensure_regular = |kind: std::fs::FileType| -> Result<()> {
        use std::os::unix::fs::FileTypeExt;
        let what = match kind {
            k if k.is_file() => return Ok(()),
            k if k.is_fifo() => "a FIFO",
            k if k.is_socket() => "a socket",
            k if k.is_char_device() || k.is_block_device() => "a device",
            _ => "not a file",
        };
        bail!(
            "{} is not a regular file (it is {what}); pass a tree, a venv, a .whl file or an ELF file",
            path.display()
        )
    };
    ensure_regular(std::fs::metadata(path).with_context(cannot)?.file_type())?;
    let file = File::open(path).with_context(cannot)?;
    // The path may have been replaced since: check what was opened.
    let meta = file.metadata().with_context(cannot)?;
    ensure_regular(meta.file_type())?;
    Ok((file, meta.len()))
}

/// `512 MiB`, `2 GiB`.
fn size_text(bytes: u64) -> String {
    match bytes {
        b if b >= 1 << 30 && b % (1 << 30) == 0 => format!("{} GiB", b >> 30),
        b if b >= 1 << 20 => format!("{} MiB", b >> 20),
        b => format!("{b} bytes"),
    }
}

/// Where the files of a directory land when installed: a tree is the prefix itself, a root file
/// system holds it at `opt/python-fips`, anything else (a venv) is where it is.
fn installed_root(dir: &Path) -> Result<PathBuf> {
    if dir.join("bin/python-fips-setup").is_file() {
        Ok(PathBuf::from(PREFIX))
    } else if dir.join(&PREFIX[1..]).is_dir() {
        Ok(PathBuf::from("/"))
    } else {
        Ok(std::path::absolute(dir)?)
    }
}

fn is_wheel(name: &str) -> bool {
    name.ends_with(".whl")
}

/// The Python package a file installed at `installed` belongs to.
fn package_of(installed: &str) -> String {
    for marker in ["/site-packages/", "/dist-packages/"] {
        if let Some((_, rest)) = installed.rsplit_once(marker) {
            let top = rest.split('/').next().unwrap_or(rest);
            let top = top.strip_suffix(".libs").unwrap_or(top);
            // A top-level extension module `_cffi_backend.cpython-313-….so` is its own package.
            return top.split('.').next().unwrap_or(top).to_string();
        }
    }
    if installed.starts_with(&format!("{PREFIX}/")) {
        return "python-fips".into();
    }
    "-".into()
}

const WHY_STATIC: &str = "its crypto runs outside the tree's FIPS provider, and one fips.so \
                          cannot serve a second libcrypto in the same process";
const WHY_BUNDLED: &str = "the package ships its own libcrypto/libssl beside it, so the tree's \
                           FIPS configuration never applies to it";
const WHY_THROUGH: &str = "a library it loads brings a second libcrypto/libssl into the process, \
                           which the tree's FIPS configuration never applies to";
const WHY_OUTSIDE: &str = "the loader may pick a system libcrypto before the tree's, which does \
                           not load the tree's FIPS provider";

/// How the finding for a file audit cannot read begins.
const CANNOT_BE_AUDITED: &str = "cannot be audited: ";
const WHY_UNREADABLE: &str = "audit reads what the loader and the linker read; a file it cannot \
                              read may load or carry any crypto, so it is not called clean";

/// What in `data` (an ELF file installed at `installed`, if known) carries or loads crypto
/// other than the tree's, as (what, why) pairs. The tree's own OpenSSL is not a finding; a file
/// whose dynamic array or symbol tables cannot be read is one.
pub fn classify(data: &[u8], installed: Option<&str>) -> Vec<(String, String)> {
    if installed.is_some_and(is_tree_openssl) {
        return vec![];
    }
    let mut unreadable = Vec::new();
    let dynamic = elf::parse(data).unwrap_or_else(|e| {
        unreadable.push(format!("{e:#}"));
        None
    });
    let symbols = core_functions(data).unwrap_or_else(|e| {
        unreadable.push(e);
        vec![]
    });
    let mut out = Vec::new();
    if !unreadable.is_empty() {
        unreadable.dedup();
        let what = format!("{CANNOT_BE_AUDITED}{}", unreadable.join("; "));
        out.push((what, WHY_UNREADABLE.to_string()));
    }
    let dynamic = dynamic.unwrap_or_default();
    let links_crypto = dynamic.needed.iter().any(|n| crypto_soname(n).is_some());
    // A file that links libcrypto dynamically may hold the version text of the headers it was
    // compiled against (cryptography exports OPENSSL_VERSION_TEXT): then only the library it
    // loads counts, and that is judged by its NEEDED entries below.
    let versions = match links_crypto {
        true => vec![],
        false => crypto_versions(data),
    };
    out.extend(linked_in(&versions, &symbols));
    for needed in &dynamic.needed {
        out.extend(loaded_crypto(needed, &dynamic.runpath, installed));
    }
    out
}

/// The finding for a crypto library linked into the file, seen by its version texts or the core
/// functions it defines.
fn linked_in(versions: &[String], symbols: &[String]) -> Option<(String, String)> {
    if versions.is_empty() && symbols.len() < CORE_FUNCTIONS_MIN {
        return None;
    }
    let mut what = match versions.is_empty() {
        true => "an OpenSSL-compatible library linked in".to_string(),
        false => format!("{} linked in", versions.join(", ")),
    };
    if !symbols.is_empty() {
        let examples: Vec<&str> = symbols.iter().take(3).map(String::as_str).collect();
        what.push_str(&format!(
            " (defines {} of {} core OpenSSL functions: {}...)",
            symbols.len(),
            CORE_FUNCTIONS.len(),
            examples.join(", ")
        ));
    } else {
        what.push_str(" (version string; no symbol table)");
    }
    Some((what, WHY_STATIC.to_string()))
}

/// The finding for one `NEEDED` library, if it is a crypto library that may not be the tree's.
fn loaded_crypto(
    needed: &str,
    runpath: &[String],
    installed: Option<&str>,
) -> Option<(String, String)> {
    if !crypto_soname(needed)? {
        return Some((
            format!("NEEDED {needed}: a renamed copy of OpenSSL bundled with the package"),
            WHY_BUNDLED.to_string(),
        ));
    }
    let dirs: Vec<String> = runpath
        .iter()
        .map(|d| expand_origin(d, installed))
        .collect();
    let tree_lib = format!("{PREFIX}/lib");
    let what = match dirs.iter().position(|d| *d == tree_lib) {
        Some(0) => return None,
        Some(_) => format!(
            "NEEDED {needed}: RUNPATH {} searches {} before the tree",
            dirs.join(":"),
            dirs[0]
        ),
        None if dirs.is_empty() => {
            format!("NEEDED {needed} without RUNPATH: resolved by the system's search path")
        }
        None => format!(
            "NEEDED {needed}: RUNPATH {} does not lead into {tree_lib}",
            dirs.join(":")
        ),
    };
    Some((what, WHY_OUTSIDE.to_string()))
}

/// The findings for the libcrypto and libssl that `installed` (with `dynamic`) loads through
/// another library, found as the loader of `loader`'s root finds them, unless they are the
/// tree's. Its own `NEEDED` crypto libraries are judged by `loaded_crypto`, and what a crypto
/// library loads in turn is part of that finding, not another.
fn loaded_through<R: Root>(
    loader: &Loader<R>,
    installed: &str,
    dynamic: &elf::Dynamic,
) -> Vec<(String, String)> {
    if is_tree_openssl(installed) {
        return vec![];
    }
    let mut out = Vec::new();
    for lib in loader.loads(installed, dynamic) {
        let by_crypto = lib.through.iter().any(|(n, _)| crypto_soname(n).is_some());
        if lib.through.is_empty() || by_crypto || crypto_soname(&lib.needed).is_none() {
            continue;
        }
        let chain: Vec<String> = lib
            .through
            .iter()
            .map(|(needed, path)| format!("{needed} ({path})"))
            .collect();
        let chain = chain.join(" -> ");
        let what = match &lib.found {
            Some(found) if is_tree_openssl(&found.real) => continue,
            Some(found) => format!("loads {} through {chain}", found.path),
            None => format!(
                "needs {} through {chain}, which the loader finds in none of the directories it \
                 searches",
                lib.needed
            ),
        };
        out.push((what, WHY_THROUGH.to_string()));
    }
    out
}

/// Whether `installed` is one of the tree's own OpenSSL files, the crypto everything should use.
fn is_tree_openssl(installed: &str) -> bool {
    let Some(rel) = installed.strip_prefix(&format!("{PREFIX}/")) else {
        return false;
    };
    let lib = |name: &str| {
        rel.strip_prefix("lib/")
            .is_some_and(|f| !f.contains('/') && f.starts_with(name))
    };
    lib("libcrypto.so")
        || lib("libssl.so")
        || rel.starts_with("lib/ossl-modules/")
        || rel.starts_with("lib/engines-")
        || rel == "bin/openssl"
        // The provider release's own openssl, statically linked on purpose: it runs only
        // `fipsinstall` for python-fips-setup, in a process of its own, never inside Python.
        || rel == "libexec/openssl-fipsinstall"
}

/// `Some(true)` for `libcrypto.so.3`/`libssl.so.3`, `Some(false)` for a renamed copy such as
/// `libcrypto-9f3a2b1c.so.3`, `None` for anything else.
fn crypto_soname(needed: &str) -> Option<bool> {
    let rest = needed
        .strip_prefix("libcrypto")
        .or_else(|| needed.strip_prefix("libssl"))?;
    if let Some(version) = rest.strip_prefix(".so") {
        return Some(
            version
                .split('.')
                .all(|p| p.chars().all(|c| c.is_ascii_digit())),
        );
    }
    (rest.starts_with('-') || rest.starts_with('_')).then_some(false)
}

/// Crypto library version strings in `data`: `OpenSSL 3.5.7` from `OpenSSL 3.5.7 1 Jul 2025`
/// (the library's `OPENSSL_VERSION_TEXT`), `LibreSSL 3.8.2`, `BoringSSL`.
pub fn crypto_versions(data: &[u8]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut add = |v: String| {
        if !out.contains(&v) {
            out.push(v);
        }
    };
    for (name, dated) in [("OpenSSL ", true), ("LibreSSL ", false)] {
        for at in find_all(data, name.as_bytes()) {
            let rest = &data[at + name.len()..];
            if let Some(version) = version_text(rest, dated) {
                add(format!("{name}{version}"));
            }
        }
    }
    if !find_all(data, b"BoringSSL").is_empty() {
        add("BoringSSL".into());
    }
    out
}

/// `3.5.7` (with a letter suffix like `1.1.1w`) at the start of `rest`; when `dated`, only if a
/// release date follows (`  1 Jul 2025`), which is what the library's own version text holds.
fn version_text(rest: &[u8], dated: bool) -> Option<String> {
    let text: String = rest
        .iter()
        .take(40)
        .take_while(|b| b.is_ascii_graphic() || **b == b' ')
        .map(|&b| b as char)
        .collect();
    let mut words = text.split(' ').filter(|w| !w.is_empty());
    let version = words.next()?;
    let numeric = version.trim_end_matches(|c: char| c.is_ascii_lowercase());
    let parts: Vec<&str> = numeric.split('.').collect();
    if parts.len() != 3
        || parts
            .iter()
            .any(|p| p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()))
    {
        return None;
    }
    if dated {
        let day = words.next()?;
        let month = words.next()?;
        let year = words.next()?;
        let ok = day.len() <= 2
            && day.bytes().all(|b| b.is_ascii_digit())
            && month.len() == 3
            && month.bytes().all(|b| b.is_ascii_alphabetic())
            && year.len() == 4
            && year.bytes().all(|b| b.is_ascii_digit());
        if !ok {
            return None;
        }
    }
    Some(version.to_string())
}

fn find_all(haystack: &[u8], needle: &[u8]) -> Vec<usize> {
    haystack
        .windows(needle.len())
        .enumerate()
        .filter(|(_, w)| *w == needle)
        .map(|(i, _)| i)
        .collect()
}

/// Which of `CORE_FUNCTIONS` `data` defines, in its dynamic or its static symbol table; an error
/// (the reason) when its section headers, which lead to those tables, are missing or damaged.
pub fn core_functions(data: &[u8]) -> std::result::Result<Vec<String>, String> {
    let file = object::File::parse(data).map_err(|e| format!("damaged section headers: {e}"))?;
    if file.sections().next().is_none() {
        return Err("it has no section headers, so its symbol tables cannot be read".into());
    }
    let mut out = Vec::new();
    for symbol in file.dynamic_symbols().chain(file.symbols()) {
        if symbol.is_undefined() || !symbol.is_definition() {
            continue;
        }
        let name = symbol
            .name_bytes()
            .map_err(|e| format!("damaged symbol table: {e}"))?;
        if let Some(f) = CORE_FUNCTIONS.iter().find(|f| f.as_bytes() == name) {
            out.push(f.to_string());
        }
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// The findings as a table, then a one-line summary; a clean target is just the summary.
pub fn render(report: &Report) -> String {
    if report.findings.is_empty() {
        return format!(
            "clean: none of the {} ELF files in {} carries its own crypto or loads a libcrypto \
             outside the tree\n",
            report.elf_files, report.target
        );
    }
    let mut out = String::new();
    for f in &report.findings {
        out.push_str(&format!(
            "{}  {}\n    found: {}\n    why:   {}\n",
            f.package, f.file, f.what, f.why
        ));
    }
    let mut files: Vec<&str> = report.findings.iter().map(|f| f.file.as_str()).collect();
    files.dedup();
    out.push_str(&format!(
        "{} finding(s) in {} of the {} ELF files in {}\n",
        report.findings.len(),
        files.len(),
        report.elf_files,
        report.target
    ));
    out
}

#[cfg(test)]
mod tests;
