//! Sessions to other hosts: a local client's `Connect` is checked against
//! the referee's host table, and the client is then handed to a forked
//! employer, which opens the connection to the target's worker.
//!
//! Separate because it is the one request that leaves dipcd's loop: the
//! client's connection is taken out of the reactor (`Out::take`) and its
//! socket goes to another process.

use crate::daemon::{Daemon, Handoff};
use dipc_common::channel::FramedParts;
use dipc_common::net::Stream;
use dipc_common::reactor::ConnId;
use dipc_common::sys;
use dipc_common::wire::{FromReferee, HostInfo, Message, Protocol};
use log::{debug, warn};
use nix::sys::signal::Signal;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;

impl Daemon<'_> {
    /// The referee's host table, asked for a client's `Connect` to
    /// `target`: the client goes to an employer if `target` is an up host,
    /// else it is refused.
    pub(crate) fn connect_checked(
        &mut self,
        client: ConnId,
        id: u64,
        target: SocketAddr,
        msg: FromReferee,
    ) {
        let hosts = match msg {
            FromReferee::Hosts { hosts } => hosts,
            // E.g. the link was lost meanwhile; the client learns why.
            msg @ FromReferee::Error { .. } => return self.reply(client, id, &msg.into()),
            other => {
                let msg = Message::error(
                    libc::EPROTO,
                    format!(
                        "the referee answered a host list with {}",
                        other.kind().name()
                    ),
                );
                return self.reply(client, id, &msg);
            }
        };
        let Some(cred) = self.clients.get(&client).map(|c| c.cred) else {
            debug!("a local client went away while its Connect to {target} was checked");
            return;
        };
        let limit = self.config.limits.employers_per_uid;
        // Employers running, and those whose client is being taken out of
        // the reactor to fork one: many host lists can come in one turn,
        // before any of those forks.
        let busy = self.employers.values().filter(|u| **u == cred.uid).count()
            + self
                .handoffs
                .values()
                .filter(|h| h.cred.uid == cred.uid)
                .count();
        match up_member(&hosts, target) {
            Some(_) if cred.uid != 0 && busy >= limit => {
                warn!(
                    "refused a connection for local pid {} (uid {}): {busy} of its sessions are being opened (limits.employers_per_uid)",
                    cred.pid, cred.uid
                );
                let msg = Message::error(
                    libc::EAGAIN,
                    format!(
                        "uid {} has {busy} sessions being opened (limits.employers_per_uid in dipc.conf)",
                        cred.uid
                    ),
                );
                self.reply(client, id, &msg);
            }
            Some(addr) => {
                if let Some(mut c) = self.clients.remove(&client) {
                    self.client_gone(client);
                    // The pid_d the worker will type this session's
                    // messages with: the caller's, if it is registered
                    // (and still the process that registered, not a
                    // successor with a recycled pid).
                    let pid_d = match self.pids.get(c.cred.pid) {
                        Some(r) if r.pid_d > 0 && !r.exited() => r.pid_d,
                        _ => 0,
                    };
                    c.flush_into(client, &mut self.io);
                    self.handoffs.insert(
                        client,
                        Handoff {
                            cred: c.cred,
                            pid_d,
                            id,
                            msg: Message::Connect { target: addr },
                        },
                    );
                    // Handed to `hand_off` once what is queued for it is
                    // written.
                    self.io.take(client);
                }
            }
            None => {
                warn!(
                    "local pid {} (uid {}) asked for a connection to {target}, which is not \
                     an up host of the cluster; refused",
                    cred.pid, cred.uid
                );
                let msg = Message::error(
                    libc::EHOSTUNREACH,
                    format!("{target} is not an up host of the cluster (referee's table)"),
                );
                self.reply(client, id, &msg);
            }
        }
    }

    /// Forks an employer that opens the connection a `Connect` asks for and
    /// passes it to the client. Clients send one request at a time, so
    /// nothing else is buffered for it here.
    pub(crate) fn hand_off(&mut self, h: Handoff, parts: FramedParts<Stream>) {
        if !parts.unread.is_empty() || !parts.unwritten.is_empty() {
            debug!(
                "local pid {}: {} bytes unread and {} unwritten left behind at its hand-off",
                h.cred.pid,
                parts.unread.len(),
                parts.unwritten.len()
            );
        }
        let session = match parts.stream {
            Stream::Unix(s) => UnixStream::from(s),
            Stream::Tcp(_) => {
                warn!("cannot hand a TCP connection to an employer");
                return;
            }
        };
        if let Err(e) = session.set_nonblocking(false) {
            warn!("cannot hand a session to an employer: {e}");
            return;
        }
        let (config, secret, cred) = (self.config, &self.secret, h.cred);
        let (pid_d, first) = (h.pid_d, (h.id, h.msg));
        let keep = [session.as_raw_fd()];
        match sys::fork_child("dipc-employer", Signal::SIGTERM, &keep, move || {
            dipc_employer::serve(session, cred, pid_d, first, config, secret)
        }) {
            Ok(pid) => {
                debug!("employer {pid} for local pid {}", cred.pid);
                self.metrics.sessions_opened += 1;
                self.employers.insert(pid, cred.uid);
            }
            Err(e) => warn!("cannot fork an employer: {e}"),
        }
    }
}

/// The address, as the referee's table has it, of the up host that
/// `target` names. An IPv4-mapped IPv6 address names the IPv4 host: the
/// employer connects from this host's address, so it gets the table's form.
fn up_member(hosts: &[HostInfo], target: SocketAddr) -> Option<SocketAddr> {
    let want = (target.ip().to_canonical(), target.port());
    hosts
        .iter()
        .find(|h| h.up && (h.addr.ip().to_canonical(), h.addr.port()) == want)
        .map(|h| h.addr)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(addr: &str, up: bool) -> HostInfo {
        HostInfo {
            addr: addr.parse().unwrap(),
            up,
            last_heard_ms: 0,
            joined_ms: 0,
            version: 1,
        }
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn only_up_members_with_their_port_are_members() {
        let hosts = [
            host("10.66.0.1:7100", true),
            host("10.66.0.2:7100", false),
            host("[fd00::3]:7100", true),
        ];
        assert_eq!(
            up_member(&hosts, addr("10.66.0.1:7100")),
            Some(addr("10.66.0.1:7100"))
        );
        assert_eq!(
            up_member(&hosts, addr("[fd00::3]:7100")),
            Some(addr("[fd00::3]:7100"))
        );
        // Down, another port of a member, unknown.
        assert_eq!(up_member(&hosts, addr("10.66.0.2:7100")), None);
        assert_eq!(up_member(&hosts, addr("10.66.0.1:7101")), None);
        assert_eq!(up_member(&hosts, addr("10.66.0.9:7100")), None);
        assert_eq!(up_member(&hosts, addr("127.0.0.1:7100")), None);
        assert_eq!(up_member(&[], addr("10.66.0.1:7100")), None);
    }

    #[test]
    fn an_ipv4_mapped_address_names_the_ipv4_host() {
        let hosts = [host("10.66.0.1:7100", true), host("10.66.0.2:7100", false)];
        // The employer is given the table's form.
        assert_eq!(
            up_member(&hosts, addr("[::ffff:10.66.0.1]:7100")),
            Some(addr("10.66.0.1:7100"))
        );
        assert_eq!(up_member(&hosts, addr("[::ffff:10.66.0.2]:7100")), None);
        assert_eq!(up_member(&hosts, addr("[::ffff:10.66.0.1]:7101")), None);
        // And the other way round, for a table that holds the mapped form.
        let mapped = [host("[::ffff:10.66.0.1]:7100", true)];
        assert_eq!(
            up_member(&mapped, addr("10.66.0.1:7100")),
            Some(addr("[::ffff:10.66.0.1]:7100"))
        );
        // An IPv4-compatible address (::a.b.c.d) is not the IPv4 host.
        assert_eq!(up_member(&hosts, addr("[::10.66.0.1]:7100")), None);
    }
}
