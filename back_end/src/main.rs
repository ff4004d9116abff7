//! `dipcd`: the per-host dipc daemon, and the back_end role.
//!
//! `dipcd -c /etc/dipc/dipc.conf` reads the configuration, takes the
//! runtime directory's lock, loads (or on first start creates) the cluster
//! secret, and forks the host's long-lived processes:
//!
//! - the front_end (`dipc-front-end`), which owns the host's TCP port and
//!   forks a worker per incoming connection;
//! - on the arbiter host, the referee (`dipc-referee`).
//!
//! The process itself then becomes the back_end: it keeps this host joined
//! to the referee (see [`link`]) and serves local applications and
//! `dipcref` on the Unix socket `dipcd.sock`, forking an employer to open
//! (and hand over) each connection an application needs to another host's
//! worker.
//!
//! It also keeps this host's part of the cluster's process table (see
//! [`pids`]): it registers local processes with the referee (`regist`),
//! watches each through a pidfd, and unregisters it when it exits.
//!
//! Supervision: if the front_end or the referee dies, the back_end stops
//! the whole suite and exits non-zero (a host is either wholly up or wholly
//! down, never half-alive); every child gets SIGTERM from the kernel if the
//! back_end itself dies. SIGTERM or SIGINT stops everything and removes the
//! sockets. Logs go to stderr through `env_logger` (`RUST_LOG`, default
//! `info`).
//!
//! This file is the command line and the start-up. The daemon itself is
//! [`daemon`] (its state, a `Handler` of `dipc_common::reactor`, which
//! runs the loop), with [`outbox`] (what it asks of the reactor, handed over
//! after each event) and one module per concern:
//! [`requests`] (what each local request does, and the referee's answers),
//! [`creations`] (keys being created under a grant), [`registrations`],
//! [`keys`] (placeholders, owned keys claimed at each join), [`managers`]
//! (shm managers), [`sessions`] (employers), [`moves`], [`stats`] and
//! [`supervise`] (children, reaping, shutdown).

mod creations;
mod daemon;
mod exporter;
mod grants;
mod keys;
mod link;
mod load;
mod managers;
mod moves;
mod outbox;
mod owned;
mod pids;
mod placeholders;
mod registrations;
mod requests;
mod sessions;
mod stats;
mod supervise;

use clap::Parser;
use daemon::{Daemon, FIRST_SCRAPER, LOCAL_REQUEST_MAX, MAX_CLIENTS, METRICS_LISTENER};
use dipc_back_end::cli::Args;
use dipc_common::auth::Secret;
use dipc_common::config::Config;
use dipc_common::incarnation;
use dipc_common::reactor::{self, Listener, Reactor};
use dipc_common::sys;
use log::{error, info};
use mio::net::UnixListener;
use nix::sys::signal::Signal;
use std::io;
use std::os::fd::AsRawFd;
use std::process::ExitCode;
use supervise::{shutdown, Child};

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    // panic = "abort" for dipcd and every role forked from it (see
    // sys::abort_on_panic for why it is not a profile setting).
    sys::abort_on_panic();
    let args = Args::parse();
    let path = args.config.unwrap_or_else(Config::default_path);
    let config = match Config::load(&path) {
        Ok(c) => c,
        Err(e) => {
            error!("{e}");
            return ExitCode::from(2);
        }
    };
    match run(&config) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            error!("{e}");
            ExitCode::from(1)
        }
    }
}

fn run(config: &Config) -> io::Result<u8> {
    let lock = sys::lock_runtime_dir(&config.runtime_dir)?;
    let (secret, created) = Secret::load_or_create(&config.secret_file)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
    if created {
        info!(
            "generated a new cluster secret in {} (copy it to every host)",
            config.secret_file.display()
        );
    }
    // Block the signals before forking, so none is lost between a fork and
    // the child's own signalfd. The link to the referee, besides the
    // local clients' listener, may hold one connection more.
    let mut r = Reactor::new(MAX_CLIENTS + 1)?;
    r.watch_signals()?;
    let listener = sys::bind_unix(&config.back_end_socket(), 0o666, None)?;
    info!(
        "dipcd starting: host {}, referee {}{}",
        config.front_end_addr(),
        config.referee_addr(),
        if config.host.arbiter {
            " (this host)"
        } else {
            ""
        }
    );

    // The front_end and the referee keep the runtime lock (and nothing
    // else of ours): they live as long as the host's daemons, and the
    // directory stays locked until the last of them is gone. The
    // short-lived roles (employers, shm managers, workers) do not keep it:
    // a worker runs as a remote user, who must not be able to keep the
    // directory locked.
    let keep = [lock.as_raw_fd()];
    let mut children = Vec::new();
    if config.host.arbiter {
        let s = secret.clone();
        let pid = sys::fork_child("dipc-referee", Signal::SIGTERM, &keep, move || {
            dipc_referee::run(config, s)
        })?;
        children.push(Child {
            name: "referee",
            pid,
        });
    }
    // Before the front_end is forked: its workers check every remote call
    // against it.
    let incarnation = incarnation::load_or_create(&config.runtime_dir.join("incarnation"))
        .map_err(|e| io::Error::new(e.kind(), format!("this host's IPC incarnation: {e}")))?;
    info!("IPC namespace incarnation {incarnation:#x}");
    let pid = sys::fork_child("dipc-front-end", Signal::SIGTERM, &keep, || {
        dipc_front_end::run(config, &secret, incarnation)
    })?;
    children.push(Child {
        name: "front_end",
        pid,
    });

    // A request is one small frame, sent at once: a client that begins
    // one and does not finish it within request_ms is dropped.
    let local = reactor::Options {
        stall: Some(config.timeouts.request),
        ..reactor::Options::server(LOCAL_REQUEST_MAX, 2)
    };
    r.listen(Listener::Unix(UnixListener::from_std(listener)), local)?;
    let link = r.outgoing(reactor::Options {
        dead_after: Some(config.timeouts.heartbeat_timeout),
        ..reactor::Options::new(config.max_frame)
    })?;
    let mut d = Daemon::new(config, secret, incarnation, (pid.as_raw(), children), link)?;
    if let Some(addr) = config.metrics.listen {
        let ex = exporter::Exporter::bind(addr, &mut r, METRICS_LISTENER, FIRST_SCRAPER)
            .map_err(|e| io::Error::new(e.kind(), format!("metrics.listen {addr}: {e}")))?;
        info!("serving metrics on http://{}/metrics", ex.local_addr()?);
        d.exporter = Some(ex);
    }

    let code = match r.run(&mut d) {
        Ok(code) => code,
        Err(e) => {
            error!("poll: {e}");
            1
        }
    };
    let _ = sys::notify_service_manager("STOPPING=1");
    d.placeholders.clear();
    // The managers get SIGTERM from the kernel when dipcd exits.
    for sid in d.managers.keys() {
        let _ = std::fs::remove_file(config.shm_socket(*sid));
    }
    d.pids.clear(&mut r);
    shutdown(&d.children);
    let _ = std::fs::remove_file(config.back_end_socket());
    info!("dipcd stopped");
    Ok(u8::try_from(code).unwrap_or(1))
}

#[cfg(test)]
mod tests;
