//! A small seeded RNG: reproducible tables, prefixes and destinations, no dependency.
//!
//! Two generators behind one type, so that every stream recorded so far stays the same:
//! SplitMix64 ([`Rng::new`]: the bench's tables and traffic) and xorshift64
//! ([`Rng::xorshift`]: the data-plane structure tests and the BGP bench's tables).

/// A seeded pseudo-random generator (not for anything secret).
pub struct Rng {
    state: u64,
    xorshift: bool,
}

impl Rng {
    /// SplitMix64 from `seed` (any seed, 0 included).
    pub fn new(seed: u64) -> Rng {
        Rng {
            state: seed,
            xorshift: false,
        }
    }

    /// xorshift64 (13, 7, 17) from `seed`, which must not be 0.
    pub fn xorshift(seed: u64) -> Rng {
        assert_ne!(seed, 0, "xorshift64 needs a seed other than 0");
        Rng {
            state: seed,
            xorshift: true,
        }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        if self.xorshift {
            self.state ^= self.state << 13;
            self.state ^= self.state >> 7;
            self.state ^= self.state << 17;
            return self.state;
        }
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in 0..n (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        ((self.next_u64() as u128 * n as u128) >> 64) as u64
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Picks a value from (value, weight) pairs, in proportion to the weights.
    pub fn pick<T: Copy>(&mut self, table: &[(T, u32)]) -> T {
        let total: u32 = table.iter().map(|(_, w)| w).sum();
        let mut r = (self.next_u64() % total as u64) as u32;
        for (v, w) in table {
            if r < *w {
                return *v;
            }
            r -= w;
        }
        table[0].0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_are_the_recorded_ones() {
        // SplitMix64 from 0 (the reference implementation's first outputs).
        let mut s = Rng::new(0);
        assert_eq!(s.next_u64(), 0xe220_a839_7b1d_cdaf);
        assert_eq!(s.next_u64(), 0x6e78_9e6a_a1b9_65f4);
        // xorshift64 from 1: 1 ^ 1<<13 = 0x2001, ^ >>7 = 0x2041, ^ <<17 = 0x4082_2041.
        let mut x = Rng::xorshift(1);
        assert_eq!(x.next_u64(), 0x4082_2041);
    }

    #[test]
    fn below_and_unit_stay_in_range() {
        let mut r = Rng::new(7);
        for _ in 0..1000 {
            assert!(r.below(10) < 10);
            let u = r.unit();
            assert!((0.0..1.0).contains(&u));
        }
        assert_eq!(r.pick(&[(5u8, 0), (6, 1)]), 6);
    }
}
