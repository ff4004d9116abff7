//! `dipcref ipcs`: every distributed structure, as ipcs(1) lists a host's.
//!
//! The keys come from the referee (an administrator's request, as for
//! `dipcref keys`); the figures from each structure's owner, over one
//! session per owner host, whose worker reads them with the kernel's
//! `*_STAT_ANY` (no read permission needed: on one host `ipcs` shows
//! every structure to anyone, and the caller's root is squashed on other
//! hosts). A segment's attach count is its manager's, over every host.

use super::{admin_client, all_keys};
use dipc::client::{Client, ClientError};
use dipc_common::config::Config;
use dipc_common::wire::{IpcKind, IpcPerm, KeyInfo, Message, Origin};
use serde_json::json;
use std::collections::HashMap;
use std::net::{SocketAddr, TcpStream};

/// What the owner said about one structure.
type Figures = Result<Message, String>;

pub fn run(config: &Config, kinds: &[IpcKind], as_json: bool) -> Result<(), ClientError> {
    let keys: Vec<KeyInfo> = all_keys(&mut admin_client(config)?)?
        .into_iter()
        .filter(|k| kinds.contains(&k.kind))
        .collect();
    let mut sessions: HashMap<SocketAddr, Result<Client<TcpStream>, String>> = HashMap::new();
    let mut rows = Vec::with_capacity(keys.len());
    for k in &keys {
        let figures = stat(config, &mut sessions, k);
        rows.push((k, figures));
    }
    if as_json {
        let mut out = serde_json::Map::new();
        for &kind in kinds {
            let list: Vec<_> = rows
                .iter()
                .filter(|(k, _)| k.kind == kind)
                .map(|(k, f)| row_json(k, f))
                .collect();
            out.insert(section(kind).0.to_owned(), list.into());
        }
        println!("{}", serde_json::Value::Object(out));
        return Ok(());
    }
    for (n, &kind) in kinds.iter().enumerate() {
        if n > 0 {
            println!();
        }
        let (_, title, figures_head) = section(kind);
        println!("------ {title} (cluster-wide) --------");
        println!(
            "{:<10} {:<24} {:>10} {:>6} {:<6} {figures_head}",
            "key", "owner", "id", "uid", "perms"
        );
        for (k, f) in rows.iter().filter(|(k, _)| k.kind == kind) {
            let head = format!(
                "{:#010x} {:<24} {:>10}",
                k.key as u32,
                k.owner.to_string(),
                k.id
            );
            match f.as_ref().map(figures) {
                Ok(Some((perm, text))) => {
                    println!("{head} {:>6} {:<6o} {text}", perm.uid, perm.mode & 0o777)
                }
                Ok(None) => println!("{head} (unexpected reply from the owner)"),
                Err(e) => println!("{head} ({e})"),
            }
        }
    }
    Ok(())
}

/// The JSON name, the table's title and its kind's columns.
fn section(kind: IpcKind) -> (&'static str, &'static str, String) {
    match kind {
        IpcKind::Msg => (
            "queues",
            "Message Queues",
            format!("{:>12} {:>10}", "used-bytes", "messages"),
        ),
        IpcKind::Sem => ("semaphores", "Semaphore Arrays", format!("{:>6}", "nsems")),
        IpcKind::Shm => (
            "segments",
            "Shared Memory Segments",
            format!("{:>12} {:>6}", "bytes", "nattch"),
        ),
    }
}

/// The owner's figures for `k`, on the session to its owner (opened once
/// per host; a host that cannot be reached fails each of its rows).
fn stat(
    config: &Config,
    sessions: &mut HashMap<SocketAddr, Result<Client<TcpStream>, String>>,
    k: &KeyInfo,
) -> Figures {
    let session = sessions
        .entry(k.owner)
        .or_insert_with(|| Client::session(config, k.owner).map_err(|e| e.to_string()));
    let c = session.as_mut().map_err(|e| e.clone())?;
    let ask = Message::IpcStatAny {
        kind: k.kind,
        id: k.id,
        origin: Origin {
            key: k.key,
            incarnation: k.incarnation,
        },
    };
    match c.call(&ask) {
        Ok(m) => Ok(m),
        Err(e) => {
            let text = e.to_string();
            // A broken session is opened again for the next row.
            if matches!(e, ClientError::Channel(_)) {
                sessions.remove(&k.owner);
            }
            Err(text)
        }
    }
}

/// The permissions and the kind's figures as table columns.
fn figures(m: &Message) -> Option<(IpcPerm, String)> {
    match m {
        Message::MsqStat { info } => {
            Some((info.perm, format!("{:>12} {:>10}", info.cbytes, info.qnum)))
        }
        Message::SemStat { info } => Some((info.perm, format!("{:>6}", info.nsems))),
        Message::ShmStat { info } => {
            Some((info.perm, format!("{:>12} {:>6}", info.segsz, info.nattch)))
        }
        _ => None,
    }
}

fn row_json(k: &KeyInfo, f: &Figures) -> serde_json::Value {
    let mut v = json!({
        "kind": k.kind.name(),
        "key": format!("{:#x}", k.key),
        "owner": k.owner.to_string(),
        "id": k.id,
    });
    let extra = match f {
        Ok(Message::MsqStat { info }) => json!({
            "uid": info.perm.uid, "gid": info.perm.gid, "mode": info.perm.mode & 0o777,
            "used_bytes": info.cbytes, "messages": info.qnum, "max_bytes": info.qbytes,
        }),
        Ok(Message::SemStat { info }) => json!({
            "uid": info.perm.uid, "gid": info.perm.gid, "mode": info.perm.mode & 0o777,
            "nsems": info.nsems,
        }),
        Ok(Message::ShmStat { info }) => json!({
            "uid": info.perm.uid, "gid": info.perm.gid, "mode": info.perm.mode & 0o777,
            "bytes": info.segsz, "nattch": info.nattch,
        }),
        Ok(other) => {
            json!({ "error": format!("unexpected {} from the owner", other.kind().name()) })
        }
        Err(e) => json!({ "error": e }),
    };
    if let (Some(v), serde_json::Value::Object(extra)) = (v.as_object_mut(), extra) {
        v.extend(extra);
    }
    v
}
