//! The distributed keys this host owns: what it claims again when it
//! joins the referee (`KeyClaim`), so that a restarted referee, whose
//! tables live in memory only, learns them back from the hosts.
//!
//! An entry is made when the referee records a structure this host
//! created (its `KeyCommit` is answered), or may have (the answer was lost
//! with the link: the next join settles it), and goes when the key is
//! freed (`KeyGone`), the referee refuses the claim, or the structure is
//! gone from the kernel at a join. The list is kept in the
//! runtime directory, so that a restarted dipcd still claims its keys, but
//! only for the IPC namespace (incarnation) it was written in: after a
//! reboot the structures are gone. Before claiming, dipcd checks with its
//! kernel that each id still names its key, so no removed structure is
//! ever announced.

use crate::placeholders::kind_from_name;
use dipc_common::wire::IpcKind;
use log::warn;
use std::collections::BTreeMap;
use std::fs;
use std::path::PathBuf;

/// An owned structure: its id here and the uid that created it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owned {
    pub id: i32,
    pub creator_uid: u32,
}

pub struct OwnedKeys {
    keys: BTreeMap<(IpcKind, i32), Owned>,
    file: PathBuf,
    incarnation: u64,
}

/// The entries of a list written for `incarnation`; a list of another
/// one (or none) gives nothing. Lines that do not parse are skipped: the
/// file is dipcd's own, and a claim is checked against the kernel anyway.
fn parse(text: &str, incarnation: u64) -> BTreeMap<(IpcKind, i32), Owned> {
    let mut lines = text.lines();
    let theirs = lines
        .next()
        .and_then(|l| l.strip_prefix("incarnation "))
        .and_then(|n| n.trim().parse::<u64>().ok());
    if theirs != Some(incarnation) {
        return BTreeMap::new();
    }
    lines
        .filter_map(|line| {
            let mut it = line.split_whitespace();
            let kind = kind_from_name(it.next()?)?;
            let key = it.next()?.parse().ok()?;
            let id = it.next()?.parse().ok()?;
            let creator_uid = it.next()?.parse().ok()?;
            Some(((kind, key), Owned { id, creator_uid }))
        })
        .collect()
}

impl OwnedKeys {
    /// Opens the list of this `incarnation` (empty if the file is of
    /// another one or missing).
    pub fn new(file: PathBuf, incarnation: u64) -> OwnedKeys {
        let text = fs::read_to_string(&file).unwrap_or_default();
        let o = OwnedKeys {
            keys: parse(&text, incarnation),
            file,
            incarnation,
        };
        o.persist();
        o
    }

    fn persist(&self) {
        let mut text = format!("incarnation {}\n", self.incarnation);
        for ((kind, key), o) in &self.keys {
            text.push_str(&format!(
                "{} {key} {} {}\n",
                kind.name(),
                o.id,
                o.creator_uid
            ));
        }
        if let Err(e) = fs::write(&self.file, text) {
            warn!("cannot record owned keys in {}: {e}", self.file.display());
        }
    }

    pub fn add(&mut self, kind: IpcKind, key: i32, o: Owned) {
        if self.keys.insert((kind, key), o) != Some(o) {
            self.persist();
        }
    }

    /// Forgets `key`, if it still names structure `id` (any id: `None`).
    pub fn remove(&mut self, kind: IpcKind, key: i32, id: Option<i32>) {
        let hit = self
            .keys
            .get(&(kind, key))
            .is_some_and(|o| id.is_none_or(|i| i == o.id));
        if hit {
            self.keys.remove(&(kind, key));
            self.persist();
        }
    }

    pub fn list(&self) -> Vec<(IpcKind, i32, Owned)> {
        self.keys.iter().map(|(&(k, n), &o)| (k, n, o)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_list_survives_a_restart_of_the_same_incarnation_only() {
        let dir = std::env::temp_dir().join(format!("dipc-owned-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let file = dir.join("owned");
        let a = Owned {
            id: 32768,
            creator_uid: 1000,
        };
        let mut o = OwnedKeys::new(file.clone(), 7);
        o.add(IpcKind::Msg, 0x1234, a);
        o.add(IpcKind::Shm, -5, Owned { id: 3, ..a });
        o.remove(IpcKind::Shm, -5, Some(4));
        assert_eq!(o.list().len(), 2, "another id is not removed");
        let again = OwnedKeys::new(file.clone(), 7);
        assert_eq!(
            again.list(),
            vec![
                (IpcKind::Msg, 0x1234, a),
                (IpcKind::Shm, -5, Owned { id: 3, ..a })
            ]
        );
        let mut again = OwnedKeys::new(file.clone(), 7);
        again.remove(IpcKind::Msg, 0x1234, None);
        assert_eq!(again.list().len(), 1);
        // Another namespace: those structures are gone.
        assert!(OwnedKeys::new(file.clone(), 8).list().is_empty());
        assert!(OwnedKeys::new(file, 7).list().is_empty());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn bad_lines_are_skipped() {
        let text = "incarnation 9\nmsg 1 2 3\nbogus 1 2 3\nsem x 2 3\nsem 4 5\nshm 6 7 8\n";
        let got = parse(text, 9);
        assert_eq!(got.len(), 2);
        assert!(parse(text, 10).is_empty());
        assert!(parse("", 9).is_empty());
    }
}
