//! The two macros that turn declarations into codecs: `record!` for the
//! structs that travel inside messages, `messages!` for the message table
//! (see `table.rs`). A field is declared `name: Type`, encoded with the
//! type's own [`Field`](super::fields::Field) encoding, or
//! `name: Type as Codec` to name another [`Codec`](super::fields::Codec)
//! (a bound, a sentinel). Fields go on the wire in the order they are
//! declared; nothing else about the wire format is written here.

/// The codec of a table field: the one it names, else its type's own.
macro_rules! wire_codec {
    () => {
        $crate::wire::fields::Plain
    };
    ($c:ty) => {
        $c
    };
}

/// Declares structs and their [`Field`](super::fields::Field) encoding: the
/// fields in order, each named `prefix.field` in errors, the minimum size
/// the sum of the fields' minimums.
macro_rules! record {
    ($(
        $(#[$m:meta])*
        pub struct $name:ident ($prefix:literal) {
            $( $(#[$fm:meta])* pub $f:ident : $t:ty $(as $c:ty)? ),* $(,)?
        }
    )*) => {$(
        $(#[$m])*
        pub struct $name { $( $(#[$fm])* pub $f: $t, )* }

        impl $crate::wire::fields::Field for $name {
            const MIN: usize =
                0 $( + <wire_codec!($($c)?) as $crate::wire::fields::Codec<$t>>::MIN )*;
            fn put(&self, w: &mut $crate::wire::fields::Writer) {
                $( <wire_codec!($($c)?) as $crate::wire::fields::Codec<$t>>::put(&self.$f, w); )*
            }
            fn get(
                r: &mut $crate::wire::fields::Reader,
                _field: &'static str,
            ) -> Result<Self, $crate::wire::WireError> {
                Ok($name { $(
                    $f: <wire_codec!($($c)?) as $crate::wire::fields::Codec<$t>>::get(
                        r,
                        concat!($prefix, ".", stringify!($f)),
                    )?,
                )* })
            }
        }

        #[cfg(test)]
        impl $crate::wire::fields::Sample for $name {
            fn sample() -> Self {
                $name { $( $f: $crate::wire::fields::Sample::sample(), )* }
            }
        }
    )*};
}

/// Declares the protocol from its table: the [`Kind`](super::Kind) numbers,
/// the [`Message`](super::Message) enum, `Message::kind`, the encoder and
/// the bounded decoder (which refuses bytes left over).
macro_rules! messages {
    (@with ($d:tt) $(
        $(#[$m:meta])*
        $name:ident = $num:literal $({
            $( $(#[$fm:meta])* $f:ident : $t:ty $(as $c:ty)? ),* $(,)?
        })?
    ),* $(,)?) => {
        /// Hands a message's declaration (name, fields without codecs) to the macro named, after the tokens given: how
        /// `protocol!` builds its enums from names only, so that fields
        /// are listed once, in the table.
        macro_rules! message_fields { $(
            ($name, $d cb:ident, $d ($d args:tt)*) => {
                $d cb! { $d ($d args)* {
                    $name $({ $( $f: $t ),* })?
                } }
            };
        )* }

        /// Message type numbers, as carried in the header.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        #[repr(u16)]
        pub enum Kind { $($name = $num,)* }

        impl Kind {
            pub fn from_u16(v: u16) -> Option<Kind> {
                match v { $($num => Some(Kind::$name),)* _ => None }
            }
            pub fn name(self) -> &'static str {
                match self { $(Kind::$name => stringify!($name),)* }
            }
            /// Every kind, for tests that must cover them all.
            pub const ALL: &'static [Kind] = &[$(Kind::$name,)*];
        }

        /// Every message of the protocol.
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub enum Message { $(
            $(#[$m])*
            $name $({ $( $(#[$fm])* $f: $t, )* })?,
        )* }

        impl Message {
            pub fn kind(&self) -> Kind {
                match self { $( Message::$name { .. } => Kind::$name, )* }
            }

            /// Appends the payload (no header) to `out`.
            pub fn encode_payload(&self, out: &mut Vec<u8>) {
                let w = &mut $crate::wire::fields::Writer(out);
                match self { $(
                    Message::$name { $($($f,)*)? } => { $($(
                        <wire_codec!($($c)?) as $crate::wire::fields::Codec<$t>>::put($f, w);
                    )*)? }
                )* }
            }

            /// Decodes a payload of the given kind. The payload must be
            /// consumed exactly.
            pub fn decode(kind: Kind, payload: &[u8]) -> Result<Message, WireError> {
                let r = &mut $crate::wire::fields::Reader { buf: payload };
                let msg = match kind { $(
                    Kind::$name => Message::$name { $($(
                        $f: <wire_codec!($($c)?) as $crate::wire::fields::Codec<$t>>::get(
                            r,
                            stringify!($f),
                        )?,
                    )*)? },
                )* };
                if !r.buf.is_empty() {
                    return Err(WireError::TrailingBytes {
                        kind: kind.name(),
                        extra: r.buf.len(),
                    });
                }
                Ok(msg)
            }

            /// A message of `kind` with every field set (see `Sample`).
            #[cfg(test)]
            pub(crate) fn sample(kind: Kind) -> Message {
                match kind { $(
                    Kind::$name => Message::$name { $($(
                        $f: $crate::wire::fields::Sample::sample(),
                    )*)? },
                )* }
            }
        }
    };
    ($($table:tt)*) => {
        // `$` handed to the arm above, which writes a macro of its own.
        messages! { @with ($) $($table)* }
    };
}

/// Declares the enum of the messages that may arrive on one side of one
/// kind of connection, from their names: the variants are the table's
/// (same fields; each links to its docs), so a handler matches exactly as it would on
/// [`Message`](super::Message), and the compiler says which messages it
/// must answer and that no other can reach it. Generates the enum, its
/// [`Protocol`](super::Protocol) impl (the conversion from a decoded
/// `Message`, which gives back a message of another protocol untouched)
/// and `From<enum> for Message`.
macro_rules! protocol {
    ($(#[$pm:meta])* $p:ident { $($n:ident),* $(,)? }) => {
        protocol! { @got [$(#[$pm])* $p] [$($n)*] }
    };
    (@got $head:tt [$next:ident $($rest:ident)*] $($acc:tt)*) => {
        message_fields! { $next, protocol, @got $head [$($rest)*] $($acc)* }
    };
    (@got [$(#[$pm:meta])* $p:ident] [] $({
        $name:ident $({ $( $f:ident : $t:ty ),* })?
    })*) => {
        $(#[$pm])*
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub enum $p { $(
            #[doc = concat!("[`Message::", stringify!($name), "`](super::Message::", stringify!($name), ")")]
            $name $({ $( $f: $t, )* })?,
        )* }

        impl $crate::wire::Protocol for $p {
            const NAME: &'static str = stringify!($p);
            const KINDS: &'static [$crate::wire::Kind] = &[$($crate::wire::Kind::$name,)*];

            fn from_message(msg: $crate::wire::Message) -> Result<Self, $crate::wire::Message> {
                match msg {
                    $( $crate::wire::Message::$name $({ $($f,)* })? => Ok($p::$name $({ $($f,)* })?), )*
                    #[allow(unreachable_patterns)]
                    other => Err(other),
                }
            }

            fn kind(&self) -> $crate::wire::Kind {
                match self { $( $p::$name { .. } => $crate::wire::Kind::$name, )* }
            }
        }

        impl From<$p> for $crate::wire::Message {
            fn from(msg: $p) -> Self {
                match msg { $( $p::$name $({ $($f,)* })? => $crate::wire::Message::$name $({ $($f,)* })?, )* }
            }
        }
    };
}
