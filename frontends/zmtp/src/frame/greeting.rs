//! The 64-octet ZMTP 3.x greeting (RFC 23 §greeting, RFC 37).
//!
//! ```text
//! octet 0      0xFF                      signature start
//! octets 1-8   padding                   not significant, never validated
//! octet 9      0x7F                      signature end (libzmq checks bit 0 only)
//! octet 10     major version             0x03
//! octet 11     minor version             0x00 = 3.0, 0x01 = 3.1
//! octets 12-31 mechanism                 NUL-padded ASCII: NULL, PLAIN, CURVE, ...
//! octet 32     as-server                 0 or 1
//! octets 33-63 filler                    zero, never validated
//! ```
//!
//! # Invariants
//! - [`check_prefix`] rejects a peer as soon as the bytes it has sent prove it is not a ZMTP 3.x
//!   peer (first octet, signature end, major version), before the full 64 octets arrive.
//! - Decoding never reads past the 64 octets and never panics.

use super::FrameError;

/// Length of the whole greeting.
pub const GREETING_LEN: usize = 64;
/// Length of the signature (`0xFF`, padding, `0x7F`).
pub const SIGNATURE_LEN: usize = 10;
/// Length of the mechanism field.
pub const MECHANISM_LEN: usize = 20;

const MAJOR_POS: usize = 10;
const MINOR_POS: usize = 11;
const MECHANISM_POS: usize = 12;
const AS_SERVER_POS: usize = 32;

/// The ZMTP 3 revision spoken on a connection, from the minor version octet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Revision {
    /// ZMTP 3.0 (RFC 23): subscriptions are `0x01`/`0x00` messages, no heartbeats.
    V3_0,
    /// ZMTP 3.1 (RFC 37): SUBSCRIBE/CANCEL and PING/PONG commands.
    V3_1,
}

impl Revision {
    /// The revision a peer speaks given its version octets: minor 0 is 3.0; any higher minor
    /// (or a higher major) is treated as 3.1, as libzmq does.
    pub fn from_version(major: u8, minor: u8) -> Self {
        if major == 3 && minor == 0 {
            Self::V3_0
        } else {
            Self::V3_1
        }
    }

    /// The minor version octet announced for this revision.
    pub fn minor(self) -> u8 {
        match self {
            Self::V3_0 => 0,
            Self::V3_1 => 1,
        }
    }
}

/// A security mechanism name from the greeting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mechanism {
    /// RFC 23 NULL: no security.
    Null,
    /// RFC 24 PLAIN: username and password in clear text.
    Plain,
    /// RFC 26 CURVE.
    Curve,
    /// Any other name, kept as the raw 20 octets.
    Other([u8; MECHANISM_LEN]),
}

impl Mechanism {
    /// The NUL-padded 20-octet field.
    pub fn to_field(self) -> [u8; MECHANISM_LEN] {
        let name: &[u8] = match self {
            Self::Null => b"NULL",
            Self::Plain => b"PLAIN",
            Self::Curve => b"CURVE",
            Self::Other(raw) => return raw,
        };
        let mut field = [0u8; MECHANISM_LEN];
        for (slot, byte) in field.iter_mut().zip(name) {
            *slot = *byte;
        }
        field
    }

    /// Reads the 20-octet field; names are exact and NUL-padded, as libzmq compares them.
    pub fn from_field(field: [u8; MECHANISM_LEN]) -> Self {
        [Self::Null, Self::Plain, Self::Curve]
            .into_iter()
            .find(|known| known.to_field() == field)
            .unwrap_or(Self::Other(field))
    }
}

/// One side's greeting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Greeting {
    /// Major version octet (3 for every peer this codec accepts).
    pub major: u8,
    /// Minor version octet.
    pub minor: u8,
    /// Security mechanism.
    pub mechanism: Mechanism,
    /// The as-server flag.
    pub as_server: bool,
}

impl Greeting {
    /// The greeting the broker sends: ZMTP 3.1 with `mechanism`.
    pub fn broker(mechanism: Mechanism) -> Self {
        Self {
            major: 3,
            minor: 1,
            mechanism,
            as_server: mechanism != Mechanism::Null,
        }
    }

    /// The revision this greeting announces.
    pub fn revision(&self) -> Revision {
        Revision::from_version(self.major, self.minor)
    }

    /// The 64 octets on the wire (padding is the RFC's `0x00…0x01` with the 0x7F end).
    pub fn to_bytes(&self) -> [u8; GREETING_LEN] {
        let mut out = [0u8; GREETING_LEN];
        let mechanism = self.mechanism.to_field();
        let head = [0xFF, 0, 0, 0, 0, 0, 0, 0, 1, 0x7F, self.major, self.minor];
        let as_server = [u8::from(self.as_server)];
        let fields = head.iter().chain(&mechanism).chain(&as_server);
        for (slot, byte) in out.iter_mut().zip(fields) {
            *slot = *byte;
        }
        out
    }

    /// Parses a complete greeting (call [`check_prefix`] first).
    pub fn from_bytes(raw: &[u8; GREETING_LEN]) -> Result<Self, FrameError> {
        check_prefix(raw)?;
        let mut mechanism = [0u8; MECHANISM_LEN];
        for (slot, byte) in mechanism.iter_mut().zip(raw.iter().skip(MECHANISM_POS)) {
            *slot = *byte;
        }
        let octet = |pos: usize| raw.get(pos).copied().unwrap_or(0);
        Ok(Self {
            major: octet(MAJOR_POS),
            minor: octet(MINOR_POS),
            mechanism: Mechanism::from_field(mechanism),
            as_server: octet(AS_SERVER_POS) != 0,
        })
    }
}

/// Checks the octets received so far: the first must be `0xFF`, the tenth must have bit 0 set
/// (libzmq's test for a versioned peer) and the major version must be at least 3.
pub fn check_prefix(seen: &[u8]) -> Result<(), FrameError> {
    if seen.first().is_some_and(|&b| b != 0xFF) {
        return Err(FrameError::BadSignature);
    }
    if seen.get(SIGNATURE_LEN - 1).is_some_and(|&b| b & 0x01 == 0) {
        return Err(FrameError::BadSignature);
    }
    match seen.get(MAJOR_POS) {
        Some(&major) if major < 3 => Err(FrameError::UnsupportedVersion { major }),
        _ => Ok(()),
    }
}
