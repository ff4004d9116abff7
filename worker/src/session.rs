//! Taking on the remote caller's identity.
//!
//! A worker serves one remote process for its whole life, so it switches to
//! that process's user, group and supplementary groups once, for good:
//! from then on the kernel checks every call exactly as it would check the
//! caller's own, and `EACCES` on the owner host matches `EACCES` locally.

use nix::unistd::{setgroups, setresgid, setresuid, Gid, Uid};

pub fn become_caller(uid: u32, gid: u32, groups: &[u32]) -> Result<(), String> {
    let gids: Vec<Gid> = groups.iter().map(|g| Gid::from_raw(*g)).collect();
    setgroups(&gids).map_err(|e| format!("setgroups: {e}"))?;
    let g = Gid::from_raw(gid);
    setresgid(g, g, g).map_err(|e| format!("setresgid({gid}): {e}"))?;
    let u = Uid::from_raw(uid);
    setresuid(u, u, u).map_err(|e| format!("setresuid({uid}): {e}"))?;
    Ok(())
}
