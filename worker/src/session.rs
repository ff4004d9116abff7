//! Taking on the remote caller's identity.
//!
//! A worker serves one remote process for its whole life, so it switches to
//! that process's user, group and supplementary groups once, for good:
//! from then on the kernel checks every call exactly as it would check the
//! caller's own, and `EACCES` on the owner host matches `EACCES` locally.
//! With `cluster.root_squash` on (the default), a caller's root is first
//! mapped to `nobody` ([`squash`]), so root on another host gets here only
//! what is open to everybody.

use nix::unistd::{setgroups, setresgid, setresuid, Gid, Uid};

/// The user a squashed root runs as (`nobody`).
pub const ANON_UID: u32 = 65534;
/// The group a squashed root, or a squashed group 0, runs as (`nogroup`).
pub const ANON_GID: u32 = 65534;

/// The credentials a session stating `uid`, `gid` and `groups` gets on this
/// host, following `cluster.root_squash` as NFS's `root_squash` does: with
/// it on, root becomes [`ANON_UID`]/[`ANON_GID`] with no supplementary
/// groups, and any other caller's gid 0 or group 0 becomes [`ANON_GID`].
/// With it off the credentials are kept as stated.
pub fn squash(uid: u32, gid: u32, groups: &[u32], root_squash: bool) -> (u32, u32, Vec<u32>) {
    if !root_squash {
        return (uid, gid, groups.to_vec());
    }
    if uid == 0 {
        return (ANON_UID, ANON_GID, Vec::new());
    }
    let anon = |g: u32| if g == 0 { ANON_GID } else { g };
    (uid, anon(gid), groups.iter().copied().map(anon).collect())
}

pub fn become_caller(uid: u32, gid: u32, groups: &[u32]) -> Result<(), String> {
    let gids: Vec<Gid> = groups.iter().map(|g| Gid::from_raw(*g)).collect();
    setgroups(&gids).map_err(|e| format!("setgroups: {e}"))?;
    let g = Gid::from_raw(gid);
    setresgid(g, g, g).map_err(|e| format!("setresgid({gid}): {e}"))?;
    let u = Uid::from_raw(uid);
    setresuid(u, u, u).map_err(|e| format!("setresuid({uid}): {e}"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_becomes_nobody() {
        assert_eq!(
            squash(0, 0, &[0, 1, 4242], true),
            (ANON_UID, ANON_GID, vec![])
        );
        // Root is root whatever group it states.
        assert_eq!(squash(0, 1000, &[1000], true), (ANON_UID, ANON_GID, vec![]));
    }

    #[test]
    fn group_zero_of_others_is_squashed() {
        assert_eq!(squash(1000, 0, &[], true), (1000, ANON_GID, vec![]));
        assert_eq!(
            squash(1000, 1000, &[10, 0, 20], true),
            (1000, 1000, vec![10, ANON_GID, 20])
        );
        assert_eq!(
            squash(1000, 0, &[0, 5], true),
            (1000, ANON_GID, vec![ANON_GID, 5])
        );
    }

    #[test]
    fn ordinary_users_are_untouched() {
        assert_eq!(
            squash(1000, 100, &[100, 4242], true),
            (1000, 100, vec![100, 4242])
        );
        assert_eq!(
            squash(ANON_UID, ANON_GID, &[], true),
            (ANON_UID, ANON_GID, vec![])
        );
    }

    #[test]
    fn no_squash_keeps_everything() {
        assert_eq!(squash(0, 0, &[0, 1], false), (0, 0, vec![0, 1]));
        assert_eq!(squash(1000, 0, &[0], false), (1000, 0, vec![0]));
    }
}
