//! Which gets the preload makes distributed: those that carry `IPC_DIPC`,
//! and those of the keys of the policy (`$DIPC_PRELOAD_KEYS` if set, else
//! `[preload] keys` of `dipc.conf`), read once per process.

use dipc_common::config::Config;
use dipc_common::keypolicy::KeyPolicy;
use std::sync::OnceLock;

/// The variable that overrides `[preload] keys` for one program: a
/// comma-separated list of entries (`"0x1000-0x1fff,0x5a5a"`, `"all"`),
/// empty for none.
pub const ENV: &str = "DIPC_PRELOAD_KEYS";

/// `Err` when the policy could not be read: gets of a key (not
/// `IPC_PRIVATE`) then fail with `EINVAL` rather than quietly make a
/// structure that is local on each host while the administrator asked for
/// it to be shared.
static POLICY: OnceLock<Result<KeyPolicy, ()>> = OnceLock::new();

fn load() -> Result<KeyPolicy, String> {
    match std::env::var(ENV) {
        Ok(v) => KeyPolicy::parse_list(&v).map_err(|e| format!("${ENV}: {e}")),
        Err(std::env::VarError::NotUnicode(_)) => Err(format!("${ENV}: not valid UTF-8")),
        Err(std::env::VarError::NotPresent) => Config::load_default()
            .map(|c| c.preload.keys)
            .map_err(|e| e.to_string()),
    }
}

/// The policy, or `Err` (said once on standard error) if it is wrong.
pub fn get() -> Result<&'static KeyPolicy, ()> {
    POLICY
        .get_or_init(|| {
            load().map_err(|e| {
                eprintln!(
                    "dipc preload: {e}: every get of a key (not IPC_PRIVATE) fails with EINVAL \
                     until this is fixed"
                )
            })
        })
        .as_ref()
        .map_err(|_| ())
}

/// The flags a get of `key` goes to dipc with: `IPC_DIPC` added when the
/// policy covers the key; `Err(EINVAL)` if the policy is unreadable.
pub fn flags(key: i32, flags: i32) -> Result<i32, i32> {
    if key == libc::IPC_PRIVATE || flags & dipc::IPC_DIPC != 0 {
        return Ok(flags);
    }
    match get() {
        Ok(p) if p.covers(key) => Ok(flags | dipc::IPC_DIPC),
        Ok(_) => Ok(flags),
        Err(()) => Err(libc::EINVAL),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One test: the policy is read once per process.
    #[test]
    fn gets_of_policy_keys_carry_ipc_dipc() {
        std::env::set_var(ENV, "0x1000-0x1fff, 0x5a5a");
        let d = dipc::IPC_DIPC;
        assert_eq!(flags(0x1000, 0o666), Ok(0o666 | d));
        assert_eq!(flags(0x5a5a, libc::IPC_CREAT), Ok(libc::IPC_CREAT | d));
        assert_eq!(flags(0x2000, 0o666), Ok(0o666));
        assert_eq!(flags(libc::IPC_PRIVATE, 0o666), Ok(0o666));
        // IPC_DIPC asked for is kept, inside the policy or not.
        assert_eq!(flags(0x2000, 0o600 | d), Ok(0o600 | d));
    }
}
