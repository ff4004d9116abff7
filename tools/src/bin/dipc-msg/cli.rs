//! The command line: the queue operations and the stress sides, with the
//! number, key and mode parsers they take. Kept apart so that `run`
//! reads as what each command does.

use clap::{Args, Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "dipc-msg",
    version,
    about = "Use System V message queues, local or distributed across a dipc cluster"
)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Subcommand)]
pub(crate) enum Command {
    /// msgget: look up (or create) a queue and print its id
    Get {
        /// Queue key: decimal, 0x hexadecimal or 0o octal
        #[arg(value_parser = parse_key, allow_negative_numbers = true)]
        key: i32,
        /// IPC_CREAT: create the queue if the key is free
        #[arg(long)]
        create: bool,
        /// IPC_EXCL: fail with EEXIST if the queue exists (with --create)
        #[arg(long)]
        excl: bool,
        /// Permission bits [default: 0666 with --create, else 0]
        #[arg(long, value_parser = parse_mode)]
        mode: Option<u32>,
        /// A plain queue of this host (msgget without IPC_DIPC)
        #[arg(long)]
        local: bool,
    },
    /// msgsnd: send one message
    Send {
        #[command(flatten)]
        queue: Queue,
        /// Message type (> 0 for the kernel to accept it)
        #[arg(value_name = "TYPE", allow_negative_numbers = true)]
        mtype: i64,
        /// Message text
        text: String,
        /// Repeat TEXT (or NUL bytes if it is empty) to exactly N bytes
        #[arg(long, value_name = "N")]
        fill: Option<usize>,
        /// IPC_NOWAIT: fail with EAGAIN instead of waiting for room
        #[arg(long)]
        nowait: bool,
    },
    /// msgrcv: receive one message and print `TYPE TEXT`
    Recv {
        #[command(flatten)]
        queue: Queue,
        /// msgtyp: 0 any, T > 0 the first of type T, T < 0 the lowest type <= |T|
        #[arg(
            long = "type",
            value_name = "T",
            default_value_t = 0,
            allow_negative_numbers = true
        )]
        mtype: i64,
        /// MSG_EXCEPT: the first message whose type is not T
        #[arg(long)]
        except: bool,
        /// MSG_NOERROR: truncate a longer text instead of failing with E2BIG
        #[arg(long)]
        noerror: bool,
        /// Largest text to accept (msgsz)
        #[arg(long, value_name = "N", default_value_t = 8192)]
        size: usize,
        /// IPC_NOWAIT: fail with ENOMSG instead of waiting
        #[arg(long)]
        nowait: bool,
        /// Print only the text's length instead of the text
        #[arg(long)]
        len: bool,
    },
    /// msgctl IPC_STAT: show a queue's state
    Stat {
        #[command(flatten)]
        queue: Queue,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// msgctl IPC_SET: change a queue's mode, owner or size limit
    Set {
        #[command(flatten)]
        queue: Queue,
        /// New permission bits (e.g. 0600)
        #[arg(long, value_parser = parse_mode)]
        mode: Option<u32>,
        /// New msg_qbytes (bytes the queue may hold)
        #[arg(long, value_name = "N")]
        qbytes: Option<u64>,
        /// New owner uid
        #[arg(long)]
        uid: Option<u32>,
        /// New owner gid
        #[arg(long)]
        gid: Option<u32>,
    },
    /// msgctl IPC_RMID: remove a queue (cluster-wide for a distributed one)
    Rm {
        #[command(flatten)]
        queue: Queue,
    },
    /// Send this host's dipcd one of the notices the library sends about a
    /// distributed queue's key, as this process; for checking that forged
    /// notices are refused. `free`: the queue was removed, free KEY (EBUSY
    /// while KEY still names queue ID on this host, EPERM from a host that
    /// does not own it). `commit`, `abort`: this process made (or failed to
    /// make) the queue it was granted to create (EPERM: no such grant).
    /// `claim`: ask to create KEY and exit without creating it, as a
    /// creator that dies would (prints the reply).
    KeyNotice {
        #[arg(value_parser = ["free", "commit", "abort", "claim"])]
        notice: String,
        /// Queue key (decimal, 0x hexadecimal or 0o octal)
        #[arg(value_parser = parse_key)]
        key: i32,
        /// The queue's id on its owner (free, commit)
        #[arg(long, default_value_t = 0)]
        id: i32,
    },
    /// Many messages with checked contents (see the program's docs)
    Stress {
        #[command(subcommand)]
        command: Stress,
    },
}

/// How the queue is named.
#[derive(Args)]
pub(crate) struct Queue {
    /// Queue key (decimal, 0x hexadecimal or 0o octal), or its id with --id
    #[arg(value_parser = parse_key, allow_negative_numbers = true)]
    pub(crate) key: i32,
    /// KEY is a queue id (as `dipc-msg get` printed it on this host)
    #[arg(long)]
    pub(crate) id: bool,
    /// A plain queue of this host (msgget without IPC_DIPC)
    #[arg(long)]
    pub(crate) local: bool,
}

#[derive(Subcommand)]
pub(crate) enum Stress {
    /// Send COUNT messages of type PRODUCER with sequence numbers 1..=COUNT
    Produce {
        #[command(flatten)]
        queue: Queue,
        /// This producer's number (the messages' type), 1 or more
        #[arg(long, value_parser = clap::value_parser!(i64).range(1..))]
        producer: i64,
        /// How many messages to send
        #[arg(long)]
        count: u64,
        /// Seed of the random sizes and contents
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Largest text, 16 or more
        #[arg(long, default_value_t = 8192, value_parser = clap::value_parser!(u64).range(16..))]
        max_size: u64,
        /// Create the queue (mode 0666) if the key is free
        #[arg(long)]
        create: bool,
        /// Interrupt the sends with SIGALRM every N microseconds (a send
        /// that fails with EINTR is sent again)
        #[arg(long, value_name = "N", default_value_t = 0)]
        interrupt_us: u64,
        /// Sleep N microseconds after each send (so that receivers block)
        #[arg(long, value_name = "N", default_value_t = 0)]
        pause_us: u64,
    },
    /// Receive COUNT messages from each producer and check them
    Consume {
        #[command(flatten)]
        queue: Queue,
        /// The producers' numbers, comma-separated (e.g. 1,2)
        #[arg(long, value_delimiter = ',', required = true)]
        producers: Vec<i64>,
        /// Messages expected from each producer
        #[arg(long)]
        count: u64,
        /// Give up when no message arrives for this many seconds
        #[arg(long, value_name = "SECS", default_value_t = 60,
              value_parser = clap::value_parser!(u64).range(1..))]
        idle_timeout: u64,
        /// Create the queue (mode 0666) if the key is free
        #[arg(long)]
        create: bool,
        /// Interrupt the receives with SIGALRM every N microseconds (a
        /// receive that fails with EINTR is tried again)
        #[arg(long, value_name = "N", default_value_t = 0)]
        interrupt_us: u64,
    },
}

fn parse_int(s: &str) -> Result<i64, String> {
    let t = s.trim();
    let (neg, t) = match t.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, t),
    };
    let lower = t.to_ascii_lowercase();
    let v = if let Some(h) = lower.strip_prefix("0x") {
        i64::from_str_radix(h, 16)
    } else if let Some(o) = lower.strip_prefix("0o") {
        i64::from_str_radix(o, 8)
    } else {
        lower.parse::<i64>()
    }
    .map_err(|e| format!("{s:?} is not a number: {e}"))?;
    Ok(if neg { -v } else { v })
}

/// A key or id: any i32, or a 32-bit unsigned value (0xdeadbeef).
fn parse_key(s: &str) -> Result<i32, String> {
    let v = parse_int(s)?;
    if let Ok(k) = i32::try_from(v) {
        Ok(k)
    } else if let Ok(u) = u32::try_from(v) {
        Ok(u as i32)
    } else {
        Err(format!("{s} does not fit in 32 bits"))
    }
}

/// Permission bits, octal with or without a leading 0 or 0o.
fn parse_mode(s: &str) -> Result<u32, String> {
    let t = s.trim();
    let t = t.strip_prefix("0o").unwrap_or(t);
    let m = u32::from_str_radix(t, 8).map_err(|e| format!("{s:?} is not an octal mode: {e}"))?;
    if m > 0o777 {
        return Err(format!("mode {s} has bits beyond 0777"));
    }
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_modes_parse() {
        assert_eq!(parse_key("0x1234"), Ok(0x1234));
        assert_eq!(parse_key("4660"), Ok(4660));
        assert_eq!(parse_key("0o17"), Ok(15));
        assert_eq!(parse_key("0xdeadbeef"), Ok(0xdead_beef_u32 as i32));
        assert_eq!(parse_key("-1"), Ok(-1));
        assert!(parse_key("0x1_0000_0000").is_err());
        assert!(parse_key("zz").is_err());
        assert_eq!(parse_mode("0666"), Ok(0o666));
        assert_eq!(parse_mode("600"), Ok(0o600));
        assert!(parse_mode("0800").is_err());
        assert!(parse_mode("01777").is_err());
    }
}
