//! The store: one folder of made cells that many processes, on one host or many (a shared
//! filesystem), read and fill at once.
//!
//! Each made cell lives in `ROOT/KIND-KEY/`: its files (weights, pairs, rows) and
//! `meta.json`, which records the recipe, the SHA-256 of every file, the cell's results
//! (`info`) and a checksum of itself. [`Store::get_or_make`] is the one way in:
//!
//! 1. a finished folder is verified (meta checksum, every file's checksum) and reused;
//! 2. otherwise the process takes the cell's lock (`KIND-KEY.lock`, created exclusively,
//!    naming host, pid and a nonce, its mtime refreshed by a heartbeat while held), makes the
//!    cell into a temporary folder named by host, pid and a random nonce, writes and syncs
//!    every file, and renames the folder into place; then it releases the lock;
//! 3. a process that finds the lock held waits for the folder to appear (the holder never
//!    waits on anything while it holds a lock, so there is no deadlock); a lock whose holder
//!    is dead (same host, no such pid) or whose heartbeat stopped ([`STALE_LOCK`]) is broken.
//!
//! A folder that fails verification is reported on one line, moved to `ROOT/.quarantine/`
//! (never deleted) and made again. [`Store::open`] removes temporaries of dead processes on
//! this host and any older than [`STALE_TEMP`]. A write that fails (a full disk) is an
//! [`Error::Io`] naming the path; the temporary is removed and nothing half-written is left.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tracing::{info, warn};

use crate::error::{Error, Result};

/// Bumped whenever the folder layout or `meta.json` changes incompatibly.
pub const FORMAT: u32 = 6;
/// The metadata file of every cell folder.
pub const META: &str = "meta.json";
/// A lock whose heartbeat is older than this is taken to belong to a dead process.
pub const STALE_LOCK: Duration = Duration::from_secs(120);
/// How often a held lock's mtime is refreshed.
const HEARTBEAT: Duration = Duration::from_secs(15);
/// A temporary folder older than this is removed at start, whoever made it.
pub const STALE_TEMP: Duration = Duration::from_secs(6 * 3600);
const QUARANTINE: &str = ".quarantine";

pub use crate::digest::{hash_hex, hex};

/// The key of a recipe: a hash of its canonical JSON (object keys sorted) and [`FORMAT`].
pub fn key_of(recipe: &Value) -> String {
    let text = serde_json::to_string(&serde_json::json!({ "format": FORMAT, "recipe": recipe }))
        .expect("recipe serializes");
    hash_hex(text.as_bytes())[..20].to_string()
}

/// What is stored beside a cell's files.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Meta {
    pub format: u32,
    pub kind: String,
    pub key: String,
    /// The readable id of the cell (`proxy/m/d8000/n0.00/k2`).
    pub id: String,
    pub recipe: Value,
    /// SHA-256 of every file of the folder but `meta.json`, by file name.
    pub files: BTreeMap<String, String>,
    /// Cell-specific results: standardization, metrics, timings.
    pub info: Value,
    /// Wall seconds the make took, and where it ran (`host:pid`).
    pub make_seconds: f64,
    pub made_by: String,
    /// SHA-256 of this meta serialized with `checksum` empty: an edited file is detected.
    pub checksum: String,
}

impl Meta {
    fn compute_checksum(&self) -> String {
        let mut m = self.clone();
        m.checksum.clear();
        hash_hex(serde_json::to_string(&m).expect("meta serializes").as_bytes())
    }
}

/// What the caller names when it asks for a cell.
#[derive(Debug, Clone, Copy)]
pub struct CellRef<'a> {
    pub kind: &'a str,
    pub key: &'a str,
    pub id: &'a str,
    pub recipe: &'a Value,
}

/// Whether [`Store::get_or_make`] found the cell or made it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Reused,
    Made,
}

/// A folder of made cells.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
}

impl Store {
    /// Opens (creates) the store at `root` and removes stale temporaries and locks.
    pub fn open(root: &Path) -> Result<Self> {
        fs::create_dir_all(root).map_err(|e| Error::io(root, e))?;
        let store = Self { root: root.to_path_buf() };
        store.clean_stale()?;
        Ok(store)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Folder of the cell `kind`/`key`.
    pub fn dir(&self, kind: &str, key: &str) -> PathBuf {
        self.root.join(format!("{kind}-{key}"))
    }

    fn lock_path(&self, kind: &str, key: &str) -> PathBuf {
        self.root.join(format!("{kind}-{key}.lock"))
    }

    /// Whether a finished folder for `kind`/`key` exists (not verified).
    pub fn contains(&self, kind: &str, key: &str) -> bool {
        self.dir(kind, key).join(META).is_file()
    }

    /// The meta of a finished `kind`/`key` as written (not verified; for listing what the
    /// store holds, e.g. its make time, without reading every file).
    pub fn meta(&self, kind: &str, key: &str) -> Option<Meta> {
        let text = fs::read_to_string(self.dir(kind, key).join(META)).ok()?;
        serde_json::from_str(&text).ok()
    }

    /// The metas of every finished cell of `kind` in the store, with their folders' times
    /// of change (not verified; for explaining why a cell is not stored).
    pub fn metas_of(&self, kind: &str) -> Vec<(Meta, std::time::SystemTime)> {
        let prefix = format!("{kind}-");
        let Ok(entries) = fs::read_dir(&self.root) else { return Vec::new() };
        entries
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_str().is_some_and(|n| n.starts_with(&prefix) && !n.ends_with(".lock")))
            .filter_map(|e| {
                let path = e.path().join(META);
                let meta: Meta = serde_json::from_str(&fs::read_to_string(&path).ok()?).ok()?;
                let time = fs::metadata(&path).and_then(|m| m.modified()).ok()?;
                Some((meta, time))
            })
            .collect()
    }

    /// The verified meta of `kind`/`key`. `Ok(None)`: not stored. `Err(Error::Artifact)`:
    /// stored but damaged (meta edited, a file missing or changed).
    pub fn verify(&self, kind: &str, key: &str) -> Result<Option<Meta>> {
        let dir = self.dir(kind, key);
        let meta_path = dir.join(META);
        let text = match fs::read_to_string(&meta_path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io(&meta_path, e)),
        };
        let bad = |reason: String| Error::Artifact {
            dir: dir.clone(),
            reason,
        };
        let meta: Meta = serde_json::from_str(&text).map_err(|e| bad(format!("{META}: {e}")))?;
        if meta.format != FORMAT || meta.kind != kind || meta.key != key {
            return Err(bad(format!(
                "{META} describes {}-{} (format {}), expected {kind}-{key} (format {FORMAT})",
                meta.kind, meta.key, meta.format
            )));
        }
        if meta.compute_checksum() != meta.checksum {
            return Err(bad(format!("{META} does not match its checksum (edited after it was written)")));
        }
        for (name, sha) in &meta.files {
            let path = dir.join(name);
            let bytes = fs::read(&path).map_err(|e| bad(format!("{name}: {e}")))?;
            let got = hash_hex(&bytes);
            if &got != sha {
                return Err(bad(format!("{name}: checksum {} does not match {META} ({})", &got[..12], &sha[..sha.len().min(12)])));
            }
        }
        Ok(Some(meta))
    }

    /// The cell `c`: verified and reused if stored; otherwise made once across every process
    /// sharing this store. `make` writes the cell's files into the folder it is given and
    /// returns the cell's `info`; `load` reads a finished folder. A damaged folder is
    /// quarantined and made again.
    pub fn get_or_make<T>(
        &self,
        c: CellRef,
        make: impl FnOnce(&Path) -> Result<Value>,
        load: impl Fn(&Path, &Meta) -> Result<T>,
    ) -> Result<(T, Meta, Origin)> {
        let mut make = Some(make);
        let mut waiting_logged = false;
        loop {
            match self.verify(c.kind, c.key) {
                Ok(Some(meta)) => match load(&self.dir(c.kind, c.key), &meta) {
                    Ok(v) => return Ok((v, meta, Origin::Reused)),
                    Err(e @ Error::Artifact { .. }) => self.quarantine_damaged(c, &e)?,
                    Err(e) => return Err(e),
                },
                Ok(None) => {}
                Err(e @ Error::Artifact { .. }) => self.quarantine_damaged(c, &e)?,
                Err(e) => return Err(e),
            }
            match Lock::try_acquire(&self.lock_path(c.kind, c.key))? {
                Some(lock) => {
                    if self.contains(c.kind, c.key) {
                        drop(lock);
                        continue;
                    }
                    let make = make.take().expect("a cell is made at most once per call");
                    let meta = self.make_locked(c, make)?;
                    drop(lock);
                    let v = load(&self.dir(c.kind, c.key), &meta)?;
                    return Ok((v, meta, Origin::Made));
                }
                None => {
                    let path = self.lock_path(c.kind, c.key);
                    if Lock::break_if_stale(&path)? {
                        continue;
                    }
                    if !waiting_logged {
                        info!("{}: being made by {}; waiting for it", c.id, Lock::holder(&path));
                        waiting_logged = true;
                    }
                    std::thread::sleep(Duration::from_millis(250));
                }
            }
        }
    }

    fn quarantine_damaged(&self, c: CellRef, e: &Error) -> Result<()> {
        // Only under the cell's lock, so that two processes do not both move (and remake) it.
        let Some(lock) = Lock::try_acquire(&self.lock_path(c.kind, c.key))? else {
            std::thread::sleep(Duration::from_millis(250));
            return Ok(());
        };
        let dir = self.dir(c.kind, c.key);
        if dir.exists() && matches!(self.verify(c.kind, c.key), Err(Error::Artifact { .. })) {
            warn!("{e}; moving it to {QUARANTINE}/ and making {} again", c.id);
            self.quarantine(&dir)?;
        }
        drop(lock);
        Ok(())
    }

    fn make_locked(&self, c: CellRef, make: impl FnOnce(&Path) -> Result<Value>) -> Result<Meta> {
        let tmp = self.root.join(format!(".tmp-{}-{}-{}", c.kind, c.key, Owner::this().tag()));
        fs::create_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
        let result = (|| {
            let started = std::time::Instant::now();
            let info = make(&tmp)?;
            let mut files = BTreeMap::new();
            let mut names: Vec<String> = Vec::new();
            for entry in fs::read_dir(&tmp).map_err(|e| Error::io(&tmp, e))? {
                let entry = entry.map_err(|e| Error::io(&tmp, e))?;
                names.push(entry.file_name().to_string_lossy().to_string());
            }
            names.sort();
            for name in names {
                let path = tmp.join(&name);
                let bytes = fs::read(&path).map_err(|e| Error::io(&path, e))?;
                fs::File::open(&path).and_then(|f| f.sync_all()).map_err(|e| Error::io(&path, e))?;
                files.insert(name, hash_hex(&bytes));
            }
            let mut meta = Meta {
                format: FORMAT,
                kind: c.kind.to_string(),
                key: c.key.to_string(),
                id: c.id.to_string(),
                recipe: c.recipe.clone(),
                files,
                info,
                make_seconds: started.elapsed().as_secs_f64(),
                made_by: Owner::this().display(),
                checksum: String::new(),
            };
            meta.checksum = meta.compute_checksum();
            write_synced(&tmp.join(META), serde_json::to_string_pretty(&meta).expect("meta serializes").as_bytes())?;
            let dir = self.dir(c.kind, c.key);
            fs::rename(&tmp, &dir).map_err(|e| Error::io(&dir, e))?;
            sync_dir(&self.root);
            Ok(meta)
        })();
        if result.is_err() {
            let _ = fs::remove_dir_all(&tmp);
        }
        result
    }

    /// Moves a damaged cell folder aside into `ROOT/.quarantine/`.
    pub fn quarantine(&self, dir: &Path) -> Result<PathBuf> {
        let q = self.root.join(QUARANTINE);
        fs::create_dir_all(&q).map_err(|e| Error::io(&q, e))?;
        let name = dir.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
        let target = q.join(format!("{name}-{}", Owner::this().tag()));
        fs::rename(dir, &target).map_err(|e| Error::io(dir, e))?;
        Ok(target)
    }

    /// Removes temporaries (folders and files) of processes that died on this host, or older than
    /// [`STALE_TEMP`]; breaks stale locks.
    fn clean_stale(&self) -> Result<()> {
        let entries = fs::read_dir(&self.root).map_err(|e| Error::io(&self.root, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| Error::io(&self.root, e))?;
            let name = entry.file_name().to_string_lossy().to_string();
            let path = entry.path();
            // Cell folders being made (`.tmp-KIND-KEY-OWNER`) and files being written
            // (`.NAME.tmp-OWNER`: locks, tables).
            if name.starts_with(".tmp-") || (name.starts_with('.') && name.contains(".tmp-")) {
                let old = age(&path).is_some_and(|a| a > STALE_TEMP);
                let dead = Owner::parse_tag(&name).is_some_and(|o| o.is_dead_here());
                if old || dead {
                    info!("removing a stale temporary {}", path.display());
                    let _ = fs::remove_dir_all(&path);
                    let _ = fs::remove_file(&path);
                }
            } else if name.ends_with(".lock") {
                Lock::break_if_stale(&path)?;
            }
        }
        Ok(())
    }
}

/// Who made something: host, pid and a nonce (a pid alone repeats across hosts and reboots).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Owner {
    host: String,
    pid: u32,
    nonce: u64,
}

impl Owner {
    fn this() -> Self {
        use std::sync::OnceLock;
        static NONCE: OnceLock<u64> = OnceLock::new();
        Self {
            host: hostname(),
            pid: std::process::id(),
            nonce: *NONCE.get_or_init(rand::random::<u64>),
        }
    }

    /// `host~pid~nonce~rand`: unique per call (a fresh random tail), parseable back.
    fn tag(&self) -> String {
        format!("{}~{}~{:016x}~{:08x}", self.host, self.pid, self.nonce, rand::random::<u32>())
    }

    fn display(&self) -> String {
        format!("{}:{}", self.host, self.pid)
    }

    /// The owner named at the end of a temporary's name (`.tmp-KIND-KEY-host~pid~nonce~r`).
    fn parse_tag(name: &str) -> Option<Self> {
        let tail = name.rsplit('-').next()?;
        let mut it = tail.split('~');
        let host = it.next()?.to_string();
        let pid = it.next()?.parse().ok()?;
        let nonce = u64::from_str_radix(it.next()?, 16).ok()?;
        Some(Self { host, pid, nonce })
    }

    /// True only when this process can tell: the same host, and no process with that pid.
    fn is_dead_here(&self) -> bool {
        self.host == hostname() && !pid_alive(self.pid)
    }
}

fn hostname() -> String {
    let mut buf = [0u8; 256];
    let ok = unsafe { libc::gethostname(buf.as_mut_ptr() as *mut libc::c_char, buf.len()) } == 0;
    let name = if ok {
        let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
        String::from_utf8_lossy(&buf[..end]).to_string()
    } else {
        String::new()
    };
    // Keep it usable inside a file name and a tag.
    let clean: String = name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '.' { c } else { '_' }).collect();
    if clean.is_empty() {
        "host".into()
    } else {
        clean
    }
}

fn pid_alive(pid: u32) -> bool {
    let r = unsafe { libc::kill(pid as libc::pid_t, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

fn age(path: &Path) -> Option<Duration> {
    let m = fs::metadata(path).ok()?.modified().ok()?;
    SystemTime::now().duration_since(m).ok()
}

/// A cell's lock: a file created exclusively (a hard link, atomic on local filesystems and
/// NFS), holding `host pid nonce`, its mtime refreshed by a heartbeat thread while held.
/// Hosts sharing a store are assumed to agree on the time within a minute.
struct Lock {
    path: PathBuf,
    stop: Arc<AtomicBool>,
    beat: Option<std::thread::JoinHandle<()>>,
}

impl Lock {
    fn try_acquire(path: &Path) -> Result<Option<Lock>> {
        let me = Owner::this();
        // Written whole under a unique name, then linked to the lock's name: the link is
        // created exclusively (atomic on local filesystems and NFS), so a lock never exists
        // without its owner line, even if its maker is killed at that instant.
        let tmp = temp_sibling(path);
        write_synced(&tmp, format!("{} {} {:016x}\n", me.host, me.pid, me.nonce).as_bytes())?;
        let linked = fs::hard_link(&tmp, path);
        let _ = fs::remove_file(&tmp);
        match linked {
            Ok(()) => {
                let stop = Arc::new(AtomicBool::new(false));
                let (p, s) = (path.to_path_buf(), stop.clone());
                let beat = std::thread::spawn(move || {
                    let mut waited = Duration::ZERO;
                    while !s.load(Ordering::Relaxed) {
                        std::thread::sleep(Duration::from_millis(200));
                        waited += Duration::from_millis(200);
                        if waited >= HEARTBEAT {
                            waited = Duration::ZERO;
                            if let Ok(f) = fs::OpenOptions::new().append(true).open(&p) {
                                let _ = f.set_modified(SystemTime::now());
                            }
                        }
                    }
                });
                Ok(Some(Lock {
                    path: path.to_path_buf(),
                    stop,
                    beat: Some(beat),
                }))
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(None),
            Err(e) => Err(Error::io(path, e)),
        }
    }

    fn read_owner(path: &Path) -> Option<Owner> {
        let text = fs::read_to_string(path).ok()?;
        let mut it = text.split_whitespace();
        Some(Owner {
            host: it.next()?.to_string(),
            pid: it.next()?.parse().ok()?,
            nonce: u64::from_str_radix(it.next()?, 16).ok()?,
        })
    }

    fn holder(path: &Path) -> String {
        Self::read_owner(path).map(|o| o.display()).unwrap_or_else(|| "another process".into())
    }

    /// Removes the lock at `path` if its holder is dead here or its heartbeat stopped.
    /// Returns whether it was broken (or had vanished).
    fn break_if_stale(path: &Path) -> Result<bool> {
        let Some(age) = age(path) else {
            return Ok(true);
        };
        let dead = Self::read_owner(path).is_some_and(|o| o.is_dead_here() && o != Owner::this());
        if !(dead || age > STALE_LOCK) {
            return Ok(false);
        }
        // Rename first: of several processes breaking the same lock, one wins.
        let aside = path.with_extension(format!("stale-{}", Owner::this().tag()));
        match fs::rename(path, &aside) {
            Ok(()) => {
                warn!("{}: breaking a stale lock (holder {} is gone)", path.display(), Self::holder(&aside));
                let _ = fs::remove_file(&aside);
                Ok(true)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(true),
            Err(e) => Err(Error::io(path, e)),
        }
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(b) = self.beat.take() {
            let _ = b.join();
        }
        let _ = fs::remove_file(&self.path);
    }
}

/// Writes `bytes` to `path` atomically: a uniquely named temporary sibling (host, pid,
/// nonce), fsync, rename. On failure the temporary is removed and `path` is untouched.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic_with(path, |f| f.write_all(bytes).map_err(|e| Error::io(path, e)))
}

/// As [`write_atomic`], for content written as it is produced: `write` fills the temporary
/// file (its errors name what it likes), which is then synced and renamed onto `path`; on
/// any error the temporary file is removed and `path` is untouched.
pub fn write_atomic_with<T>(path: &Path, write: impl FnOnce(&mut fs::File) -> Result<T>) -> Result<T> {
    let parent = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
    let tmp = temp_sibling(path);
    let r = (|| {
        let mut f = fs::File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
        let out = write(&mut f)?;
        f.sync_all().map_err(|e| Error::io(&tmp, e))?;
        fs::rename(&tmp, path).map_err(|e| Error::io(path, e))?;
        Ok(out)
    })();
    if r.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    r
}

/// A unique temporary name beside `path` (`.NAME.tmp-host~pid~nonce~rand`).
pub fn temp_sibling(path: &Path) -> PathBuf {
    let parent = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
    parent.join(format!(".{name}.tmp-{}", Owner::this().tag()))
}

/// Writes `bytes` to `path` and syncs it.
pub fn write_synced(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut f = fs::File::create(path).map_err(|e| Error::io(path, e))?;
    f.write_all(bytes).map_err(|e| Error::io(path, e))?;
    f.sync_all().map_err(|e| Error::io(path, e))
}

fn sync_dir(dir: &Path) {
    if let Ok(f) = fs::File::open(dir) {
        let _ = f.sync_all();
    }
}
