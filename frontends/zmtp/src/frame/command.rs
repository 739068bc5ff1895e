//! ZMTP commands (frames with the COMMAND flag) and READY/INITIATE metadata.
//!
//! ```text
//! command body   = name-size(1) name data
//! READY          = metadata                          (RFC 23, NULL and PLAIN)
//! INITIATE       = metadata                          (RFC 24, PLAIN)
//! HELLO          = size(1) username size(1) password (RFC 24, PLAIN)
//! WELCOME        = (empty)                           (RFC 24, PLAIN)
//! ERROR          = size(1) reason                    (RFC 23)
//! SUBSCRIBE      = prefix                            (RFC 37, 3.1)
//! CANCEL         = prefix                            (RFC 37, 3.1)
//! PING           = ttl(2, BE, tenths of a second) context(0..16)
//! PONG           = context
//! metadata       = *(name-size(1) name value-size(4, BE) value)
//! ```
//!
//! # Invariants
//! - Parsing never panics and never copies: names, values and bodies are `Bytes` slices of the
//!   frame body.
//! - A command whose data does not parse as its known form (a READY with truncated metadata, a
//!   PING without a TTL, …) decodes as [`Command::Unknown`]; the session decides whether that is
//!   fatal (during the handshake it is, afterwards libzmq ignores unknown commands).
//! - Encoding a command that decodes as a known form yields that form again.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::FrameError;

/// Longest PING context a peer must echo (RFC 37); libzmq truncates longer ones.
pub const PING_CONTEXT_MAX: usize = 16;

/// One metadata property.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Property {
    /// Property name (1..255 octets; compared case-insensitively).
    pub name: Bytes,
    /// Property value (up to 2^31-1 octets).
    pub value: Bytes,
}

/// READY/INITIATE metadata: properties in wire order (duplicates kept).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Metadata(pub Vec<Property>);

impl Metadata {
    /// Appends a property.
    pub fn push(&mut self, name: &'static str, value: impl Into<Bytes>) {
        self.0.push(Property {
            name: Bytes::from_static(name.as_bytes()),
            value: value.into(),
        });
    }

    /// The first value whose name equals `name` ignoring ASCII case (RFC 23: names are
    /// case-insensitive).
    pub fn get(&self, name: &str) -> Option<&Bytes> {
        self.0
            .iter()
            .find(|p| p.name.eq_ignore_ascii_case(name.as_bytes()))
            .map(|p| &p.value)
    }

    fn parse(mut data: Bytes) -> Option<Self> {
        let mut properties = Vec::new();
        while data.has_remaining() {
            let name_len = usize::from(data.get_u8());
            if data.remaining() < name_len {
                return None;
            }
            let name = data.split_to(name_len);
            if data.remaining() < 4 {
                return None;
            }
            let value_len = usize::try_from(data.get_u32()).ok()?;
            if data.remaining() < value_len {
                return None;
            }
            let value = data.split_to(value_len);
            properties.push(Property { name, value });
        }
        Some(Self(properties))
    }

    fn encoded_len(&self) -> usize {
        self.0
            .iter()
            .map(|p| 1 + p.name.len() + 4 + p.value.len())
            .sum()
    }

    fn encode(&self, dst: &mut BytesMut) -> Result<(), FrameError> {
        for property in &self.0 {
            put_short(dst, &property.name)?;
            let len = u32::try_from(property.value.len())
                .ok()
                .filter(|&len| len <= 0x7FFF_FFFF)
                .ok_or(FrameError::FieldTooLong)?;
            dst.put_u32(len);
            dst.put_slice(&property.value);
        }
        Ok(())
    }
}

/// A decoded command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// NULL/PLAIN READY with the sender's metadata.
    Ready(Metadata),
    /// Fatal error with a reason (libzmq sends ZAP status codes: `300`, `400`, `500`).
    Error {
        /// Reason text, at most 255 octets.
        reason: Bytes,
    },
    /// PLAIN HELLO.
    Hello {
        /// Username, at most 255 octets.
        username: Bytes,
        /// Password, at most 255 octets.
        password: Bytes,
    },
    /// PLAIN WELCOME.
    Welcome,
    /// PLAIN INITIATE with the client's metadata.
    Initiate(Metadata),
    /// ZMTP 3.1 SUBSCRIBE to a byte prefix.
    Subscribe(Bytes),
    /// ZMTP 3.1 CANCEL of a byte prefix.
    Cancel(Bytes),
    /// ZMTP 3.1 heartbeat request.
    Ping {
        /// Time to live in tenths of a second (0 = none).
        ttl: u16,
        /// Context the PONG must echo.
        context: Bytes,
    },
    /// ZMTP 3.1 heartbeat reply.
    Pong {
        /// The echoed PING context.
        context: Bytes,
    },
    /// Any other command, or a known name whose data does not parse.
    Unknown {
        /// Command name.
        name: Bytes,
        /// Command data after the name.
        data: Bytes,
    },
}

impl Command {
    /// Parses a command frame body.
    pub fn parse(mut body: Bytes) -> Result<Self, FrameError> {
        if !body.has_remaining() {
            return Err(FrameError::MalformedCommand);
        }
        let name_len = usize::from(body.get_u8());
        if body.remaining() < name_len {
            return Err(FrameError::MalformedCommand);
        }
        let name = body.split_to(name_len);
        Ok(Self::parse_known(&name, body.clone()).unwrap_or(Self::Unknown { name, data: body }))
    }

    fn parse_known(name: &[u8], mut data: Bytes) -> Option<Self> {
        let command = match name {
            b"READY" => Self::Ready(Metadata::parse(data)?),
            b"INITIATE" => Self::Initiate(Metadata::parse(data)?),
            b"ERROR" => Self::Error {
                reason: take_short(&mut data).filter(|_| data.is_empty())?,
            },
            b"HELLO" => {
                let username = take_short(&mut data)?;
                let password = take_short(&mut data).filter(|_| data.is_empty())?;
                Self::Hello { username, password }
            }
            b"WELCOME" if data.is_empty() => Self::Welcome,
            b"SUBSCRIBE" => Self::Subscribe(data),
            b"CANCEL" => Self::Cancel(data),
            b"PING" if data.remaining() >= 2 => Self::Ping {
                ttl: data.get_u16(),
                context: data,
            },
            b"PONG" => Self::Pong { context: data },
            _ => return None,
        };
        Some(command)
    }

    /// The command name as sent on the wire.
    pub fn name(&self) -> &[u8] {
        match self {
            Self::Ready(_) => b"READY",
            Self::Error { .. } => b"ERROR",
            Self::Hello { .. } => b"HELLO",
            Self::Welcome => b"WELCOME",
            Self::Initiate(_) => b"INITIATE",
            Self::Subscribe(_) => b"SUBSCRIBE",
            Self::Cancel(_) => b"CANCEL",
            Self::Ping { .. } => b"PING",
            Self::Pong { .. } => b"PONG",
            Self::Unknown { name, .. } => name,
        }
    }

    /// Length of the command body (name size octet, name, data).
    pub fn body_len(&self) -> usize {
        let data_len = match self {
            Self::Ready(meta) | Self::Initiate(meta) => meta.encoded_len(),
            Self::Error { reason } => 1 + reason.len(),
            Self::Hello { username, password } => 2 + username.len() + password.len(),
            Self::Welcome => 0,
            Self::Subscribe(prefix) | Self::Cancel(prefix) => prefix.len(),
            Self::Ping { context, .. } => 2 + context.len(),
            Self::Pong { context } => context.len(),
            Self::Unknown { data, .. } => data.len(),
        };
        1 + self.name().len() + data_len
    }

    /// Writes the command body (without the frame header).
    pub fn encode_body(&self, dst: &mut BytesMut) -> Result<(), FrameError> {
        put_short(dst, self.name())?;
        match self {
            Self::Ready(meta) | Self::Initiate(meta) => meta.encode(dst)?,
            Self::Error { reason } => put_short(dst, reason)?,
            Self::Hello { username, password } => {
                put_short(dst, username)?;
                put_short(dst, password)?;
            }
            Self::Welcome => {}
            Self::Subscribe(prefix) | Self::Cancel(prefix) => dst.put_slice(prefix),
            Self::Ping { ttl, context } => {
                dst.put_u16(*ttl);
                dst.put_slice(context);
            }
            Self::Pong { context } => dst.put_slice(context),
            Self::Unknown { data, .. } => dst.put_slice(data),
        }
        Ok(())
    }
}

/// Takes a 1-octet-length-prefixed field.
fn take_short(data: &mut Bytes) -> Option<Bytes> {
    if !data.has_remaining() {
        return None;
    }
    let len = usize::from(data.get_u8());
    (data.remaining() >= len).then(|| data.split_to(len))
}

/// Writes a 1-octet-length-prefixed field.
fn put_short(dst: &mut BytesMut, field: &[u8]) -> Result<(), FrameError> {
    let len = u8::try_from(field.len()).map_err(|_| FrameError::FieldTooLong)?;
    dst.put_u8(len);
    dst.put_slice(field);
    Ok(())
}
