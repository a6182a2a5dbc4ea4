//! Tests of the patch engine on small trees: clean, failing, already applied, all-or-nothing.

use std::path::{Path, PathBuf};

use super::{Outcome, apply_all, check_parses};
use crate::testutil::TempDir;

fn numbered(prefix: &str, n: usize) -> String {
    (1..=n).map(|i| format!("{prefix}{i}\n")).collect()
}

/// A tree with `Lib/ssl.py` (`line1`..`line12`) and `Modules/hash.c` (`c1`..`c6`).
fn tree() -> TempDir {
    let tmp = TempDir::new("patch");
    let root = tmp.path().join("src");
    std::fs::create_dir_all(root.join("Lib")).unwrap();
    std::fs::create_dir_all(root.join("Modules")).unwrap();
    std::fs::write(root.join("Lib/ssl.py"), numbered("line", 12)).unwrap();
    std::fs::write(root.join("Modules/hash.c"), numbered("c", 6)).unwrap();
    tmp
}

fn write_patch(tmp: &TempDir, name: &str, text: &str) -> PathBuf {
    let path = tmp.path().join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn read(tmp: &TempDir, rel: &str) -> String {
    std::fs::read_to_string(tmp.path().join("src").join(rel)).unwrap()
}

const SSL_LINE3: &str = "\
diff --git a/Lib/ssl.py b/Lib/ssl.py
index 1111111..2222222 100644
--- a/Lib/ssl.py
+++ b/Lib/ssl.py
@@ -2,3 +2,3 @@
 line2
-line3
+LINE3
 line4
";

const HASH_C2: &str = "\
diff --git a/Modules/hash.c b/Modules/hash.c
--- a/Modules/hash.c
+++ b/Modules/hash.c
@@ -1,3 +1,3 @@
 c1
-c2
+FIPS c2
 c3
";

/// Patch `b/c`: same hunk, but its context says `c3 changed`, which the tree does not have.
const HASH_C2_STALE: &str = "\
diff --git a/Modules/hash.c b/Modules/hash.c
--- a/Modules/hash.c
+++ b/Modules/hash.c
@@ -1,3 +1,3 @@
 c1
-c2
+FIPS c2
 c3 changed
";

#[test]
fn applies_a_clean_patch_with_a_header_comment() {
    let tmp = tree();
    let git = write_patch(
        &tmp,
        "0001-git.patch",
        &format!("Make ssl refuse non-FIPS ciphers.\n\nUpstream: not yet.\n\n{SSL_LINE3}{HASH_C2}"),
    );
    // A plain `diff -u` patch whose header has a line that looks like a file header.
    let plain = write_patch(
        &tmp,
        "0002-plain.patch",
        "Second patch.\n--- a note, not a file header\n\n\
         --- Python-3.99.0.orig/Lib/ssl.py\t2024-01-01 00:00:00\n\
         +++ Python-3.99.0/Lib/ssl.py\t2024-01-01 00:00:00\n\
         @@ -10,3 +10,4 @@\n line10\n line11\n line12\n+line13\n",
    );
    let outcomes = apply_all(&tmp.path().join("src"), &[git.clone(), plain.clone()]).unwrap();
    assert_eq!(outcomes, vec![Outcome::Applied, Outcome::Applied]);
    let ssl = read(&tmp, "Lib/ssl.py");
    assert!(ssl.starts_with("line1\nline2\nLINE3\nline4\n"), "{ssl}");
    assert!(ssl.ends_with("line12\nline13\n"), "{ssl}");
    assert_eq!(
        read(&tmp, "Modules/hash.c"),
        "c1\nFIPS c2\nc3\nc4\nc5\nc6\n"
    );
    assert_eq!(check_parses(&git).unwrap(), 2);
    assert_eq!(check_parses(&plain).unwrap(), 1);
}

#[test]
fn a_failing_hunk_names_patch_target_hunk_and_line() {
    let tmp = tree();
    let patch = write_patch(
        &tmp,
        "0001-two-hunks.patch",
        "Header.\n\
         --- a/Lib/ssl.py\n+++ b/Lib/ssl.py\n\
         @@ -1,3 +1,3 @@\n line1\n-line2\n+LINE2\n line3\n\
         @@ -7,3 +7,3 @@\n line7\n-line8 (stale)\n+LINE8\n line9\n",
    );
    let before = read(&tmp, "Lib/ssl.py");
    let err = apply_all(&tmp.path().join("src"), std::slice::from_ref(&patch)).unwrap_err();
    let text = format!("{err:#}");
    assert!(text.contains(&patch.display().to_string()), "{text}");
    assert!(text.contains("Lib/ssl.py"), "{text}");
    assert!(text.contains("hunk #2"), "{text}");
    assert!(
        text.contains("line 8: the patch expects \"line8 (stale)\""),
        "{text}"
    );
    assert!(text.contains("but the file has   \"line8\""), "{text}");
    assert_eq!(read(&tmp, "Lib/ssl.py"), before, "nothing may be written");
}

#[test]
fn an_already_applied_patch_is_recognised_and_not_rewritten() {
    let tmp = tree();
    let patch = write_patch(&tmp, "0001.patch", &format!("Header.\n\n{SSL_LINE3}"));
    let src = tmp.path().join("src");
    assert_eq!(
        apply_all(&src, std::slice::from_ref(&patch)).unwrap(),
        vec![Outcome::Applied]
    );
    let once = read(&tmp, "Lib/ssl.py");
    let mtime = std::fs::metadata(src.join("Lib/ssl.py"))
        .unwrap()
        .modified()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(20));

    assert_eq!(
        apply_all(&src, &[patch]).unwrap(),
        vec![Outcome::AlreadyApplied]
    );
    assert_eq!(read(&tmp, "Lib/ssl.py"), once);
    let again = std::fs::metadata(src.join("Lib/ssl.py"))
        .unwrap()
        .modified()
        .unwrap();
    assert_eq!(mtime, again, "an already applied patch writes nothing");
}

#[test]
fn a_failure_in_the_second_file_leaves_the_first_unwritten() {
    let tmp = tree();
    let src = tmp.path().join("src");
    let ssl_before = std::fs::read(src.join("Lib/ssl.py")).unwrap();
    let hash_before = std::fs::read(src.join("Modules/hash.c")).unwrap();

    let multi = write_patch(
        &tmp,
        "multi.patch",
        &format!("Header.\n{SSL_LINE3}{HASH_C2_STALE}"),
    );
    let err = apply_all(&src, &[multi]).unwrap_err();
    let text = format!("{err:#}");
    assert!(
        text.contains("Modules/hash.c") && text.contains("hunk #1"),
        "{text}"
    );
    assert!(
        text.contains("line 3: the patch expects \"c3 changed\""),
        "{text}"
    );
    assert_eq!(std::fs::read(src.join("Lib/ssl.py")).unwrap(), ssl_before);
    assert_eq!(
        std::fs::read(src.join("Modules/hash.c")).unwrap(),
        hash_before
    );

    // The same across patch files: a good first patch is not written when the second fails.
    let first = write_patch(&tmp, "0001.patch", SSL_LINE3);
    let second = write_patch(&tmp, "0002.patch", HASH_C2_STALE);
    let err = apply_all(&src, &[first, second.clone()]).unwrap_err();
    assert!(
        format!("{err:#}").contains(&second.display().to_string()),
        "{err:#}"
    );
    assert_eq!(std::fs::read(src.join("Lib/ssl.py")).unwrap(), ssl_before);
}

#[test]
fn a_later_patch_sees_earlier_changes_and_files_come_and_go() {
    let tmp = tree();
    let src = tmp.path().join("src");
    let first = write_patch(&tmp, "0001.patch", SSL_LINE3);
    let second = write_patch(
        &tmp,
        "0002.patch",
        "Builds on 0001, adds a script, removes hash.c.\n\n\
         diff --git a/Lib/ssl.py b/Lib/ssl.py\n--- a/Lib/ssl.py\n+++ b/Lib/ssl.py\n\
         @@ -2,3 +2,3 @@\n line2\n-LINE3\n+LINE3 again\n line4\n\
         diff --git a/Tools/fips-check.sh b/Tools/fips-check.sh\nnew file mode 100755\n\
         --- /dev/null\n+++ b/Tools/fips-check.sh\n@@ -0,0 +1,2 @@\n+#!/bin/sh\n+exit 0\n\
         diff --git a/Modules/hash.c b/Modules/hash.c\ndeleted file mode 100644\n\
         --- a/Modules/hash.c\n+++ /dev/null\n@@ -1,6 +0,0 @@\n-c1\n-c2\n-c3\n-c4\n-c5\n-c6\n",
    );
    let outcomes = apply_all(&src, &[first, second.clone()]).unwrap();
    assert_eq!(outcomes, vec![Outcome::Applied, Outcome::Applied]);
    assert!(read(&tmp, "Lib/ssl.py").contains("line2\nLINE3 again\nline4\n"));
    assert_eq!(read(&tmp, "Tools/fips-check.sh"), "#!/bin/sh\nexit 0\n");
    assert!(!src.join("Modules/hash.c").exists());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(src.join("Tools/fips-check.sh"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o755);
    }
    assert_eq!(check_parses(&second).unwrap(), 3);
}

#[test]
fn a_patch_that_applies_both_ways_is_refused_rather_than_applied_twice() {
    let tmp = tree();
    let src = tmp.path().join("src");
    // Appending with one line of context: once applied, the context is still there.
    let append = write_patch(
        &tmp,
        "append.patch",
        "--- a/Lib/ssl.py\n+++ b/Lib/ssl.py\n@@ -12 +12,2 @@\n line12\n+line13\n",
    );
    assert_eq!(
        apply_all(&src, std::slice::from_ref(&append)).unwrap(),
        vec![Outcome::Applied]
    );
    let once = read(&tmp, "Lib/ssl.py");
    let err = apply_all(&src, &[append]).unwrap_err();
    assert!(
        format!("{err:#}").contains("both forwards and backwards"),
        "{err:#}"
    );
    assert_eq!(read(&tmp, "Lib/ssl.py"), once);
}

#[test]
fn paths_outside_the_tree_and_unparsable_patches_are_refused() {
    let tmp = tree();
    let escape = write_patch(
        &tmp,
        "escape.patch",
        "--- a/../outside\n+++ b/../outside\n@@ -1 +1 @@\n-x\n+y\n",
    );
    let err = check_parses(&escape).unwrap_err();
    assert!(format!("{err:#}").contains("`..`"), "{err:#}");
    let garbage = write_patch(&tmp, "garbage.patch", "just words\n");
    let err = apply_all(&tmp.path().join("src"), std::slice::from_ref(&garbage)).unwrap_err();
    assert!(
        format!("{err:#}").contains(&garbage.display().to_string()),
        "{err:#}"
    );
    let _: &Path = tmp.path();
}

#[test]
fn a_patch_with_crlf_line_endings_is_named_as_such() {
    let tmp = tree();
    let crlf = write_patch(&tmp, "0001-crlf.patch", &SSL_LINE3.replace('\n', "\r\n"));
    let err = apply_all(&tmp.path().join("src"), &[crlf]).unwrap_err();
    let text = format!("{err:#}");
    assert!(text.contains("CRLF"), "{text}");
    assert!(!text.contains("refresh it against this release"), "{text}");
}

#[cfg(unix)]
#[test]
fn patched_files_are_replaced_not_written_through_links() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tree();
    let root = tmp.path().join("src");
    // A hard link elsewhere in the tree, and an executable mode the patch does not mention.
    std::fs::hard_link(root.join("Lib/ssl.py"), root.join("Lib/ssl_copy.py")).unwrap();
    std::fs::set_permissions(
        root.join("Lib/ssl.py"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    let patch = write_patch(&tmp, "0001.patch", SSL_LINE3);
    apply_all(&root, &[patch]).unwrap();
    assert!(read(&tmp, "Lib/ssl.py").contains("LINE3"));
    assert_eq!(
        read(&tmp, "Lib/ssl_copy.py"),
        numbered("line", 12),
        "the patch wrote through a hard link"
    );
    let mode = std::fs::metadata(root.join("Lib/ssl.py"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o755);

    // A symlink that leads out of the tree is not followed.
    let outside = tmp.path().join("outside.c");
    std::fs::write(&outside, numbered("c", 6)).unwrap();
    std::fs::remove_file(root.join("Modules/hash.c")).unwrap();
    std::os::unix::fs::symlink("../../outside.c", root.join("Modules/hash.c")).unwrap();
    let patch = write_patch(&tmp, "0002.patch", HASH_C2);
    let result = apply_all(&root, &[patch]);
    assert_eq!(
        std::fs::read_to_string(&outside).unwrap(),
        numbered("c", 6),
        "the patch wrote through a symlink to a file outside the tree"
    );
    let text = format!("{:#}", result.expect_err("a symlink was patched"));
    assert!(text.contains("symlink"), "{text}");
}
