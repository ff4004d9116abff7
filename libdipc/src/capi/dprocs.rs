//! Distributed processes: names, calls and serving (`dipc_name_*`,
//! `dipc_call`, `dipc_serve`).

use super::{fail, io_fail};
use crate::dist::Errno;
use crate::umem;
use libc::{c_int, c_void, size_t, ssize_t};

/// A procedure's guard is false (or the initial statements wait): try
/// again after the next step.
pub const DIPC_WAIT: c_int = -1;
/// The initial statements did a step and have more to do.
pub const DIPC_STEP: c_int = 1;

/// `struct dipc_call_info` of `dipc.h`: one call as a procedure sees it.
#[repr(C)]
pub struct DipcCallInfo {
    pub caller: i64,
    pub uid: libc::uid_t,
    pub proc_name: *const libc::c_char,
    pub input: *const c_void,
    pub inlen: size_t,
    pub out: *mut c_void,
    pub outcap: size_t,
    pub outlen: size_t,
    pub phase: libc::c_uint,
}

pub type DipcProcFn = Option<unsafe extern "C" fn(*mut c_void, *mut DipcCallInfo) -> c_int>;
pub type DipcInitialFn = Option<unsafe extern "C" fn(*mut c_void, *mut libc::c_uint) -> c_int>;

/// `struct dipc_proc` of `dipc.h`: a public procedure.
#[repr(C)]
pub struct DipcProc {
    pub name: *const libc::c_char,
    pub func: DipcProcFn,
}

/// # Safety
/// `name` must be null or a NUL-terminated string.
unsafe fn c_str<'a>(name: *const libc::c_char) -> Result<&'a str, Errno> {
    if name.is_null() {
        return Err(libc::EFAULT);
    }
    // SAFETY: `name` is a NUL-terminated string (this function's contract).
    unsafe { std::ffi::CStr::from_ptr(name) }
        .to_str()
        .map_err(|_| libc::EINVAL)
}

/// `int dipc_name_register(const char *name)`.
///
/// # Safety
/// `name` must be a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn dipc_name_register(name: *const libc::c_char) -> c_int {
    // SAFETY: `name` is a NUL-terminated string (this function's contract).
    match unsafe { c_str(name) } {
        Ok(n) => crate::dprocs::register_name(n).map_or_else(io_fail, |()| 0),
        Err(e) => fail(e),
    }
}

/// `int dipc_name_release(const char *name)`.
///
/// # Safety
/// `name` must be a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn dipc_name_release(name: *const libc::c_char) -> c_int {
    // SAFETY: `name` is a NUL-terminated string (this function's contract).
    match unsafe { c_str(name) } {
        Ok(n) => crate::dprocs::release_name(n).map_or_else(io_fail, |()| 0),
        Err(e) => fail(e),
    }
}

/// `pid_d dipc_name_lookup(const char *name)`.
///
/// # Safety
/// `name` must be a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn dipc_name_lookup(name: *const libc::c_char) -> i64 {
    // SAFETY: `name` is a NUL-terminated string (this function's contract).
    match unsafe { c_str(name) } {
        Ok(n) => crate::dprocs::lookup_name(n).unwrap_or_else(io_fail),
        Err(e) => fail(e),
    }
}

/// `ssize_t dipc_call(pid_d q, const char *proc, const void *in, size_t
/// inlen, void *out, size_t outlen, int timeout_ms)`: the output's length.
///
/// # Safety
/// `proc_name` a NUL-terminated string; `input` `inlen` readable bytes and
/// `out` room for `outlen` (either may be null when its length is 0).
#[no_mangle]
pub unsafe extern "C" fn dipc_call(
    q: i64,
    proc_name: *const libc::c_char,
    input: *const c_void,
    inlen: size_t,
    out: *mut c_void,
    outlen: size_t,
    timeout_ms: c_int,
) -> ssize_t {
    // SAFETY: `proc_name` is a NUL-terminated string (this function's
    // contract).
    let name = match unsafe { c_str(proc_name) } {
        Ok(n) => n,
        Err(e) => return fail(e),
    };
    if out.is_null() && outlen != 0 {
        return fail(libc::EFAULT);
    }
    // Bounded before it is copied; a bad pointer is EFAULT (umem).
    if inlen > crate::dprocs::max_input(name) {
        return fail(libc::EMSGSIZE);
    }
    let data = match umem::read_slice(input.cast::<u8>(), inlen) {
        Ok(d) => d,
        Err(e) => return fail(e),
    };
    let timeout = u64::try_from(timeout_ms)
        .ok()
        .filter(|t| *t > 0)
        .map(std::time::Duration::from_millis);
    match crate::dprocs::call(q, name, &data, outlen, timeout) {
        Ok(r) => match umem::write_slice(out.cast::<u8>(), &r) {
            Ok(()) => r.len() as ssize_t,
            Err(e) => fail(e),
        },
        Err(e) => io_fail(e),
    }
}

/// `void dipc_serve_stop(void)`: `dipc_serve` returns after this step.
#[no_mangle]
pub extern "C" fn dipc_serve_stop() {
    crate::dprocs::stop();
}

/// The C program's state, handed to every callback.
struct CState(*mut c_void);

/// A C procedure: the answer of `f` turned into an [`Answer`].
fn c_procedure(
    name: std::ffi::CString,
    f: unsafe extern "C" fn(*mut c_void, *mut DipcCallInfo) -> c_int,
) -> impl FnMut(&mut CState, &mut crate::dprocs::Request) -> crate::dprocs::Answer {
    use crate::dprocs::Answer;
    move |st, req| {
        let mut out = vec![0u8; req.max_out];
        let mut info = DipcCallInfo {
            caller: req.caller,
            uid: req.uid,
            proc_name: name.as_ptr(),
            input: req.input.as_ptr().cast(),
            inlen: req.input.len(),
            out: out.as_mut_ptr().cast(),
            outcap: out.len(),
            outlen: 0,
            phase: req.phase,
        };
        // SAFETY: the program's callback, given its state and a call
        // whose buffers live until it returns.
        let r = unsafe { f(st.0, &mut info) };
        req.phase = info.phase;
        match r {
            0 if info.outlen <= out.len() => {
                out.truncate(info.outlen);
                Answer::Done(out)
            }
            0 => Answer::Fail(libc::E2BIG),
            DIPC_WAIT => Answer::Wait,
            e if e > 0 => Answer::Fail(e),
            _ => Answer::Fail(libc::EIO),
        }
    }
}

/// `int dipc_serve(void *state, const struct dipc_proc *procs, size_t
/// nprocs, dipc_initial_fn initial)`: runs the process (see
/// [`crate::dprocs::Process::serve`]); 0 once stopped or unregistered.
///
/// # Safety
/// `procs` must point to `nprocs` entries with NUL-terminated names;
/// the callbacks must be safe to call with `state`.
#[no_mangle]
pub unsafe extern "C" fn dipc_serve(
    state: *mut c_void,
    procs: *const DipcProc,
    nprocs: size_t,
    initial: DipcInitialFn,
) -> c_int {
    use crate::dprocs::{Process, Step};
    if procs.is_null() && nprocs != 0 {
        return fail(libc::EFAULT);
    }
    let table: &[DipcProc] = if nprocs == 0 {
        &[]
    } else {
        // SAFETY: `procs` points to `nprocs` entries (this function's
        // contract), which outlive this call.
        unsafe { std::slice::from_raw_parts(procs, nprocs) }
    };
    let mut p = Process::new(CState(state));
    for d in table {
        // SAFETY: each entry's name is NUL-terminated (this function's
        // contract).
        let (name, Some(f)) = (unsafe { c_str(d.name) }, d.func) else {
            return fail(libc::EFAULT);
        };
        let name = match name {
            Ok(n) => n.to_owned(),
            Err(e) => return fail(e),
        };
        let Ok(cname) = std::ffi::CString::new(name.clone()) else {
            return fail(libc::EINVAL);
        };
        p = p.procedure(&name, c_procedure(cname, f));
    }
    if let Some(init) = initial {
        p = p.initial(move |st, phase| {
            let mut ph: libc::c_uint = *phase;
            // SAFETY: the program's callback with its state.
            let r = unsafe { init(st.0, &mut ph) };
            *phase = ph;
            match r {
                DIPC_STEP => Step::Continue,
                DIPC_WAIT => Step::Wait,
                _ => Step::Done,
            }
        });
    }
    p.serve().map_or_else(io_fail, |_| 0)
}
