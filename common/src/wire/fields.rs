//! How each type of field is written and read: the [`Field`] trait and its
//! implementations, and the [`Codec`]s a field of the message table may
//! name instead of its type's own encoding (a bound, a sentinel).
//!
//! Every read checks that its bytes are there and returns
//! `WireError::Truncated` naming the field otherwise; every count is checked
//! against the bytes left (each item takes at least [`Field::MIN`] bytes)
//! before anything is allocated for it.

use super::{invalid, IpcKind, Role, SemArg, WireError};
use byteorder::{BigEndian, ByteOrder};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Appends fields to a payload.
pub(crate) struct Writer<'a>(pub(crate) &'a mut Vec<u8>);

impl Writer<'_> {
    pub(crate) fn raw(&mut self, v: &[u8]) {
        self.0.extend_from_slice(v);
    }
    /// A length word, then the bytes.
    pub(crate) fn bytes(&mut self, v: &[u8]) {
        (v.len() as u32).put(self);
        self.raw(v);
    }
}

/// Reads fields off a payload; every read checks the bytes are there.
pub(crate) struct Reader<'a> {
    pub(crate) buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], WireError> {
        if self.buf.len() < n {
            return Err(WireError::Truncated { field });
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }
    /// A length word, then that many bytes, borrowed.
    pub(crate) fn bytes(&mut self, field: &'static str) -> Result<&'a [u8], WireError> {
        let n = u32::get(self, field)? as usize;
        self.take(n, field)
    }
    /// A count of items each at least `min_size` bytes long; refused if the
    /// payload cannot hold that many, so a lying count allocates nothing.
    pub(crate) fn count(
        &mut self,
        field: &'static str,
        min_size: usize,
    ) -> Result<usize, WireError> {
        let n = u32::get(self, field)? as usize;
        // An item of no bytes would let any count through.
        if n.saturating_mul(min_size.max(1)) > self.buf.len() {
            return Err(WireError::Truncated { field });
        }
        Ok(n)
    }
}

/// A type that has one encoding on the wire.
pub(crate) trait Field: Sized {
    /// The fewest bytes an encoded value takes: what bounds a count of them.
    const MIN: usize;
    fn put(&self, w: &mut Writer);
    /// Reads a value; `field` names it in errors.
    fn get(r: &mut Reader, field: &'static str) -> Result<Self, WireError>;

    /// A run of values, without its count (overridden for bytes, which go
    /// in one copy).
    fn put_slice(v: &[Self], w: &mut Writer) {
        for x in v {
            x.put(w);
        }
    }
    /// `n` values, `n` already checked against the bytes left.
    fn get_vec(r: &mut Reader, n: usize, field: &'static str) -> Result<Vec<Self>, WireError> {
        let mut v = Vec::with_capacity(n);
        for _ in 0..n {
            v.push(Self::get(r, field)?);
        }
        Ok(v)
    }
}

macro_rules! big_endian {
    ($($t:ty, $n:expr, $read:ident;)*) => {$(
        impl Field for $t {
            const MIN: usize = $n;
            fn put(&self, w: &mut Writer) {
                w.raw(&self.to_be_bytes());
            }
            fn get(r: &mut Reader, field: &'static str) -> Result<Self, WireError> {
                Ok(BigEndian::$read(r.take($n, field)?))
            }
        }
    )*};
}

big_endian! {
    u16, 2, read_u16;
    i16, 2, read_i16;
    u32, 4, read_u32;
    i32, 4, read_i32;
    u64, 8, read_u64;
    i64, 8, read_i64;
}

impl Field for u8 {
    const MIN: usize = 1;
    fn put(&self, w: &mut Writer) {
        w.0.push(*self);
    }
    fn get(r: &mut Reader, field: &'static str) -> Result<Self, WireError> {
        Ok(r.take(1, field)?[0])
    }
    fn put_slice(v: &[u8], w: &mut Writer) {
        w.raw(v);
    }
    fn get_vec(r: &mut Reader, n: usize, field: &'static str) -> Result<Vec<u8>, WireError> {
        Ok(r.take(n, field)?.to_vec())
    }
}

/// One byte, 0 or 1; any other value is refused.
impl Field for bool {
    const MIN: usize = 1;
    fn put(&self, w: &mut Writer) {
        u8::from(*self).put(w);
    }
    fn get(r: &mut Reader, field: &'static str) -> Result<Self, WireError> {
        match u8::get(r, field)? {
            0 => Ok(false),
            1 => Ok(true),
            v => Err(invalid(field, format!("{v} is not a boolean"))),
        }
    }
}

/// The bytes as they are, no length word (keys, vouches).
impl<const N: usize> Field for [u8; N] {
    const MIN: usize = N;
    fn put(&self, w: &mut Writer) {
        w.raw(self);
    }
    fn get(r: &mut Reader, field: &'static str) -> Result<Self, WireError> {
        let mut out = [0u8; N];
        out.copy_from_slice(r.take(N, field)?);
        Ok(out)
    }
}

/// A count word, then the items.
impl<T: Field> Field for Vec<T> {
    const MIN: usize = 4;
    fn put(&self, w: &mut Writer) {
        (self.len() as u32).put(w);
        T::put_slice(self, w);
    }
    fn get(r: &mut Reader, field: &'static str) -> Result<Self, WireError> {
        let n = r.count(field, T::MIN)?;
        T::get_vec(r, n, field)
    }
}

/// UTF-8 bytes after a length word.
impl Field for String {
    const MIN: usize = 4;
    fn put(&self, w: &mut Writer) {
        w.bytes(self.as_bytes());
    }
    fn get(r: &mut Reader, field: &'static str) -> Result<Self, WireError> {
        let b = r.bytes(field)?;
        std::str::from_utf8(b)
            .map(str::to_owned)
            .map_err(|_| invalid(field, "not UTF-8"))
    }
}

/// A presence byte (a strict boolean), then the value if present.
impl<T: Field> Field for Option<T> {
    const MIN: usize = 1;
    fn put(&self, w: &mut Writer) {
        match self {
            None => false.put(w),
            Some(v) => {
                true.put(w);
                v.put(w);
            }
        }
    }
    fn get(r: &mut Reader, field: &'static str) -> Result<Self, WireError> {
        Ok(if bool::get(r, field)? {
            Some(T::get(r, field)?)
        } else {
            None
        })
    }
}

impl<T: Field> Field for Box<T> {
    const MIN: usize = T::MIN;
    fn put(&self, w: &mut Writer) {
        (**self).put(w);
    }
    fn get(r: &mut Reader, field: &'static str) -> Result<Self, WireError> {
        T::get(r, field).map(Box::new)
    }
}

impl<A: Field, B: Field> Field for (A, B) {
    const MIN: usize = A::MIN + B::MIN;
    fn put(&self, w: &mut Writer) {
        self.0.put(w);
        self.1.put(w);
    }
    fn get(r: &mut Reader, field: &'static str) -> Result<Self, WireError> {
        Ok((A::get(r, field)?, B::get(r, field)?))
    }
}

/// The family (4 or 6), the address's octets, the port.
impl Field for SocketAddr {
    const MIN: usize = 1 + 4 + 2;
    fn put(&self, w: &mut Writer) {
        match self.ip() {
            IpAddr::V4(ip) => {
                4u8.put(w);
                w.raw(&ip.octets());
            }
            IpAddr::V6(ip) => {
                6u8.put(w);
                w.raw(&ip.octets());
            }
        }
        self.port().put(w);
    }
    fn get(r: &mut Reader, field: &'static str) -> Result<Self, WireError> {
        let ip = match u8::get(r, field)? {
            4 => IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::get(r, field)?)),
            6 => IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::get(r, field)?)),
            v => return Err(invalid(field, format!("unknown address family {v}"))),
        };
        Ok(SocketAddr::new(ip, u16::get(r, field)?))
    }
}

impl Field for IpcKind {
    const MIN: usize = 1;
    fn put(&self, w: &mut Writer) {
        (*self as u8).put(w);
    }
    fn get(r: &mut Reader, field: &'static str) -> Result<Self, WireError> {
        kind_code(u8::get(r, field)?, field)
    }
}

pub(crate) fn kind_code(v: u8, field: &'static str) -> Result<IpcKind, WireError> {
    match v {
        1 => Ok(IpcKind::Msg),
        2 => Ok(IpcKind::Sem),
        3 => Ok(IpcKind::Shm),
        v => Err(invalid(field, format!("unknown IPC kind {v}"))),
    }
}

impl Field for Role {
    const MIN: usize = 1;
    fn put(&self, w: &mut Writer) {
        (*self as u8).put(w);
    }
    fn get(r: &mut Reader, field: &'static str) -> Result<Self, WireError> {
        match u8::get(r, field)? {
            1 => Ok(Role::Host),
            2 => Ok(Role::Employer),
            v => Err(invalid(field, format!("unknown role {v}"))),
        }
    }
}

/// A tag byte (0 none, 1 `SETVAL`, 2 `SETALL`, 3 `IPC_SET`), then the
/// argument. Written by hand: an enum with data, the only one on the wire.
impl Field for SemArg {
    const MIN: usize = 1;
    fn put(&self, w: &mut Writer) {
        match self {
            SemArg::None => 0u8.put(w),
            SemArg::Val(v) => {
                1u8.put(w);
                v.put(w);
            }
            SemArg::All(vals) => {
                2u8.put(w);
                vals.put(w);
            }
            SemArg::Set(s) => {
                3u8.put(w);
                s.put(w);
            }
        }
    }
    fn get(r: &mut Reader, field: &'static str) -> Result<Self, WireError> {
        Ok(match u8::get(r, field)? {
            0 => SemArg::None,
            1 => SemArg::Val(i32::get(r, "arg.val")?),
            2 => SemArg::All(Vec::get(r, "arg.all")?),
            3 => SemArg::Set(Field::get(r, "arg.set")?),
            v => return Err(invalid(field, format!("unknown semctl argument {v}"))),
        })
    }
}

/// How one field of the table is encoded: its type's own encoding
/// ([`Plain`]) unless the table names another codec for it.
pub(crate) trait Codec<T> {
    const MIN: usize;
    fn put(v: &T, w: &mut Writer);
    fn get(r: &mut Reader, field: &'static str) -> Result<T, WireError>;
}

/// The field type's own encoding.
pub(crate) struct Plain;

impl<T: Field> Codec<T> for Plain {
    const MIN: usize = T::MIN;
    fn put(v: &T, w: &mut Writer) {
        v.put(w)
    }
    fn get(r: &mut Reader, field: &'static str) -> Result<T, WireError> {
        T::get(r, field)
    }
}

/// A list of at most `N` items, or a string of at most `N` bytes: a longer
/// one is refused (`Invalid`) once its count is read, before allocation.
pub(crate) struct Max<const N: usize>;

impl<T: Field, const N: usize> Codec<Vec<T>> for Max<N> {
    const MIN: usize = 4;
    fn put(v: &Vec<T>, w: &mut Writer) {
        v.put(w)
    }
    fn get(r: &mut Reader, field: &'static str) -> Result<Vec<T>, WireError> {
        let n = r.count(field, T::MIN)?;
        if n > N {
            return Err(invalid(field, format!("{n} items (at most {N})")));
        }
        T::get_vec(r, n, field)
    }
}

impl<const N: usize> Codec<String> for Max<N> {
    const MIN: usize = 4;
    fn put(v: &String, w: &mut Writer) {
        v.put(w)
    }
    fn get(r: &mut Reader, field: &'static str) -> Result<String, WireError> {
        let n = r.count(field, 1)?;
        if n > N {
            return Err(invalid(field, format!("{n} bytes (at most {N})")));
        }
        let b = r.take(n, field)?;
        std::str::from_utf8(b)
            .map(str::to_owned)
            .map_err(|_| invalid(field, "not UTF-8"))
    }
}

/// An optional `u16` as one `u16`, `u16::MAX` standing for none (a unit
/// run's writer: a host index never reaches it).
pub(crate) struct MaxIsNone;

impl Codec<Option<u16>> for MaxIsNone {
    const MIN: usize = 2;
    fn put(v: &Option<u16>, w: &mut Writer) {
        v.unwrap_or(u16::MAX).put(w)
    }
    fn get(r: &mut Reader, field: &'static str) -> Result<Option<u16>, WireError> {
        Ok(match u16::get(r, field)? {
            u16::MAX => None,
            v => Some(v),
        })
    }
}

/// `ListKeys`'s starting point: the IPC kind's code (0 for none, from the
/// first key) and the key (0 when none), always five bytes.
pub(crate) struct KeyAfter;

impl Codec<Option<(IpcKind, i32)>> for KeyAfter {
    const MIN: usize = 5;
    fn put(v: &Option<(IpcKind, i32)>, w: &mut Writer) {
        let (code, key) = v.map_or((0, 0), |(k, key)| (k as u8, key));
        code.put(w);
        key.put(w);
    }
    fn get(r: &mut Reader, field: &'static str) -> Result<Option<(IpcKind, i32)>, WireError> {
        let code = u8::get(r, field)?;
        let key = i32::get(r, field)?;
        match code {
            0 => Ok(None),
            v => Ok(Some((kind_code(v, field)?, key))),
        }
    }
}

/// A value of each field type with every part present (lists of two,
/// options set), from which the tests build a message of every kind.
#[cfg(test)]
pub(crate) trait Sample {
    fn sample() -> Self;
}

#[cfg(test)]
mod samples {
    use super::*;

    macro_rules! sample {
        ($($t:ty = $v:expr;)*) => {$(
            impl Sample for $t {
                fn sample() -> Self {
                    $v
                }
            }
        )*};
    }

    sample! {
        u8 = 0xa5;
        u16 = 0x1234;
        i16 = -2;
        u32 = 0xdead_beef;
        i32 = -7;
        u64 = u64::MAX - 1;
        i64 = i64::MIN + 3;
        bool = true;
        String = "sample ✓".into();
        SocketAddr = "[fd00::5]:7101".parse().unwrap_or_else(|_| unreachable!());
        IpcKind = IpcKind::Sem;
        Role = Role::Employer;
        SemArg = SemArg::All(Sample::sample());
    }

    impl<const N: usize> Sample for [u8; N] {
        fn sample() -> Self {
            [0x3c; N]
        }
    }
    impl<T: Sample> Sample for Vec<T> {
        fn sample() -> Self {
            vec![T::sample(), T::sample()]
        }
    }
    impl<T: Sample> Sample for Option<T> {
        fn sample() -> Self {
            Some(T::sample())
        }
    }
    impl<T: Sample> Sample for Box<T> {
        fn sample() -> Self {
            Box::new(T::sample())
        }
    }
    impl<A: Sample, B: Sample> Sample for (A, B) {
        fn sample() -> Self {
            (A::sample(), B::sample())
        }
    }
}
