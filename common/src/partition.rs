//! Which of `n` independent logs a key belongs to, when one keyspace is split into partitions.
//!
//! replog orders the writes of one log; several logs (each its own master, secondaries and
//! broker namespace) can share a broker as partitions of one keyspace. A client routes each
//! write by its key with [`partition_of`]: writes with the same key always go to the same log,
//! so they keep their relative order; writes with different keys may land in different logs,
//! and there is no order between logs.
//!
//! The function must give the same answer in every process, on every platform and in every
//! release, or a key's writes would move between logs. So it is spelled out here (FNV-1a 64,
//! a SplitMix64 finaliser, then a multiply-shift into `0..n`) instead of using `std`'s
//! `DefaultHasher`, whose algorithm is allowed to change between Rust releases. The tests pin
//! its output for a few keys.

/// The FNV-1a 64-bit offset basis.
const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

/// The FNV-1a 64-bit prime.
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// A stable 64-bit hash of `key`: FNV-1a, whose low and high bits are then mixed by
/// SplitMix64's finaliser (FNV alone spreads short, similar keys such as `user-1`, `user-2`
/// poorly over the high bits that [`partition_of`] uses).
pub fn key_hash(key: &[u8]) -> u64 {
    let mut hash = fnv1a(key);
    hash ^= hash >> 30;
    hash = hash.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    hash ^= hash >> 27;
    hash = hash.wrapping_mul(0x94d0_49bb_1331_11eb);
    hash ^ (hash >> 31)
}

/// FNV-1a, 64 bits.
fn fnv1a(key: &[u8]) -> u64 {
    key.iter().fold(FNV_OFFSET, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(FNV_PRIME)
    })
}

/// The partition (`0..n`) that owns `key`: the same for the same key and `n`, everywhere.
///
/// Changing `n` moves most keys to other partitions: the logs of a keyspace are fixed when it
/// is split (see `docs/SCALING.md`).
///
/// # Panics
///
/// When `n` is 0: there is no partition to choose (like dividing by zero).
pub fn partition_of(key: impl AsRef<[u8]>, n: usize) -> usize {
    assert!(
        n > 0,
        "partition_of: a keyspace needs at least one partition"
    );
    // Multiply-shift (Lemire) instead of `%`: uses the hash's high bits, no division.
    ((u128::from(key_hash(key.as_ref())) * n as u128) >> 64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a_matches_its_published_test_vectors() {
        // From the FNV reference test suite (Fowler, Noll, Vo).
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn one_partition_owns_everything() {
        for key in ["", "a", "user-1", "a much longer key with spaces"] {
            assert_eq!(partition_of(key, 1), 0);
        }
    }

    #[test]
    fn the_answer_is_always_in_range() {
        for n in 1..=33 {
            for i in 0..500 {
                assert!(partition_of(format!("key-{i}"), n) < n);
            }
        }
    }

    #[test]
    fn the_answer_is_pinned_across_releases() {
        // Golden values, computed independently (a few lines of Python doing the same
        // arithmetic): if these change, every partitioned deployment would route its keys to
        // other logs. Change the function only under a new name.
        assert_eq!(key_hash(b""), 0xf52a_15e9_a9b5_e89b);
        assert_eq!(key_hash(b"user-1"), 0xc499_b5f8_a721_df58);
        let routed: Vec<usize> = ["user-1", "user-2", "user-3", "order-42", ""]
            .iter()
            .map(|key| partition_of(key, 8))
            .collect();
        assert_eq!(routed, GOLDEN_8, "{routed:?}");
    }

    /// `partition_of(key, 8)` for `user-1`, `user-2`, `user-3`, `order-42` and `""`.
    const GOLDEN_8: [usize; 5] = [6, 2, 3, 2, 7];

    #[test]
    fn the_same_key_goes_to_the_same_partition() {
        for i in 0..1000 {
            let key = format!("k{i}");
            assert_eq!(partition_of(&key, 7), partition_of(key.as_bytes(), 7));
            assert_eq!(partition_of(&key, 7), partition_of(key.clone(), 7));
        }
    }

    #[test]
    fn keys_spread_evenly_enough() {
        // 80,000 similar keys: each partition within 5% of its fair share, for several n.
        // (FNV-1a's high bits without the finaliser miss this by far: up to 26% off at n=16.)
        let keys = 80_000;
        for n in [2, 3, 4, 8, 16] {
            let mut counts = vec![0usize; n];
            for i in 0..keys {
                counts[partition_of(format!("user-{i}"), n)] += 1;
            }
            let fair = keys as f64 / n as f64;
            for (partition, count) in counts.iter().enumerate() {
                let off = (*count as f64 - fair).abs() / fair;
                assert!(
                    off < 0.05,
                    "n={n}: partition {partition} got {count}, fair share {fair:.0}: {counts:?}"
                );
            }
        }
    }

    #[test]
    fn bytes_and_strings_agree() {
        assert_eq!(partition_of("abc", 5), partition_of(b"abc", 5));
        assert_eq!(
            partition_of("abc", 5),
            partition_of(vec![b'a', b'b', b'c'], 5)
        );
    }

    #[test]
    #[should_panic(expected = "at least one partition")]
    fn zero_partitions_is_a_bug() {
        partition_of("key", 0);
    }
}
