//! Small helpers shared across modules.

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};

pub fn sha256_file(path: &Path) -> Result<String> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    Ok(sha256_stream(file, path)?.0)
}

/// The sha256 of everything `reader` yields (named `path` in errors), and its length.
pub fn sha256_stream(mut reader: impl Read, path: &Path) -> Result<(String, u64)> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = reader
            .read(&mut buf)
            .with_context(|| format!("reading {}", path.display()))?;
        if n == 0 {
            break;
        }
        total += n as u64;
        hasher.update(&buf[..n]);
    }
    Ok((hex(&hasher.finalize()), total))
}

/// Opens a file that must be a regular file (not a FIFO or device, which could feed different
/// bytes on each read, never end, or block the open forever) of at most `limit` bytes.
fn open_regular_file(path: &Path, limit: u64) -> Result<std::fs::File> {
    // Checked before opening (opening a FIFO with no writer blocks), and again on the opened
    // file, in case the path was swapped in between.
    let before =
        std::fs::metadata(path).with_context(|| format!("{}: cannot open", path.display()))?;
    anyhow::ensure!(before.is_file(), "{}: not a regular file", path.display());
    let file =
        std::fs::File::open(path).with_context(|| format!("{}: cannot open", path.display()))?;
    let meta = file
        .metadata()
        .with_context(|| format!("{}: cannot read its metadata", path.display()))?;
    anyhow::ensure!(meta.is_file(), "{}: not a regular file", path.display());
    anyhow::ensure!(
        meta.len() <= limit,
        "{}: {} bytes is more than the {limit}-byte limit",
        path.display(),
        meta.len()
    );
    Ok(file)
}

/// Reads a whole regular file of at most `limit` bytes ([`open_regular_file`]). The bound is
/// enforced on the read itself, so a file that grows while being read cannot exceed it either.
pub fn read_regular_file(path: &Path, limit: u64) -> Result<Vec<u8>> {
    let file = open_regular_file(path, limit)?;
    let len = file.metadata().map_or(0, |m| m.len()).min(limit);
    let mut bytes = Vec::with_capacity(len as usize);
    file.take(limit + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("{}: cannot read", path.display()))?;
    anyhow::ensure!(
        bytes.len() as u64 <= limit,
        "{}: grew past the {limit}-byte limit while being read",
        path.display()
    );
    Ok(bytes)
}

/// Text files of a model directory (config.json, tokenizer_config.json, templates, the shard
/// index) are at most this large; tokenizer.json, the largest, at most [`MAX_TOKENIZER_BYTES`].
pub const MAX_MODEL_TEXT_BYTES: u64 = 64 << 20;
pub const MAX_TOKENIZER_BYTES: u64 = 256 << 20;

/// A UTF-8 text file that must be a regular file of at most `limit` bytes (a FIFO in a model
/// directory would block loading forever); `Ok(None)` when there is nothing at `path`.
pub fn read_optional_text(path: &Path, limit: u64) -> Result<Option<String>> {
    if !path.exists() {
        return Ok(None);
    }
    let bytes = read_regular_file(path, limit)?;
    String::from_utf8(bytes)
        .map(Some)
        .with_context(|| format!("{}: not UTF-8 text", path.display()))
}

/// [`read_optional_text`] for a file that must be there.
pub fn read_text(path: &Path, limit: u64) -> Result<String> {
    read_optional_text(path, limit)?.with_context(|| format!("{}: no such file", path.display()))
}

fn refuse_symlink(path: &Path) -> Result<()> {
    let meta = std::fs::symlink_metadata(path).with_context(|| match path.parent() {
        // A missing directory is named as such, not as the first file looked for in it.
        Some(dir) if !dir.as_os_str().is_empty() && !dir.is_dir() => {
            format!("{}: no such directory", dir.display())
        }
        _ => format!("{}: missing", path.display()),
    })?;
    anyhow::ensure!(
        !meta.file_type().is_symlink(),
        "{}: is a symbolic link; bundle files must be plain files inside the bundle",
        path.display()
    );
    Ok(())
}

/// Like [`read_regular_file`], but refuses a symbolic link too: for files of untrusted
/// directories (bundles), where a link could point anywhere on this machine.
pub fn read_untrusted_file(path: &Path, limit: u64) -> Result<Vec<u8>> {
    refuse_symlink(path)?;
    read_regular_file(path, limit)
}

/// The sha256 of an untrusted file (as [`read_untrusted_file`] would accept it), streamed: no
/// memory is sized by the file, so its checksum can be checked before it is read.
pub fn sha256_untrusted_file(path: &Path, limit: u64) -> Result<String> {
    refuse_symlink(path)?;
    let file = open_regular_file(path, limit)?.take(limit + 1);
    let (sha256, total) = sha256_stream(file, path)?;
    anyhow::ensure!(
        total <= limit,
        "{}: grew past the {limit}-byte limit while being read",
        path.display()
    );
    Ok(sha256)
}

/// Writes `bytes` to `path` through a new temporary file in the same directory and a rename:
/// a reader never sees half a file, and a symbolic link already at `path` is replaced, not
/// followed (so a planted link cannot redirect the write elsewhere).
pub fn write_file_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    use std::sync::atomic::{AtomicU64, Ordering};
    // Unique per process and per call, so concurrent writers never share a temporary file;
    // one left behind by a killed process is skipped, never reused or removed.
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .with_context(|| format!("{}: not a file path", path.display()))?;
    let (tmp, mut file) = loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let tmp = dir.join(format!(
            ".{}.{}.{n}.tmp",
            name.to_string_lossy(),
            std::process::id()
        ));
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
        {
            Ok(file) => break (tmp, file),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => anyhow::bail!("writing {}: {e}", path.display()),
        }
    };
    let written = file
        .write_all(bytes)
        .and_then(|()| file.sync_all())
        .and_then(|()| std::fs::rename(&tmp, path));
    written.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        anyhow::anyhow!("writing {}: {e}", path.display())
    })
}

/// An output folder a command made for itself. Dropped while still empty (the command failed
/// or was cancelled before writing anything), it is removed, with the parent folders made for
/// it, so a failed run leaves no empty folder behind; a folder that existed before is never
/// removed.
#[derive(Debug)]
pub struct OutputDir {
    path: PathBuf,
    /// The folders this command created, outermost first (each by its own `create_dir`, so
    /// none is a folder that existed, whatever `..` the path holds).
    created: Vec<PathBuf>,
}

impl OutputDir {
    /// A folder this command has just created (its parent existed).
    pub fn created(path: PathBuf) -> Self {
        OutputDir {
            created: vec![path.clone()],
            path,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for OutputDir {
    fn drop(&mut self) {
        remove_empty_dirs(&self.created);
    }
}

/// Removes, innermost first, those of `dirs` (outermost first) that are empty. remove_dir
/// refuses a folder that holds anything, which is the point; one that holds something is
/// skipped, not a reason to stop (`a/../b` made `a` on the way, empty beside a filled `b`).
fn remove_empty_dirs(dirs: &[PathBuf]) {
    for dir in dirs.iter().rev() {
        let _ = std::fs::remove_dir(dir);
    }
}

/// Creates `dir` and any missing parents one by one, returning those it created; on failure
/// the ones it had created are removed again.
fn create_dirs_recording(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut created = Vec::new();
    let mut prefix = PathBuf::new();
    for component in dir.components() {
        prefix.push(component);
        match std::fs::create_dir(&prefix) {
            Ok(()) => created.push(prefix.clone()),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            // A root, `.` or `..` that exists cannot be created; anything else is an error
            // only if the prefix is not a folder now.
            Err(_) if prefix.is_dir() => {}
            Err(e) => {
                remove_empty_dirs(&created);
                return Err(e);
            }
        }
    }
    Ok(created)
}

/// Creates `dir` for a run's output, refusing one that already holds anything: a run never
/// overwrites an earlier one, nor mixes its files with another's.
pub fn create_empty_dir(dir: &Path, flag: &str) -> Result<OutputDir> {
    check_new_or_empty_dir(dir, flag)?;
    let created = create_dirs_recording(dir)
        .with_context(|| format!("{flag} {}: creating it", dir.display()))?;
    let out = OutputDir {
        path: dir.to_path_buf(),
        created,
    };
    check_new_or_empty_dir(dir, flag)?;
    Ok(out)
}

/// Refuses a `dir` that exists and holds anything (or is not a directory); a missing one is
/// fine. Lets a command that writes several output folders check them all before starting.
pub fn check_new_or_empty_dir(dir: &Path, flag: &str) -> Result<()> {
    if !dir.exists() {
        return Ok(());
    }
    let mut entries =
        std::fs::read_dir(dir).with_context(|| format!("{flag} {}: listing it", dir.display()))?;
    if let Some(entry) = entries.next() {
        let entry = entry.with_context(|| format!("{flag} {}: listing it", dir.display()))?;
        anyhow::bail!(
            "{flag} {} already holds {:?}: results never overwrite an earlier run, so name a new \
             or empty directory",
            dir.display(),
            entry.file_name()
        );
    }
    Ok(())
}

/// The characters of names that become one path component: experiment ids, hub repo and
/// revision parts, exported file names (ASCII letters, digits, '-', '_', '.').
pub fn is_plain_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')
}

/// Whether `listed` (a path read from a file) is relative and made only of plain names, so
/// joining it to a folder stays inside that folder (links aside): no absolute path, no `..`.
pub fn is_inner_relative_path(listed: &str) -> bool {
    !listed.is_empty()
        && Path::new(listed).components().all(|c| {
            matches!(
                c,
                std::path::Component::Normal(_) | std::path::Component::CurDir
            )
        })
}

/// `text` with control characters other than newline and tab written out as `\u{1b}`: text
/// that came from a file or a model (an error quoting a manifest, a generated token) must not
/// drive the terminal (clear it, move the cursor, print a fake verdict).
pub fn escape_controls(text: &str) -> std::borrow::Cow<'_, str> {
    let is_unsafe = |c: char| c.is_control() && c != '\n' && c != '\t';
    if !text.contains(is_unsafe) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut escaped = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if is_unsafe(c) {
            escaped.extend(c.escape_unicode());
        } else {
            escaped.push(c);
        }
    }
    std::borrow::Cow::Owned(escaped)
}

pub fn sha256_bytes(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Proleptic Gregorian (year, month, day) of a day count since 1970-01-01 (Howard Hinnant's
/// civil-from-days; no date crate needed).
pub fn civil_date_from_days(days: i64) -> (i64, u32, u32) {
    // Shift to an era calendar that starts on March 1st so leap days fall at year end.
    let shifted = days + 719_468;
    let era = shifted.div_euclid(146_097);
    let day_of_era = shifted.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * month_from_march + 2) / 5 + 1) as u32;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Unix seconds as UTC (year, month, day, hour, minute, second).
pub fn utc_from_unix(secs: u64) -> (i64, u32, u32, u64, u64, u64) {
    let (year, month, day) = civil_date_from_days((secs / 86_400) as i64);
    let rem = secs % 86_400;
    (year, month, day, rem / 3600, rem % 3600 / 60, rem % 60)
}

pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// `text` as one shell word: unchanged when it holds only safe characters, else in single
/// quotes (a path with spaces in a printed command must still paste as one argument).
pub fn shell_quote(text: &str) -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || "/._-+:,=@%".contains(c);
    if !text.is_empty() && text.chars().all(safe) {
        text.to_string()
    } else {
        format!("'{}'", text.replace('\'', "'\\''"))
    }
}

/// A token-check margin for people: three decimals, or "−inf"/"+inf".
pub fn format_margin(margin: f64) -> String {
    if margin == f64::NEG_INFINITY {
        "-inf".into()
    } else if margin == f64::INFINITY {
        "+inf".into()
    } else {
        format!("{margin:+.3}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates_across_leap_days_and_centuries() {
        assert_eq!(civil_date_from_days(0), (1970, 1, 1));
        assert_eq!(civil_date_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_date_from_days(-1), (1969, 12, 31));
        assert_eq!(utc_from_unix(1_795_700_000), (2026, 11, 26, 13, 33, 20));
    }

    #[test]
    fn control_characters_are_written_out_but_lines_stay() {
        assert_eq!(
            escape_controls("ok\x1b[2J\rverdict: Pass\u{9b}\n\tnext"),
            "ok\\u{1b}[2J\\u{d}verdict: Pass\\u{9b}\n\tnext"
        );
        assert!(matches!(
            escape_controls("plain"),
            std::borrow::Cow::Borrowed(_)
        ));
    }

    #[test]
    fn an_output_dir_made_here_goes_away_only_while_empty() {
        let tmp = tempfile::tempdir().unwrap();
        let new = tmp.path().join("new");
        drop(create_empty_dir(&new, "--out").unwrap());
        assert!(
            !new.exists(),
            "an empty folder made for a failed command stays"
        );

        let kept = create_empty_dir(&new, "--out").unwrap();
        std::fs::write(new.join("trial.json"), "{}").unwrap();
        drop(kept);
        assert!(new.join("trial.json").exists());
        let err = create_empty_dir(&new, "--out").unwrap_err().to_string();
        assert!(
            err.contains("already holds") && err.contains("trial.json"),
            "{err}"
        );
        assert!(new.join("trial.json").exists());

        // Parent folders made for it go too, up to the first that existed.
        let nested = tmp.path().join("a").join("b").join("c");
        drop(create_empty_dir(&nested, "--out").unwrap());
        assert!(!tmp.path().join("a").exists());
        // Through `..`, only the folders made go: not an existing one the path passes.
        let existing = tmp.path().join("P");
        std::fs::create_dir(&existing).unwrap();
        let through = tmp.path().join("n").join("..").join("P").join("out");
        drop(create_empty_dir(&through, "--out").unwrap());
        assert!(existing.is_dir(), "a folder that existed was removed");
        assert!(!existing.join("out").exists() && !tmp.path().join("n").exists());
        // A folder made only on the way goes even when the output is kept.
        let kept =
            create_empty_dir(&tmp.path().join("w").join("..").join("kept"), "--out").unwrap();
        std::fs::write(tmp.path().join("kept").join("f"), "x").unwrap();
        drop(kept);
        assert!(tmp.path().join("kept/f").exists() && !tmp.path().join("w").exists());
        // A creation that fails part-way leaves nothing it made.
        let too_long = tmp.path().join("made").join("x".repeat(300));
        assert!(create_empty_dir(&too_long, "--out").is_err());
        assert!(!tmp.path().join("made").exists());
        // A folder the user made beforehand is theirs, even when left empty.
        let theirs = tmp.path().join("theirs");
        std::fs::create_dir(&theirs).unwrap();
        drop(create_empty_dir(&theirs, "--out").unwrap());
        assert!(theirs.is_dir());
    }

    #[test]
    fn bounded_reads_refuse_big_files_links_and_non_files() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a.json");
        std::fs::write(&file, b"12345").unwrap();
        assert_eq!(read_regular_file(&file, 5).unwrap(), b"12345");
        let err = read_regular_file(&file, 4).unwrap_err().to_string();
        assert!(
            err.contains("a.json") && err.contains("4-byte limit"),
            "{err}"
        );
        let err = read_regular_file(dir.path(), 100).unwrap_err().to_string();
        assert!(err.contains("not a regular file"), "{err}");
        let link = dir.path().join("link.json");
        std::os::unix::fs::symlink(&file, &link).unwrap();
        assert_eq!(read_regular_file(&link, 5).unwrap(), b"12345");
        let err = read_untrusted_file(&link, 5).unwrap_err().to_string();
        assert!(err.contains("symbolic link"), "{err}");
        // An atomic write replaces a planted link instead of writing through it.
        let victim = dir.path().join("victim.txt");
        std::fs::write(&victim, b"keep").unwrap();
        let planted = dir.path().join("out.json");
        std::os::unix::fs::symlink(&victim, &planted).unwrap();
        write_file_atomic(&planted, b"new").unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"keep");
        assert_eq!(std::fs::read(&planted).unwrap(), b"new");
        assert!(!std::fs::symlink_metadata(&planted)
            .unwrap()
            .file_type()
            .is_symlink());
        // A FIFO with no writer would block the open forever: refused before it.
        let fifo = dir.path().join("fifo.json");
        assert!(std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success());
        let err = read_regular_file(&fifo, 100).unwrap_err().to_string();
        assert!(err.contains("not a regular file"), "{err}");
        // Concurrent writers of one file each use their own temporary file.
        let shared = dir.path().join("shared.json");
        std::thread::scope(|scope| {
            for i in 0..8u8 {
                let shared = &shared;
                scope.spawn(move || write_file_atomic(shared, &[i; 1000]).unwrap());
            }
        });
        let bytes = std::fs::read(&shared).unwrap();
        assert!(bytes.len() == 1000 && bytes.iter().all(|&b| b == bytes[0]));
        // A character device is endless: refused before a byte is read.
        let err = read_regular_file(Path::new("/dev/zero"), 5)
            .unwrap_err()
            .to_string();
        assert!(err.contains("not a regular file"), "{err}");
    }
}
