use super::*;

#[test]
fn shmat_addresses_are_checked_and_rounded_as_by_the_kernel() {
    let lba = shmlba();
    let p = |a: usize| a as *const libc::c_void;
    assert_eq!(fixed_addr(p(0), 0), Ok(None));
    assert_eq!(fixed_addr(p(0), libc::SHM_REMAP), Err(libc::EINVAL));
    assert_eq!(fixed_addr(p(5 * lba), 0), Ok(Some(5 * lba)));
    assert_eq!(fixed_addr(p(5 * lba + 1), 0), Err(libc::EINVAL));
    assert_eq!(fixed_addr(p(5 * lba + 1), libc::SHM_RND), Ok(Some(5 * lba)));
    assert_eq!(fixed_addr(p(1), libc::SHM_RND), Ok(None));
    assert_eq!(
        fixed_addr(p(1), libc::SHM_RND | libc::SHM_REMAP),
        Err(libc::EINVAL)
    );
}

#[test]
fn a_private_segment_with_ipc_dipc_is_plain() {
    // IPC_PRIVATE is never distributed; IPC_DIPC (the kernel's
    // SHM_NORESERVE) is dropped before the call.
    let id = get(libc::IPC_PRIVATE, 4096, IPC_DIPC | 0o600).unwrap();
    assert!(!is_distributed(id));
    let info = stat(id).unwrap();
    assert_eq!(info.segsz, 4096);
    remove(id).unwrap();
}
