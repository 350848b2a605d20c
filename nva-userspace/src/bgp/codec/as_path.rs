//! AS_PATH / AS4_PATH wire forms (RFC 4271 §4.3, RFC 6793) and the 2-octet
//! reconstruction: AS_TRANS placeholders in AS_PATH are replaced from AS4_PATH.

use super::attrs::{AsPath, AsSegment};
use super::open::AS_TRANS;
use super::reader::Reader;

/// Decodes an AS_PATH (or AS4_PATH, `four_octet = true`). `None` when malformed
/// (RFC 7606 §7.2): unknown segment type, zero-length segment, or overrun.
pub(super) fn decode(buf: &[u8], four_octet: bool) -> Option<AsPath> {
    let mut r = Reader::new(buf);
    let mut segments = Vec::new();
    while !r.is_empty() {
        let kind = r.u8()?;
        let count = r.u8()? as usize;
        if count == 0 {
            return None;
        }
        let mut asns = Vec::with_capacity(count);
        for _ in 0..count {
            let asn = if four_octet {
                r.u32()?
            } else {
                r.u16()? as u32
            };
            asns.push(asn);
        }
        segments.push(match kind {
            1 => AsSegment::Set(asns),
            2 => AsSegment::Sequence(asns),
            3 => AsSegment::ConfedSequence(asns),
            4 => AsSegment::ConfedSet(asns),
            _ => return None,
        });
    }
    Some(AsPath { segments })
}

/// Encodes a path; segments longer than 255 ASes are split. With `four_octet = false`
/// ASes above 65535 become AS_TRANS.
pub(super) fn encode(path: &AsPath, four_octet: bool, out: &mut Vec<u8>) {
    for seg in &path.segments {
        for chunk in seg.asns().chunks(255) {
            out.push(seg.type_code());
            out.push(chunk.len() as u8);
            for &asn in chunk {
                if four_octet {
                    out.extend_from_slice(&asn.to_be_bytes());
                } else {
                    let a = u16::try_from(asn).unwrap_or(AS_TRANS);
                    out.extend_from_slice(&a.to_be_bytes());
                }
            }
        }
    }
}

/// True when a 2-octet encoding of `path` loses information, so AS4_PATH must be sent.
pub(super) fn needs_as4_path(path: &AsPath) -> bool {
    path.segments
        .iter()
        .filter(|s| !s.is_confed())
        .any(|s| s.asns().iter().any(|&a| a > 0xffff))
}

/// The AS4_PATH to send along a 2-octet AS_PATH: the path without confederation
/// segments (RFC 6793 §4.2.2).
pub(super) fn as4_path_of(path: &AsPath) -> AsPath {
    AsPath {
        segments: path
            .segments
            .iter()
            .filter(|s| !s.is_confed())
            .cloned()
            .collect(),
    }
}

/// RFC 6793 §4.2.3: rebuilds the real path from a 2-octet AS_PATH and an AS4_PATH.
/// If AS_PATH is shorter, AS4_PATH is ignored; otherwise the leading
/// `len(AS_PATH) - len(AS4_PATH)` ASes of AS_PATH are kept and AS4_PATH follows.
pub(super) fn merge_as4(as_path: AsPath, as4_path: AsPath) -> AsPath {
    let n = as_path.path_len();
    let n4 = as4_path.path_len();
    if n < n4 {
        return as_path;
    }
    let mut keep = n - n4;
    let mut segments = Vec::new();
    for seg in as_path.segments {
        if seg.is_confed() {
            // Confederation segments never appear in AS4_PATH: keep those in front.
            segments.push(seg);
            continue;
        }
        if keep == 0 {
            break;
        }
        match seg {
            AsSegment::Sequence(mut v) => {
                v.truncate(keep);
                keep -= v.len();
                segments.push(AsSegment::Sequence(v));
            }
            other => {
                keep -= other.path_len().min(keep);
                segments.push(other);
            }
        }
    }
    let mut rest = as4_path.segments.into_iter();
    // Join the two halves of a sequence cut at the boundary ("65010" + "4200000077"),
    // so the path compares equal to the same path received from a 4-octet speaker.
    if let Some(first) = rest.next() {
        match (segments.last_mut(), first) {
            (Some(AsSegment::Sequence(head)), AsSegment::Sequence(tail))
                if head.len() + tail.len() <= 255 =>
            {
                head.extend(tail)
            }
            (_, first) => segments.push(first),
        }
    }
    segments.extend(rest);
    AsPath { segments }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_replaces_as_trans() {
        let two = AsPath::from_sequence([65001, 23456, 23456, 65003]);
        let four = AsPath::from_sequence([4200000001, 4200000002, 65003]);
        let merged = merge_as4(two, four);
        assert_eq!(
            merged.iter().collect::<Vec<_>>(),
            vec![65001, 4200000001, 4200000002, 65003]
        );
        assert_eq!(merged.path_len(), 4);
    }

    #[test]
    fn shorter_as_path_ignores_as4() {
        let two = AsPath::from_sequence([23456]);
        let four = AsPath::from_sequence([4200000001, 65003]);
        assert_eq!(merge_as4(two.clone(), four), two);
    }

    #[test]
    fn malformed_paths() {
        assert!(decode(&[2, 0], true).is_none()); // zero-length segment
        assert!(decode(&[5, 1, 0, 0, 0, 1], true).is_none()); // unknown type
        assert!(decode(&[2, 2, 0, 0, 0, 1], true).is_none()); // overrun
        assert!(decode(&[2], false).is_none()); // truncated header
        assert_eq!(decode(&[], false), Some(AsPath::default()));
    }
}
