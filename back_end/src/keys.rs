//! This host's part in the distributed keys beyond a single request:
//! placeholders made once an owner vouched for the caller, and at each
//! join the owned keys claimed again and the placeholders checked.
//!
//! Separate because these keep the referee's key table and this host's
//! kernel in step across link breaks and referee restarts.

use crate::daemon::Daemon;
use crate::link::Relayed;
use crate::link::Then;
use dipc_common::auth::Vouch;
use dipc_common::sysv;
use dipc_common::wire::{IpcKind, Message, Origin, ToReferee};
use log::{info, warn};
use std::io;
use std::net::SocketAddr;

impl Daemon<'_> {
    /// The local placeholder for `key`, owned by `owner` as `id`, for a
    /// client of `uid` that the owner's worker vouched may use it.
    pub(crate) fn placeholder(
        &mut self,
        uid: u32,
        (kind, key): (IpcKind, i32),
        (owner, id, origin): (SocketAddr, i32, Origin),
        tag: &[u8; 32],
    ) -> Message {
        let v = Vouch {
            kind,
            key,
            id,
            incarnation: origin.incarnation,
            owner,
            uid,
        };
        if origin.key != key || owner == self.config.front_end_addr() {
            return Message::error(
                libc::EINVAL,
                format!(
                    "a placeholder is for a key owned by another host (asked for {} key {key:#x} of {owner})",
                    kind.name()
                ),
            );
        }
        if !self.secret.vouch_key().verify(&v, tag) {
            warn!(
                "refused a placeholder for {} key {key:#x} to uid {uid}: not vouched for by {owner}",
                kind.name()
            );
            return Message::error(
                libc::EPERM,
                format!(
                    "{} key {key:#x}: no proof from its owner {owner} that uid {uid} may use id {id}",
                    kind.name()
                ),
            );
        }
        let limit = self.config.limits.placeholders_per_uid;
        match self
            .placeholders
            .ensure(kind, key, (owner, id, origin.incarnation), (uid, limit))
        {
            Ok(local_id) => Message::KeyOwner {
                owner,
                id,
                local_id,
                origin,
            },
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                warn!(
                    "refused a placeholder for {} key {key:#x}: {e}",
                    kind.name()
                );
                Message::error(libc::EAGAIN, e.to_string())
            }
            Err(e) => Message::error(
                e.raw_os_error().unwrap_or(libc::ENOSPC),
                format!("cannot create a local placeholder: {e}"),
            ),
        }
    }

    /// Joined (again): tells the referee which keys this host owns, so that
    /// a restarted referee has them again before it answers for them. An
    /// id whose structure is gone from the kernel (a plain `IPC_RMID`) is
    /// not claimed, and the referee is told to free it, should it still
    /// have it.
    pub(crate) fn claim_keys(&mut self) {
        let owned = self.owned.list();
        if !owned.is_empty() {
            info!("claiming {} owned keys", owned.len());
        }
        for (kind, key, o) in owned {
            if sysv::key_of(kind, o.id) != Some(key) {
                info!(
                    "{} key {key:#x}: id {} is gone from this host; freeing it",
                    kind.name(),
                    o.id
                );
                self.owned.remove(kind, key, Some(o.id));
                let msg = ToReferee::KeyRemove {
                    kind,
                    key,
                    id: o.id,
                    incarnation: self.incarnation,
                };
                self.link.relay(&mut self.io, Relayed::nobody(), msg);
                continue;
            }
            let to = Relayed {
                then: Then::Claim {
                    kind,
                    key,
                    id: o.id,
                },
                ..Relayed::nobody()
            };
            let msg = ToReferee::KeyClaim {
                kind,
                key,
                id: o.id,
                creator_uid: o.creator_uid,
                incarnation: self.incarnation,
            };
            self.link.relay(&mut self.io, to, msg);
        }
    }

    /// Joined (again): asks the referee about every placeholder, so that
    /// one whose key was freed while this host was away (cut off, or the
    /// referee restarted) is removed.
    pub(crate) fn verify_placeholders(&mut self) {
        for (kind, key, what) in self.placeholders.list() {
            let to = Relayed {
                then: Then::Verify { kind, key, what },
                ..Relayed::nobody()
            };
            let msg = ToReferee::KeyGet {
                kind,
                key,
                flags: 0,
            };
            self.link.relay(&mut self.io, to, msg);
        }
    }
}
