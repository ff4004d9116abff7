//! The cluster secret and the handshake that opens every connection
//! between hosts.
//!
//! The handshake is Noise's `NNpsk0` pattern (see [`crate::secure`] for
//! the channel it opens), run by the `snow` crate: the pre-shared key is
//! HMAC-SHA256 of the cluster secret under a fixed label, so the secret
//! itself never crosses the wire. The caller sends one message (its
//! ephemeral key, and a [`Message::Hello`] naming its role and front_end
//! address, encrypted under the secret); the callee answers with its own
//! ephemeral key, or with a plain `Refused` naming why (a wrong secret, a
//! role it does not serve). One round trip, after which both sides hold
//! keys that only this connection has, and switch the connection to
//! sealed records. Whoever did not take part in the handshake with the
//! secret (a relay, a replay, a host without the secret) can neither read
//! nor write on it.

use crate::channel::{Channel, ChannelError};
use crate::secure::{Secure, NOISE_PARAMS};
use crate::wire::{Greeting, IpcKind, Kind, Message, Protocol, Role, SessionKeys, MAX_HANDSHAKE};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::fmt;
use std::fs;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

type HmacSha256 = Hmac<Sha256>;

/// Shortest secret accepted, in bytes.
pub const MIN_SECRET_LEN: usize = 16;
/// Longest secret file read, in bytes.
const MAX_SECRET_LEN: u64 = 4096;

/// The label under which the Noise pre-shared key is derived from the
/// secret (a secret file may hold any number of bytes; Noise takes 32).
const PSK_LABEL: &[u8] = b"dipc noise psk 1";
/// Bound into every handshake: both sides must speak this protocol.
const PROLOGUE: &[u8] = b"dipc secure channel 1";

/// The label under which the [`VouchKey`] is derived from the secret.
const VOUCH_LABEL: &[u8] = b"dipc vouch key 1";

/// HMAC-SHA256 of `label` under `key`.
fn derive(key: &[u8], label: &[u8]) -> [u8; 32] {
    let mut mac = hmac_with(key);
    mac.update(label);
    mac.finalize().into_bytes().into()
}

fn hmac_with(key: &[u8]) -> HmacSha256 {
    // HMAC accepts keys of any length, so this cannot fail.
    match HmacSha256::new_from_slice(key) {
        Ok(m) => m,
        Err(_) => unreachable!("HMAC takes keys of any length"),
    }
}

/// What an owner host's worker vouches for when a get of one of its keys
/// from another host passed its kernel's permission check: that `uid`
/// (the caller, as its host stated it in the session) may use the
/// structure `id` of `key` (in the owner's `incarnation`) owned by the
/// host whose front_end is `owner`. The caller's dipcd makes a local
/// placeholder only against such a proof, so no user can fill a host's
/// kernel tables with placeholders of structures they may not use; a
/// proof cannot be made without the cluster secret (only the daemons and
/// their workers have it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Vouch {
    pub kind: IpcKind,
    pub key: i32,
    pub id: i32,
    pub incarnation: u64,
    pub owner: SocketAddr,
    pub uid: u32,
}

/// The key that signs and checks [`Vouch`]es, derived from the secret.
#[derive(Clone)]
pub struct VouchKey([u8; 32]);

impl fmt::Debug for VouchKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("VouchKey(..)")
    }
}

impl VouchKey {
    fn mac(&self, v: &Vouch) -> HmacSha256 {
        let mut mac = hmac_with(&self.0);
        mac.update(&[v.kind as u8]);
        mac.update(&v.key.to_be_bytes());
        mac.update(&v.id.to_be_bytes());
        mac.update(&v.incarnation.to_be_bytes());
        mac.update(v.owner.to_string().as_bytes());
        mac.update(b"|");
        mac.update(&v.uid.to_be_bytes());
        mac
    }

    pub fn sign(&self, v: &Vouch) -> [u8; 32] {
        self.mac(v).finalize().into_bytes().into()
    }

    /// Whether `tag` is this key's proof of `v` (in constant time).
    pub fn verify(&self, v: &Vouch, tag: &[u8; 32]) -> bool {
        self.mac(v).verify_slice(tag).is_ok()
    }
}

/// Why authentication or loading the secret failed.
#[derive(Debug)]
pub enum AuthError {
    /// The secret file is missing, unreadable, too open or too short.
    Secret {
        path: PathBuf,
        reason: String,
    },
    /// The peer's proof did not verify: it does not know our secret.
    WrongSecret,
    /// The peer refused us, with its reason.
    Refused(String),
    /// The peer sent a message that does not belong at this step.
    Unexpected(&'static str),
    /// The peer authenticated but asked for something this side does not
    /// serve (a role, an address).
    NotAllowed(String),
    /// The handshake failed for another reason (a malformed message).
    Noise(String),
    Channel(ChannelError),
}

impl fmt::Display for AuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AuthError::Secret { path, reason } => {
                write!(f, "cluster secret {}: {reason}", path.display())
            }
            AuthError::WrongSecret => f.write_str("authentication failed (wrong cluster secret)"),
            AuthError::Refused(r) => write!(f, "refused by peer: {r}"),
            AuthError::Unexpected(what) => write!(f, "unexpected {what} during authentication"),
            AuthError::NotAllowed(why) => f.write_str(why),
            AuthError::Noise(e) => write!(f, "handshake failed: {e}"),
            AuthError::Channel(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for AuthError {}

impl From<ChannelError> for AuthError {
    fn from(e: ChannelError) -> Self {
        AuthError::Channel(e)
    }
}

/// The cluster secret. Its bytes never appear in logs or on the wire.
#[derive(Clone)]
pub struct Secret(Vec<u8>);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

impl Secret {
    pub fn from_bytes(bytes: &[u8]) -> Result<Secret, String> {
        let trimmed = bytes.trim_ascii();
        if trimmed.len() < MIN_SECRET_LEN {
            return Err(format!(
                "is {} bytes long; at least {MIN_SECRET_LEN} are required",
                trimmed.len()
            ));
        }
        Ok(Secret(trimmed.to_vec()))
    }

    /// Reads the secret file, refusing one that group or others may read.
    pub fn load(path: &Path) -> Result<Secret, AuthError> {
        let err = |reason: String| AuthError::Secret {
            path: path.to_owned(),
            reason,
        };
        let file = fs::File::open(path).map_err(|e| err(e.to_string()))?;
        let meta = file.metadata().map_err(|e| err(e.to_string()))?;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(err(format!(
                "mode {mode:04o} lets group or others read it; run chmod 600"
            )));
        }
        let mut bytes = Vec::new();
        file.take(MAX_SECRET_LEN + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| err(e.to_string()))?;
        if bytes.len() as u64 > MAX_SECRET_LEN {
            return Err(err(format!("is longer than {MAX_SECRET_LEN} bytes")));
        }
        Secret::from_bytes(&bytes).map_err(err)
    }

    /// Reads the secret file, first creating it (mode 0600, 32 random bytes
    /// in hex) if it does not exist. Returns whether it was created.
    pub fn load_or_create(path: &Path) -> Result<(Secret, bool), AuthError> {
        let err = |reason: String| AuthError::Secret {
            path: path.to_owned(),
            reason,
        };
        let mut created = false;
        if !path.exists() {
            if let Some(dir) = path.parent() {
                fs::create_dir_all(dir)
                    .map_err(|e| err(format!("cannot create {}: {e}", dir.display())))?;
            }
            let mut raw = [0u8; 32];
            fill_random(&mut raw).map_err(|e| err(format!("no randomness: {e}")))?;
            let mut text: String = raw.iter().map(|b| format!("{b:02x}")).collect();
            text.push('\n');
            // create_new: if another daemon won the race, read its file.
            match fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
            {
                Ok(mut f) => {
                    f.write_all(text.as_bytes())
                        .map_err(|e| err(format!("cannot write: {e}")))?;
                    created = true;
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(err(format!("cannot create: {e}"))),
            }
        }
        Ok((Secret::load(path)?, created))
    }

    /// The Noise pre-shared key of this secret.
    fn psk(&self) -> [u8; 32] {
        derive(&self.0, PSK_LABEL)
    }

    /// The key that vouches for gets (see [`VouchKey`]).
    pub fn vouch_key(&self) -> VouchKey {
        VouchKey(derive(&self.0, VOUCH_LABEL))
    }

    fn noise(&self) -> Result<snow::Builder<'static>, AuthError> {
        let params = NOISE_PARAMS
            .parse()
            .map_err(|e: snow::Error| AuthError::Noise(e.to_string()))?;
        snow::Builder::new(params)
            .prologue(PROLOGUE)
            .map_err(|e| AuthError::Noise(e.to_string()))
    }

    /// A handshake state for one side of a new connection.
    fn handshake(&self, initiator: bool) -> Result<snow::HandshakeState, AuthError> {
        let psk = self.psk();
        let b = self
            .noise()?
            .psk(0, &psk)
            .map_err(|e| AuthError::Noise(e.to_string()))?;
        let hs = if initiator {
            b.build_initiator()
        } else {
            b.build_responder()
        };
        hs.map_err(|e| AuthError::Noise(e.to_string()))
    }
}

/// Fills `buf` from the kernel's random source.
pub fn fill_random(buf: &mut [u8]) -> io::Result<()> {
    let mut got = 0;
    while got < buf.len() {
        // SAFETY: the pointer and length describe the unfilled tail of buf.
        let n = unsafe { libc::getrandom(buf[got..].as_mut_ptr().cast(), buf.len() - got, 0) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        got += n as usize;
    }
    Ok(())
}

/// The keys of a finished handshake, as this side uses them.
fn split(hs: &mut snow::HandshakeState, initiator: bool) -> Secure {
    // The first key carries the initiator's frames, the second the
    // responder's.
    let (i2r, r2i) = hs.dangerously_get_raw_split();
    let (tx_key, rx_key) = if initiator { (i2r, r2i) } else { (r2i, i2r) };
    Secure::from_keys(&SessionKeys {
        tx_key,
        tx_n: 0,
        rx_key,
        rx_n: 0,
    })
}

/// The calling side of the handshake, as a state machine usable from an
/// event loop.
pub struct ClientHandshake {
    hs: snow::HandshakeState,
}

impl ClientHandshake {
    /// Returns the state and the first handshake message to send.
    pub fn start(
        secret: &Secret,
        role: Role,
        me: SocketAddr,
    ) -> Result<(ClientHandshake, Message), AuthError> {
        let mut hs = secret.handshake(true)?;
        let mut hello = Vec::new();
        Message::Hello { role, host: me }.encode_payload(&mut hello);
        let mut data = vec![0u8; MAX_HANDSHAKE];
        let n = hs
            .write_message(&hello, &mut data)
            .map_err(|e| AuthError::Noise(e.to_string()))?;
        data.truncate(n);
        Ok((ClientHandshake { hs }, Message::Handshake { data }))
    }

    /// Takes the callee's answer; on success returns the channel's keys.
    pub fn on_reply(mut self, msg: &Message) -> Result<Secure, AuthError> {
        let data = match greeting(msg)? {
            Greeting::Handshake { data } => data,
            Greeting::Refused { reason } => return Err(AuthError::Refused(reason)),
            Greeting::Error { message, .. } => return Err(AuthError::Refused(message)),
        };
        let mut payload = vec![0u8; MAX_HANDSHAKE];
        // Only a callee holding the secret produces an answer that
        // decrypts.
        self.hs
            .read_message(&data, &mut payload)
            .map_err(|_| AuthError::WrongSecret)?;
        if !self.hs.is_handshake_finished() {
            return Err(AuthError::Noise("handshake not finished".into()));
        }
        Ok(split(&mut self.hs, true))
    }
}

/// `msg` as a message of the handshake, or the error naming what came
/// instead. A copy, as the callers keep theirs: made only of a handshake
/// message (at most `MAX_HANDSHAKE` bytes of data), never of whatever
/// large frame a peer sends instead.
fn greeting(msg: &Message) -> Result<Greeting, AuthError> {
    let kind = msg.kind();
    if !Greeting::KINDS.contains(&kind) {
        return Err(AuthError::Unexpected(kind.name()));
    }
    Greeting::accept(msg.clone()).map_err(|e| AuthError::Unexpected(e.kind))
}

/// The called side's view of a finished handshake.
#[derive(Debug)]
pub struct ServerHandshake {
    pub role: Role,
    /// The front_end address the caller states (inside the handshake, so
    /// only a holder of the secret can state one; the allow-list checked
    /// the connection's source address).
    pub host: SocketAddr,
}

/// Takes the caller's first handshake message. A caller of another role
/// than `expect` is refused. On success returns what the caller stated,
/// the channel's keys and the answer to send (in plain: it is the last
/// handshake message); on failure the caller of this sends `Refused` with
/// the error's text.
pub fn accept(
    secret: &Secret,
    msg: &Message,
    expect: Role,
) -> Result<(ServerHandshake, Secure, Message), AuthError> {
    let data = match greeting(msg)? {
        Greeting::Handshake { data } => data,
        // A caller opens with its handshake; a refusal is the callee's.
        other @ (Greeting::Refused { .. } | Greeting::Error { .. }) => {
            return Err(AuthError::Unexpected(other.kind().name()))
        }
    };
    let mut hs = secret.handshake(false)?;
    let mut payload = vec![0u8; MAX_HANDSHAKE];
    // The first message's payload is encrypted under the secret: a caller
    // without it (or a corrupted message) fails here.
    let n = hs
        .read_message(&data, &mut payload)
        .map_err(|_| AuthError::WrongSecret)?;
    let Message::Hello { role, host } = Message::decode(Kind::Hello, &payload[..n])
        .map_err(|e| AuthError::Noise(format!("hello: {e}")))?
    else {
        return Err(AuthError::Unexpected("hello"));
    };
    if role != expect {
        return Err(AuthError::NotAllowed(format!(
            "a {role:?} connection is not served here (only {expect:?})"
        )));
    }
    let mut reply = vec![0u8; MAX_HANDSHAKE];
    let n = hs
        .write_message(&[], &mut reply)
        .map_err(|e| AuthError::Noise(e.to_string()))?;
    reply.truncate(n);
    if !hs.is_handshake_finished() {
        return Err(AuthError::Noise("handshake not finished".into()));
    }
    let secure = split(&mut hs, false);
    Ok((
        ServerHandshake { role, host },
        secure,
        Message::Handshake { data: reply },
    ))
}

/// Runs the calling side over a blocking channel; on success the channel
/// is secured.
pub fn client_handshake<S: Read + Write>(
    ch: &mut Channel<S>,
    secret: &Secret,
    role: Role,
    me: SocketAddr,
) -> Result<(), AuthError> {
    let (hs, hello) = ClientHandshake::start(secret, role, me)?;
    ch.send(0, &hello)?;
    let (_, reply) = ch.recv()?;
    ch.secure(hs.on_reply(&reply)?);
    Ok(())
}

/// Runs the called side over a blocking channel, answering the caller; on
/// success the channel is secured.
pub fn server_handshake<S: Read + Write>(
    ch: &mut Channel<S>,
    secret: &Secret,
    expect: Role,
) -> Result<ServerHandshake, AuthError> {
    let (_, hello) = ch.recv()?;
    match accept(secret, &hello, expect) {
        Ok((hs, secure, reply)) => {
            ch.send(0, &reply)?;
            ch.secure(secure);
            Ok(hs)
        }
        Err(e) => {
            // Best effort: the peer may already be gone.
            let _ = ch.send(
                0,
                &Message::Refused {
                    reason: e.to_string(),
                },
            );
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests;
