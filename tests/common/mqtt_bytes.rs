//! Hand-built MQTT bytes for raw-socket tests, written from the specification rather than
//! with the broker's own codec: the fixed header, Variable Byte Integers and length-prefixed
//! strings.

/// Appends `n` as a Variable Byte Integer (MQTT §1.5.5).
pub fn vbi(mut n: usize, out: &mut Vec<u8>) {
    loop {
        let byte = u8::try_from(n % 128).expect("7 bits");
        n /= 128;
        out.push(if n > 0 { byte | 0x80 } else { byte });
        if n == 0 {
            return;
        }
    }
}

/// A whole packet: fixed header byte, Remaining Length, body.
pub fn pkt(header: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![header];
    vbi(body.len(), &mut out);
    out.extend_from_slice(body);
    out
}

/// A UTF-8 string or binary field: 16-bit length, then the bytes.
pub fn string(s: impl AsRef<[u8]>) -> Vec<u8> {
    let s = s.as_ref();
    let mut out = u16::try_from(s.len())
        .expect("short")
        .to_be_bytes()
        .to_vec();
    out.extend_from_slice(s);
    out
}
