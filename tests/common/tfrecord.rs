//! An independent reader of TensorBoard event files: TFRecord framing with both masked CRCs
//! checked by the `crc32c` crate, and a minimal protobuf decoder for `Event` / `Summary`.

/// Splits TFRecords, checking both masked CRCs of each with the `crc32c` crate.
pub fn records(bytes: &[u8]) -> Vec<&[u8]> {
    let masked = |b: &[u8]| {
        let c = crc32c::crc32c(b);
        c.rotate_right(15).wrapping_add(0xa282_ead8)
    };
    let u32_at = |b: &[u8], at: usize| u32::from_le_bytes(b[at..at + 4].try_into().expect("4"));
    let mut out = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let len_bytes = &bytes[at..at + 8];
        let len = u64::from_le_bytes(len_bytes.try_into().expect("8")) as usize;
        assert_eq!(
            u32_at(bytes, at + 8),
            masked(len_bytes),
            "length CRC at {at}"
        );
        let payload = &bytes[at + 12..at + 12 + len];
        assert_eq!(
            u32_at(bytes, at + 12 + len),
            masked(payload),
            "payload CRC at {at}"
        );
        out.push(payload);
        at += 16 + len;
    }
    out
}

/// A minimal protobuf reader: (field, wire value) pairs.
pub enum Wire<'a> {
    Varint(u64),
    Fixed64([u8; 8]),
    Fixed32([u8; 4]),
    Bytes(&'a [u8]),
}

pub fn fields(mut b: &[u8]) -> Vec<(u64, Wire<'_>)> {
    fn varint(b: &mut &[u8]) -> u64 {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = b[0];
            *b = &b[1..];
            v |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                break;
            }
        }
        v
    }
    let mut out = Vec::new();
    while !b.is_empty() {
        let key = varint(&mut b);
        let wire = match key & 7 {
            0 => Wire::Varint(varint(&mut b)),
            1 => {
                let v = b[..8].try_into().expect("8");
                b = &b[8..];
                Wire::Fixed64(v)
            }
            5 => {
                let v = b[..4].try_into().expect("4");
                b = &b[4..];
                Wire::Fixed32(v)
            }
            2 => {
                let n = varint(&mut b) as usize;
                let v = &b[..n];
                b = &b[n..];
                Wire::Bytes(v)
            }
            other => panic!("wire type {other}"),
        };
        out.push((key >> 3, wire));
    }
    out
}

/// One scalar event.
#[derive(Debug, Clone, PartialEq)]
pub struct ScalarEvent {
    pub wall_time: f64,
    pub step: i64,
    pub tag: String,
    pub value: f32,
}

/// The file-version string of the first record and the scalar events after it; panics on a
/// bad CRC or a field a scalar event does not have.
pub fn read_events(bytes: &[u8]) -> (String, Vec<ScalarEvent>) {
    let recs = records(bytes);
    let mut version = String::new();
    for (n, w) in fields(recs[0]) {
        if let (3, Wire::Bytes(v)) = (n, w) {
            version = String::from_utf8(v.to_vec()).expect("utf8");
        }
    }
    let mut scalars = Vec::new();
    for rec in &recs[1..] {
        let mut e = ScalarEvent {
            wall_time: 0.0,
            step: 0,
            tag: String::new(),
            value: 0.0,
        };
        for (n, w) in fields(rec) {
            match (n, w) {
                (1, Wire::Fixed64(v)) => e.wall_time = f64::from_le_bytes(v),
                (2, Wire::Varint(v)) => e.step = v as i64,
                (5, Wire::Bytes(summary)) => {
                    for (_, value_msg) in fields(summary) {
                        let Wire::Bytes(value_msg) = value_msg else {
                            panic!("value")
                        };
                        for (m, x) in fields(value_msg) {
                            match (m, x) {
                                (1, Wire::Bytes(t)) => {
                                    e.tag = String::from_utf8(t.to_vec()).expect("utf8")
                                }
                                (2, Wire::Fixed32(v)) => e.value = f32::from_le_bytes(v),
                                _ => panic!("unexpected Value field {m}"),
                            }
                        }
                    }
                }
                _ => panic!("unexpected Event field {n}"),
            }
        }
        scalars.push(e);
    }
    (version, scalars)
}
