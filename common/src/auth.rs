//! The cluster secret and the challenge–response that every daemon-to-daemon
//! connection passes before it carries work.
//!
//! Both sides prove they know the secret without sending it: the caller
//! sends a fresh nonce in `Hello`; the callee answers `Challenge` with its own
//! nonce and HMAC-SHA256(secret, "dipc-server" ‖ caller nonce ‖ callee nonce);
//! the caller answers `Proof` with HMAC-SHA256(secret, "dipc-client" ‖ callee
//! nonce ‖ caller nonce); the callee replies `Welcome` or `Refused`. The
//! labels differ per direction so that one side's proof can never be
//! reflected back as the other's. The caller always sends its proof, even
//! when the callee's did not verify, so that the callee can log *why* it
//! refused (a wrong secret), which is what an administrator needs to see.
//!
//! This authenticates peers; it does not encrypt. A cluster whose links can
//! be tampered with needs a private network or a tunnel underneath.

use crate::channel::{Channel, ChannelError};
use crate::wire::{Message, Role, NONCE_LEN};
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

const SERVER_LABEL: &[u8] = b"dipc-server";
const CLIENT_LABEL: &[u8] = b"dipc-client";

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

    fn proof(&self, label: &[u8], first: &[u8], second: &[u8]) -> HmacSha256 {
        // HMAC accepts keys of any length, so this cannot fail.
        let mut mac = match HmacSha256::new_from_slice(&self.0) {
            Ok(m) => m,
            Err(_) => unreachable!("HMAC takes keys of any length"),
        };
        mac.update(label);
        mac.update(first);
        mac.update(second);
        mac
    }

    fn sign(&self, label: &[u8], first: &[u8], second: &[u8]) -> [u8; NONCE_LEN] {
        self.proof(label, first, second)
            .finalize()
            .into_bytes()
            .into()
    }

    fn verify(&self, label: &[u8], first: &[u8], second: &[u8], proof: &[u8]) -> bool {
        // verify_slice compares in constant time.
        self.proof(label, first, second).verify_slice(proof).is_ok()
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

fn nonce() -> io::Result<[u8; NONCE_LEN]> {
    let mut n = [0u8; NONCE_LEN];
    fill_random(&mut n)?;
    Ok(n)
}

/// The calling side of the handshake, as a state machine usable from an
/// event loop.
pub struct ClientHandshake {
    nonce: [u8; NONCE_LEN],
    peer_ok: bool,
}

impl ClientHandshake {
    /// Returns the state and the `Hello` to send.
    pub fn start(role: Role, me: SocketAddr) -> io::Result<(ClientHandshake, Message)> {
        let nonce = nonce()?;
        Ok((
            ClientHandshake {
                nonce,
                peer_ok: false,
            },
            Message::Hello {
                role,
                host: me,
                nonce,
            },
        ))
    }

    /// Takes the callee's `Challenge`; returns the `Proof` to send.
    pub fn on_challenge(&mut self, secret: &Secret, msg: &Message) -> Result<Message, AuthError> {
        match msg {
            Message::Challenge { nonce, proof } => {
                self.peer_ok = secret.verify(SERVER_LABEL, &self.nonce, nonce, proof);
                Ok(Message::Proof {
                    proof: secret.sign(CLIENT_LABEL, nonce, &self.nonce),
                })
            }
            other => Err(refusal_or_unexpected(other)),
        }
    }

    /// Takes the callee's verdict.
    pub fn on_verdict(&self, msg: &Message) -> Result<(), AuthError> {
        match msg {
            Message::Welcome if self.peer_ok => Ok(()),
            Message::Welcome => Err(AuthError::WrongSecret),
            other => Err(refusal_or_unexpected(other)),
        }
    }
}

fn refusal_or_unexpected(msg: &Message) -> AuthError {
    match msg {
        Message::Refused { reason } => AuthError::Refused(reason.clone()),
        Message::Error { message, .. } => AuthError::Refused(message.clone()),
        other => AuthError::Unexpected(other.kind().name()),
    }
}

/// The called side of the handshake.
pub struct ServerHandshake {
    pub role: Role,
    /// The front_end address the caller claims (its source address is what
    /// the allow-list checked).
    pub host: SocketAddr,
    client_nonce: [u8; NONCE_LEN],
    server_nonce: [u8; NONCE_LEN],
}

impl ServerHandshake {
    /// Takes the caller's `Hello`; returns the state and the `Challenge`.
    pub fn on_hello(
        secret: &Secret,
        msg: &Message,
    ) -> Result<(ServerHandshake, Message), AuthError> {
        let Message::Hello { role, host, nonce } = msg else {
            return Err(AuthError::Unexpected(msg.kind().name()));
        };
        let server_nonce = self::nonce().map_err(|e| AuthError::Channel(e.into()))?;
        let proof = secret.sign(SERVER_LABEL, nonce, &server_nonce);
        Ok((
            ServerHandshake {
                role: *role,
                host: *host,
                client_nonce: *nonce,
                server_nonce,
            },
            Message::Challenge {
                nonce: server_nonce,
                proof,
            },
        ))
    }

    /// Checks the caller's `Proof`. The caller of this sends `Welcome` on
    /// success and `Refused` with the error's text on failure.
    pub fn on_proof(&self, secret: &Secret, msg: &Message) -> Result<(), AuthError> {
        let Message::Proof { proof } = msg else {
            return Err(AuthError::Unexpected(msg.kind().name()));
        };
        if secret.verify(CLIENT_LABEL, &self.server_nonce, &self.client_nonce, proof) {
            Ok(())
        } else {
            Err(AuthError::WrongSecret)
        }
    }
}

/// Runs the calling side over a blocking channel.
pub fn client_handshake<S: Read + Write>(
    ch: &mut Channel<S>,
    secret: &Secret,
    role: Role,
    me: SocketAddr,
) -> Result<(), AuthError> {
    let (mut hs, hello) = ClientHandshake::start(role, me).map_err(ChannelError::from)?;
    ch.send(0, &hello)?;
    let (_, challenge) = ch.recv()?;
    let proof = hs.on_challenge(secret, &challenge)?;
    ch.send(0, &proof)?;
    let (_, verdict) = ch.recv()?;
    hs.on_verdict(&verdict)
}

/// Runs the called side over a blocking channel, sending the verdict.
pub fn server_handshake<S: Read + Write>(
    ch: &mut Channel<S>,
    secret: &Secret,
) -> Result<ServerHandshake, AuthError> {
    let (_, hello) = ch.recv()?;
    let (hs, challenge) = ServerHandshake::on_hello(secret, &hello)?;
    ch.send(0, &challenge)?;
    let (_, proof) = ch.recv()?;
    match hs.on_proof(secret, &proof) {
        Ok(()) => {
            ch.send(0, &Message::Welcome)?;
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
mod tests {
    use super::*;
    use std::os::unix::net::UnixStream;

    fn run(
        client_secret: &[u8],
        server_secret: &[u8],
    ) -> (Result<(), AuthError>, Result<(), AuthError>) {
        let (a, b) = UnixStream::pair().unwrap();
        let cs = Secret::from_bytes(client_secret).unwrap();
        let ss = Secret::from_bytes(server_secret).unwrap();
        let server = std::thread::spawn(move || {
            let mut ch = Channel::new(b, 4096);
            server_handshake(&mut ch, &ss).map(|_| ())
        });
        let mut ch = Channel::new(a, 4096);
        let me: SocketAddr = "10.0.0.1:7100".parse().unwrap();
        let c = client_handshake(&mut ch, &cs, Role::Host, me);
        (c, server.join().unwrap())
    }

    #[test]
    fn same_secret_authenticates() {
        let (c, s) = run(b"0123456789abcdef0123", b"0123456789abcdef0123\n");
        assert!(c.is_ok(), "{c:?}");
        assert!(s.is_ok(), "{s:?}");
    }

    #[test]
    fn wrong_secret_is_refused_on_both_sides() {
        let (c, s) = run(b"0123456789abcdef0123", b"0123456789abcdef0124");
        assert!(matches!(s, Err(AuthError::WrongSecret)), "{s:?}");
        match c {
            Err(AuthError::Refused(r)) => assert!(r.contains("wrong cluster secret"), "{r}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn short_secret_is_refused() {
        assert!(Secret::from_bytes(b"short\n").is_err());
    }

    #[test]
    fn secret_file_created_once_with_mode_0600() {
        let dir = std::env::temp_dir().join(format!("dipc-secret-test-{}", std::process::id()));
        let path = dir.join("sub/secret");
        let _ = fs::remove_dir_all(&dir);
        let (s1, created) = Secret::load_or_create(&path).unwrap();
        assert!(created);
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let (s2, created) = Secret::load_or_create(&path).unwrap();
        assert!(!created);
        assert_eq!(s1.0, s2.0);
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let e = Secret::load(&path).unwrap_err().to_string();
        assert!(e.contains("chmod 600"), "{e}");
        fs::remove_dir_all(&dir).unwrap();
    }
}
