//! SplitMix64: small, fast, and the same on every machine, so a seed names a workload.

/// A seeded generator. Not for secrets.
#[derive(Clone, Debug)]
pub struct SplitMix(u64);

impl SplitMix {
    pub fn new(seed: u64) -> SplitMix {
        SplitMix(seed)
    }

    /// A seed from the environment variable `var` if it holds a number, else from the clock,
    /// and which one it was, so a failing run can print the seed that repeats it.
    pub fn seed_from_env_or_clock(var: &str) -> u64 {
        std::env::var(var)
            .ok()
            .and_then(|text| text.parse().ok())
            .unwrap_or_else(|| kopek_clock::unix_nanos() as u64 ^ u64::from(std::process::id()))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..bound` (0 when `bound` is 0).
    pub fn below(&mut self, bound: u64) -> u64 {
        self.next_u64() % bound.max(1)
    }

    /// `below` for indexes.
    pub fn index(&mut self, len: usize) -> usize {
        self.below(len as u64) as usize
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// True `percent` times in a hundred.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    /// One of `items` (which must not be empty).
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.index(items.len())]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_names_one_sequence() {
        // The published SplitMix64 sequence from seed 0.
        let mut zero = SplitMix::new(0);
        assert_eq!(zero.next_u64(), 0xE220_A839_7B1D_CDAF);
        assert_eq!(zero.next_u64(), 0x6E78_9E6A_A1B9_65F4);
        let (mut a, mut b) = (SplitMix::new(42), SplitMix::new(42));
        let first: Vec<u64> = (0..100).map(|_| a.next_u64()).collect();
        assert!(first.iter().all(|value| *value == b.next_u64()));
        assert_ne!(first, (0..100).map(|_| SplitMix::new(43).next_u64()).collect::<Vec<_>>());
        let mut range = SplitMix::new(7);
        for _ in 0..10_000 {
            assert!(range.below(10) < 10);
            let unit = range.unit();
            assert!((0.0..1.0).contains(&unit));
        }
        assert_eq!(range.below(0), 0);
    }
}
