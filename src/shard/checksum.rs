//! Checksums of shard contents: the sha256 of a dataset's raw little-endian bytes (stored as the
//! dataset's `sha256` attribute) and the per-record checksum listed in the manifest.
//! Both are defined byte-for-byte in `data-specs/shard-v1.md` so they can be recomputed from h5py.

use super::ShardRecord;
use sha2::{Digest, Sha256};

/// Plain numbers with a fixed little-endian encoding (the bytes a checksum covers).
pub trait LeBytes: Copy {
    fn extend_le(values: &[Self], out: &mut Vec<u8>);
}

macro_rules! impl_le_bytes {
    ($($t:ty),*) => {$(
        impl LeBytes for $t {
            fn extend_le(values: &[Self], out: &mut Vec<u8>) {
                out.reserve(values.len() * std::mem::size_of::<$t>());
                for v in values {
                    out.extend_from_slice(&v.to_le_bytes());
                }
            }
        }
    )*};
}
impl_le_bytes!(u8, u32, i32, i64, u64, f32, f64);

/// Feed `values` to the hasher as little-endian bytes, a block at a time (no full copy).
pub(crate) fn hash_values<T: LeBytes>(hasher: &mut Sha256, values: &[T]) {
    let mut buf = Vec::with_capacity(64 * 1024);
    for block in values.chunks(8192) {
        buf.clear();
        T::extend_le(block, &mut buf);
        hasher.update(&buf);
    }
}

/// A string as u64 little-endian byte length followed by its UTF-8 bytes.
pub(crate) fn hash_str(hasher: &mut Sha256, s: &str) {
    hasher.update((s.len() as u64).to_le_bytes());
    hasher.update(s.as_bytes());
}

fn hash_len(hasher: &mut Sha256, n: usize) {
    hasher.update((n as u64).to_le_bytes());
}

/// sha256 (lower-case hex) of a numeric dataset's values in C order, little-endian.
pub fn dataset_sha256<T: LeBytes>(values: &[T]) -> String {
    let mut h = Sha256::new();
    hash_values(&mut h, values);
    hex::encode(h.finalize())
}

/// sha256 of a string dataset: each element as u64 LE length + UTF-8 bytes, in order.
pub(crate) fn strings_sha256<S: AsRef<str>>(values: &[S]) -> String {
    let mut h = Sha256::new();
    for s in values {
        hash_str(&mut h, s.as_ref());
    }
    hex::encode(h.finalize())
}

/// The record checksum (spec section "Record checksum"). Absent modalities contribute only their
/// mask byte, so the checksum is the same whether computed before writing or after reading back.
pub(crate) fn record_sha256(r: &ShardRecord) -> String {
    let mut h = Sha256::new();
    h.update(b"multimat-record-v1");
    hash_str(&mut h, &r.id);
    h.update(r.presence().map(|p| p as u8));
    if let Some(s) = &r.structure {
        let lattice: Vec<f64> = s.lattice.iter().flatten().copied().collect();
        hash_values(&mut h, &lattice);
        hash_len(&mut h, s.species.len());
        hash_values(&mut h, &s.species);
        let frac: Vec<f64> = s.frac_coords.iter().flatten().copied().collect();
        hash_values(&mut h, &frac);
    }
    if let Some(g) = &r.graphs {
        for list in [&g.local, &g.cgcnn] {
            hash_len(&mut h, list.src.len());
            hash_values(&mut h, &list.src);
            hash_values(&mut h, &list.dst);
            let image: Vec<i32> = list.image.iter().flatten().copied().collect();
            hash_values(&mut h, &image);
            hash_values(&mut h, &list.distance);
        }
        let inf = &g.infinite;
        hash_len(&mut h, inf.src.len());
        hash_values(&mut h, &inf.src);
        hash_values(&mut h, &inf.dst);
        hash_values(&mut h, &inf.coulomb);
        hash_values(&mut h, &inf.london);
        hash_values(&mut h, &inf.pauli);
    }
    if let Some(d) = &r.dos {
        hash_len(&mut h, d.energies.len());
        hash_values(&mut h, &d.energies);
        hash_values(&mut h, &d.densities);
        hash_values(&mut h, &[d.repaired_points as u32]);
    }
    if let Some(c) = &r.charge_density {
        hash_len(&mut h, c.len());
        hash_values(&mut h, c);
    }
    if let Some(t) = &r.text {
        hash_str(&mut h, t);
    }
    if let Some(e) = &r.text_embedding {
        hash_str(&mut h, &e.model);
        hash_len(&mut h, e.vector.len());
        hash_values(&mut h, &e.vector);
    }
    hash_len(&mut h, r.targets.len());
    for (name, values) in &r.targets {
        hash_str(&mut h, name);
        hash_len(&mut h, values.len());
        hash_values(&mut h, values);
    }
    hex::encode(h.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dataset_checksum_is_sha256_of_little_endian_bytes() {
        // sha256 of the 8 bytes 00 00 80 3f 00 00 00 40 (1.0f32, 2.0f32), computed with
        // `python3 -c "import hashlib,struct;print(hashlib.sha256(struct.pack('<2f',1,2)).hexdigest())"`.
        assert_eq!(
            dataset_sha256(&[1.0f32, 2.0]),
            "b9c80b5adeca450753a16950c3cc655d271f7bef7a485bc83f112b72fef21d37"
        );
        let mut bytes = Vec::new();
        f32::extend_le(&[1.0, 2.0], &mut bytes);
        assert_eq!(bytes, [0, 0, 0x80, 0x3f, 0, 0, 0, 0x40]);
        // Blocked hashing equals hashing the whole byte string at once.
        let many: Vec<f64> = (0..20_000).map(|i| i as f64 * 0.5).collect();
        let mut all = Vec::new();
        f64::extend_le(&many, &mut all);
        assert_eq!(dataset_sha256(&many), hex::encode(Sha256::digest(&all)));
    }

    #[test]
    fn record_checksum_changes_with_any_value() {
        let mut r = ShardRecord { id: "mp-1".into(), text: Some("a".into()), ..Default::default() };
        let a = r.checksum();
        r.text = Some("b".into());
        assert_ne!(a, r.checksum());
        r.text = None;
        assert_ne!(a, r.checksum());
        r.targets.insert("k".into(), vec![1.0]);
        let b = r.checksum();
        r.targets.insert("k".into(), vec![1.0 + 1e-12]);
        assert_ne!(b, r.checksum());
    }
}
